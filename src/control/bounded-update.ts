/**
 * A steering update that gives its caller an answer in seconds, and is never applied after the
 * caller was told it was not. The request carries the instant after which the rollout must refuse
 * it (`notAfter`, checked by the workflow's validators against the workflow task's start time);
 * the caller waits that long for the rollout to take it. When it was not taken, only a workflow
 * task that started before the deadline could still take it: a task runs for at most its timeout,
 * so the caller waits for such a task (if Temporal shows one) and then asks once more. Every task
 * after that refuses the request, however late a worker comes back.
 */
import { randomUUID } from 'node:crypto';
import { WorkflowUpdateFailedError, WorkflowUpdateRPCTimeoutOrCancelledError, WorkflowUpdateStage, type Client, type WorkflowHandle, type WorkflowUpdateHandle } from '@temporalio/client';
import type { UpdateDefinition } from '@temporalio/common';
import { EXPIRED_REQUEST, type ControlRequest } from '../../workflows/messages.ts';

/** How long the rollout has to take a request; after that it refuses it. */
export const ACCEPT_WITHIN_MS = 10_000;
/** How long a taken request's outcome is waited for (it records who and why, then acts). */
export const OUTCOME_WITHIN_MS = 15_000;
/** Temporal's default workflow task timeout, when the execution does not say its own. */
const DEFAULT_TASK_TIMEOUT_MS = 10_000;

export type UpdateOutcome<R> =
  /** Taken and done: the handler's answer. */
  | { kind: 'done'; result: R; updateId: string }
  /** Taken (it will be applied), but still running when the caller stopped waiting. */
  | { kind: 'taken'; updateId: string }
  /** Not taken in time, and refused by every workflow task from now on: nothing changed. */
  | { kind: 'not-taken'; updateId: string; waitedMs: number };

export interface BoundedUpdateOptions {
  acceptWithinMs?: number;
  outcomeWithinMs?: number;
}

/** Sends the update with its deadline; a refusal by the rollout is thrown (WorkflowUpdateFailedError). */
export async function boundedUpdate<R, A extends ControlRequest>(
  client: Client,
  handle: WorkflowHandle,
  def: UpdateDefinition<R, [A]>,
  request: Omit<A, 'notAfter'>,
  opts: BoundedUpdateOptions = {},
): Promise<UpdateOutcome<R>> {
  const began = Date.now();
  const updateId = randomUUID();
  const notAfter = began + (opts.acceptWithinMs ?? ACCEPT_WITHIN_MS);
  const args = [{ ...request, notAfter: new Date(notAfter).toISOString() } as A] as [A];

  // The same update id each time: Temporal answers for the update it already has.
  const takenBy = async (until: number): Promise<WorkflowUpdateHandle<R> | undefined> => {
    try {
      return await client.connection.withDeadline(Math.max(until, Date.now() + 500), () => handle.startUpdate(def, { args, updateId, waitForStage: WorkflowUpdateStage.ACCEPTED }));
    } catch (e) {
      if (e instanceof WorkflowUpdateRPCTimeoutOrCancelledError) return undefined;
      throw e;
    }
  };

  let until = notAfter;
  let taken: WorkflowUpdateHandle<R> | undefined;
  try {
    taken = await takenBy(until);
    while (!taken) {
      const later = await inFlightTaskEnds(handle, notAfter);
      if (later === undefined || later <= until) return { kind: 'not-taken', updateId, waitedMs: Date.now() - began };
      until = later;
      taken = await takenBy(until);
    }
  } catch (e) {
    if (isExpiredRefusal(e)) return { kind: 'not-taken', updateId, waitedMs: Date.now() - began };
    throw e;
  }
  try {
    const result = await client.connection.withDeadline(Date.now() + (opts.outcomeWithinMs ?? OUTCOME_WITHIN_MS), () => taken.result());
    return { kind: 'done', result, updateId };
  } catch (e) {
    if (e instanceof WorkflowUpdateRPCTimeoutOrCancelledError) return { kind: 'taken', updateId };
    if (isExpiredRefusal(e)) return { kind: 'not-taken', updateId, waitedMs: Date.now() - began };
    throw e;
  }
}

/**
 * When a workflow task that started by `notAfter` (so may still take the request) must have ended:
 * its start plus the task timeout, and a second for the answer to travel. Undefined when no such
 * task runs.
 */
async function inFlightTaskEnds(handle: WorkflowHandle, notAfter: number): Promise<number | undefined> {
  const d = (await handle.describe()).raw;
  const started = millis(d.pendingWorkflowTask?.startedTime);
  if (started === undefined || started > notAfter) return undefined;
  return started + (millis(d.executionConfig?.defaultWorkflowTaskTimeout) || DEFAULT_TASK_TIMEOUT_MS) + 1000;
}

function millis(t: { seconds?: { toNumber(): number } | number | string | null; nanos?: number | null } | null | undefined): number | undefined {
  if (!t || t.seconds === undefined || t.seconds === null) return undefined;
  const seconds = typeof t.seconds === 'object' ? t.seconds.toNumber() : Number(t.seconds);
  return seconds * 1000 + Math.floor((t.nanos ?? 0) / 1e6);
}

function isExpiredRefusal(e: unknown): boolean {
  return e instanceof WorkflowUpdateFailedError && ((e.cause as Error | undefined)?.message ?? '').startsWith(EXPIRED_REQUEST);
}
