/**
 * Turning activity failures into HostFailure values the report can show. Activities raise
 * ApplicationFailure with `type` = the catalogue code (EINVAL, HOST_UNREACHABLE, ...) and the
 * reason in words as the message.
 */
import { ActivityFailure, ApplicationFailure } from '@temporalio/workflow';
import { isErrorCode } from '../src/errors.ts';
import type { HostFailure } from '../src/rollout/types.ts';

const UNREACHABLE = new Set(['HOST_UNREACHABLE', 'HOST_TIMEOUT']);

export function hostFailure(stage: HostFailure['stage'], err: unknown): HostFailure {
  let cause: unknown = err;
  if (cause instanceof ActivityFailure && cause.cause) cause = cause.cause;
  if (cause instanceof ApplicationFailure) {
    const type = cause.type ?? '';
    const code = isErrorCode(type) ? type : 'INTERNAL';
    return { stage, code, reason: code === type ? cause.message : `${type || 'an activity failure without a type'}: ${cause.message}`, unreachable: UNREACHABLE.has(code) };
  }
  if (cause instanceof Error) {
    // Timeouts (start-to-close, heartbeat) after every retry: the host never answered.
    const timedOut = cause.name === 'TimeoutFailure';
    return { stage, code: timedOut ? 'HOST_TIMEOUT' : 'INTERNAL', reason: timedOut ? cause.message : `${cause.name}: ${cause.message}`, unreachable: timedOut };
  }
  return { stage, code: 'INTERNAL', reason: String(cause), unreachable: false };
}
