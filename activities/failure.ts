/**
 * Errors leave activities as ApplicationFailure with `type` = the catalogue code and the reason in
 * words as the message. Whether Temporal retries follows the catalogue: refusals (EINVAL, EEXIST,
 * ENOENT, ...) are non-retryable, transient faults (EAGAIN, EBUSY, unreachable, timeouts) are
 * retried by the activity's retry policy.
 */
import { ApplicationFailure } from '@temporalio/common';
import { isFleetpatchError } from '../src/errors.ts';
import { maskSecrets } from '../src/secrets.ts';

export function toActivityFailure(e: unknown): unknown {
  if (e instanceof ApplicationFailure) return e;
  if (isFleetpatchError(e)) {
    return ApplicationFailure.create({ type: e.code, message: maskSecrets(e.message), nonRetryable: !e.retryable, details: [safeDetails(e.details)] });
  }
  // What travels into Temporal's history (message and stack) never holds a password.
  if (e instanceof Error) {
    e.message = maskSecrets(e.message);
    if (e.stack) e.stack = maskSecrets(e.stack);
  }
  return e;
}

/** Details travel through history: keep them small and free of secrets. */
function safeDetails(details: Readonly<Record<string, unknown>>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(details)) {
    if (/token|authorization|password|secret/i.test(k)) continue;
    out[k] = v;
  }
  return out;
}

/** Wraps every function of an activities object so its errors are classified. */
export function classified<T extends Record<string, (...args: never[]) => Promise<unknown>>>(activities: T): T {
  const out: Record<string, unknown> = {};
  for (const [name, fn] of Object.entries(activities)) {
    out[name] = async (...args: never[]) => {
      try {
        return await fn(...args);
      } catch (e) {
        throw toActivityFailure(e);
      }
    };
  }
  return out as T;
}
