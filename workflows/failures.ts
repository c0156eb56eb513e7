/**
 * Turning activity failures into HostFailure values the report can show. Activities raise
 * ApplicationFailure with `type` = the catalogue code (EINVAL, HOST_UNREACHABLE, ...) and the
 * reason in words as the message.
 */
import { ActivityFailure, ApplicationFailure } from '@temporalio/workflow';
import type { HostFailure } from '../src/rollout/types.ts';

const UNREACHABLE = new Set(['HOST_UNREACHABLE', 'HOST_TIMEOUT']);

export function hostFailure(stage: HostFailure['stage'], err: unknown): HostFailure {
  let cause: unknown = err;
  if (cause instanceof ActivityFailure && cause.cause) cause = cause.cause;
  if (cause instanceof ApplicationFailure) {
    const code = cause.type ?? 'UNKNOWN';
    return { stage, code, reason: cause.message, unreachable: UNREACHABLE.has(code) };
  }
  if (cause instanceof Error) {
    // Timeouts (start-to-close, heartbeat) after every retry: the host never answered.
    const timedOut = cause.name === 'TimeoutFailure';
    return { stage, code: timedOut ? 'HOST_TIMEOUT' : cause.name, reason: cause.message, unreachable: timedOut };
  }
  return { stage, code: 'UNKNOWN', reason: String(cause), unreachable: false };
}
