/**
 * The rollout's durable controls and its live view. Updates (not signals) so the caller learns at
 * once whether the rollout accepted the request ("no approval is pending", "already paused"), and
 * every accepted one is recorded with who and why. The CLI imports these definitions too.
 */
import { defineQuery, defineUpdate } from '@temporalio/workflow';
import type { RolloutProgress } from '../src/rollout/progress.ts';
import type { Actor } from '../src/rollout/types.ts';

export interface ControlRequest {
  by: Actor;
  reason: string;
  /**
   * The instant (ISO 8601) after which the request must not be taken: the caller stops waiting
   * then and tells its user that nothing changed, so a worker that comes back later refuses it
   * instead of applying a command nobody is waiting for. Absent in requests from older clients.
   */
  notAfter?: string;
}

export interface AbortRequest extends ControlRequest {
  /** Revert what the rollout applied, instead of only stopping. */
  rollback?: boolean;
}

export interface ApproveRequest extends ControlRequest {
  /** The wave whose gate is approved; guards against approving the wrong gate by mistake. */
  wave?: string;
}

/** How a refusal for a passed `notAfter` begins, so the caller can tell it from other refusals. */
export const EXPIRED_REQUEST = 'the request expired';

export const pauseUpdate = defineUpdate<RolloutProgress, [ControlRequest]>('pause');
export const resumeUpdate = defineUpdate<RolloutProgress, [ControlRequest]>('resume');
export const abortUpdate = defineUpdate<RolloutProgress, [AbortRequest]>('abort');
export const approveUpdate = defineUpdate<RolloutProgress, [ApproveRequest]>('approve');
export const progressQuery = defineQuery<RolloutProgress>('progress');
