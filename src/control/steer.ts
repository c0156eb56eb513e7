/**
 * Steering a running rollout, for every front end (the CLI and the HTTP API): pause, resume, abort
 * and approve as Temporal updates, a rollback of a finished rollout, and its live progress, each
 * refused in words (not left waiting) when the rollout does not exist, has ended, or no worker
 * runs it. A steering command answers within seconds: applied, refused, or not taken (nothing
 * changed, and the request expires so that no worker applies it later).
 */
import { WorkflowNotFoundError, WorkflowUpdateFailedError, type Client, type WorkflowHandle } from '@temporalio/client';
import { FleetpatchError } from '../errors.ts';
import { requireRecordable } from './decision-text.ts';
import type { RolloutProgress } from '../rollout/progress.ts';
import type { Actor, RolloutInput } from '../rollout/types.ts';
import { abortUpdate, approveUpdate, pauseUpdate, progressQuery, resumeUpdate, type ControlRequest } from '../../workflows/messages.ts';
import type { rolloutWorkflow } from '../../workflows/rollout.ts';
import { rollbackWorkflow, type RollbackSummary } from '../../workflows/rollback.ts';
import { repairWorkflow } from '../../workflows/repair.ts';
import { WorkflowIdReusePolicy, type UpdateDefinition } from '@temporalio/common';
import type { EventStore } from '../events/store.ts';
import { rolloutStream } from '../events/streams.ts';
import { boundedUpdate, type BoundedUpdateOptions } from './bounded-update.ts';
import { withLaterRuns } from './later-runs.ts';
import { isFinal, readProgress, rolloutIdOf, workflowIdOf } from './rollouts.ts';
import { noWorkerWords, taskQueueWorkers } from './workers.ts';

export type SteerAction = 'pause' | 'resume' | 'abort' | 'approve';

export interface SteerRequest {
  by: Actor;
  reason: string;
  /** approve: the wave whose gate is approved. */
  wave?: string;
  /** abort: revert what the rollout applied. */
  rollback?: boolean;
}

/** The rollout's workflow: whether it runs, and on which task queue; ROLLOUT_NOT_FOUND when there is none. */
export async function describeRollout(client: Client, id: string): Promise<{ status: string; taskQueue: string }> {
  try {
    const d = await client.workflow.getHandle(workflowIdOf(id)).describe();
    return { status: d.status.name, taskQueue: d.taskQueue };
  } catch (e) {
    if (e instanceof WorkflowNotFoundError) throw new FleetpatchError('ROLLOUT_NOT_FOUND', `no rollout ${rolloutIdOf(id)} (workflow ${workflowIdOf(id)})`, { rolloutId: rolloutIdOf(id) });
    throw e;
  }
}

/** Refuses, in words, to steer a rollout that does not exist, has ended, or that no worker runs. */
export async function requireSteerable(client: Client, id: string, sub: string): Promise<{ taskQueue: string }> {
  const state = await describeRollout(client, id);
  if (state.status !== 'RUNNING') {
    throw new FleetpatchError('ROLLOUT_STATE', `rollout ${rolloutIdOf(id)} has already ended (${state.status.toLowerCase()}); there is nothing to ${sub}`, { rolloutId: rolloutIdOf(id), status: state.status });
  }
  const workers = await taskQueueWorkers(client, state.taskQueue);
  if (workers.live === 0) {
    throw new FleetpatchError('NO_WORKER', `${noWorkerWords(state.taskQueue, workers)}, so rollout ${rolloutIdOf(id)} cannot take the ${sub} now; start one with \`fleetpatch worker\` (nothing was changed)`, { taskQueue: state.taskQueue });
  }
  return { taskQueue: state.taskQueue };
}

/** Update failures and a rollout that vanished meanwhile, as catalogue errors in words. */
export function steeringError(e: unknown, id: string, sub: string): unknown {
  if (e instanceof WorkflowUpdateFailedError) {
    return new FleetpatchError('ROLLOUT_STATE', `rollout ${rolloutIdOf(id)} refused to ${sub}: ${(e.cause as Error | undefined)?.message ?? e.message}`);
  }
  if (e instanceof WorkflowNotFoundError) {
    // It was there a moment ago: it ended meanwhile.
    return new FleetpatchError('ROLLOUT_STATE', `rollout ${rolloutIdOf(id)} ended before it could ${sub}; see fleetpatch rollout status ${rolloutIdOf(id)}`);
  }
  return e;
}

/**
 * Pause, resume, abort or approve a running rollout; the workflow records who and why. Answers
 * within seconds: the progress once the rollout applied it; ROLLOUT_STATE when it refused;
 * NO_WORKER when no worker took it in time (nothing was changed, and the rollout refuses the
 * request if a worker takes it later). A request taken but still being applied (its recording
 * waits on PostgreSQL) answers with the progress and `waiting` saying so.
 */
export async function steerRollout(client: Client, id: string, action: SteerAction, req: SteerRequest, opts: BoundedUpdateOptions = {}): Promise<RolloutProgress> {
  requireRecordable(`rollout ${action}`, req.by, req.reason, { reasonRequired: true });
  try {
    const { taskQueue } = await requireSteerable(client, id, action);
    const handle = client.workflow.getHandle<typeof rolloutWorkflow>(workflowIdOf(id));
    const base = { by: req.by, reason: req.reason };
    const send = <A extends ControlRequest>(def: UpdateDefinition<RolloutProgress, [A]>, request: Omit<A, 'notAfter'>) => boundedUpdate(client, handle, def, request, opts);
    const outcome =
      action === 'pause'
        ? await send(pauseUpdate, base)
        : action === 'resume'
          ? await send(resumeUpdate, base)
          : action === 'abort'
            ? await send(abortUpdate, { ...base, rollback: Boolean(req.rollback) })
            : await send(approveUpdate, { ...base, ...(req.wave ? { wave: req.wave } : {}) });
    if (outcome.kind === 'done') return outcome.result;
    if (outcome.kind === 'not-taken') {
      throw new FleetpatchError(
        'NO_WORKER',
        `no worker took the ${action} of rollout ${rolloutIdOf(id)} within ${Math.round(outcome.waitedMs / 1000)} s (task queue "${taskQueue}": its worker may have stopped or be overloaded); nothing was changed, and a worker that comes back refuses the request`,
        { taskQueue, updateId: outcome.updateId },
      );
    }
    // Taken: it will be applied. Say so, with the progress as the rollout reports it now.
    const p = await client.connection.withDeadline(Date.now() + 5000, () => handle.query(progressQuery)).catch((e: unknown) => {
      throw new FleetpatchError('TEMPORAL_UNAVAILABLE', `rollout ${rolloutIdOf(id)} took the ${action} and is applying it, but its progress could not be read (${(e as Error).message.split('\n')[0]}); see fleetpatch rollout status ${rolloutIdOf(id)}`, { updateId: outcome.updateId });
    });
    return { ...p, waiting: `the ${action} was taken and is being applied (it is recorded first, and recording waits while PostgreSQL is away); see fleetpatch rollout status ${rolloutIdOf(id)}` };
  } catch (e) {
    throw steeringError(e, id, action);
  }
}

/** The rollout's input, from the first event of its history (Temporal keeps it there). */
export async function rolloutInput(handle: WorkflowHandle<typeof rolloutWorkflow>): Promise<RolloutInput> {
  const history = await handle.fetchHistory();
  const attrs = history.events?.[0]?.workflowExecutionStartedEventAttributes;
  const { defaultPayloadConverter } = await import('@temporalio/common');
  const payload = attrs?.input?.payloads?.[0];
  if (!payload) throw new FleetpatchError('ROLLOUT_NOT_FOUND', 'the rollout workflow has no recorded input');
  return defaultPayloadConverter.fromPayload<RolloutInput>(payload);
}

/**
 * Starts the rollback of a finished rollout: every host it patched back to its former stack. A
 * rollout still running is refused (abort it with rollback instead).
 */
export async function startRollback(client: Client, taskQueue: string, id: string, by: Actor, reason: string): Promise<WorkflowHandle<typeof rollbackWorkflow>> {
  requireRecordable('rollout rollback', by, reason, { reasonRequired: true });
  try {
    const p = await readProgress(client, id);
    if (!isFinal(p)) throw new FleetpatchError('ROLLOUT_STATE', `rollout ${p.rolloutId} is still ${p.status}; use \`fleetpatch rollout abort ${p.rolloutId} --rollback --reason ...\``);
    const input = await rolloutInput(client.workflow.getHandle<typeof rolloutWorkflow>(workflowIdOf(id)));
    return await client.workflow.start(rollbackWorkflow, {
      taskQueue,
      workflowId: `${workflowIdOf(id)}/rollback-by-${by.id}-${Date.now()}`,
      args: [
        {
          rolloutId: rolloutIdOf(id),
          requestedBy: by,
          reason,
          ours: input.plan.payloads.map((x) => x.buildId),
          ...(input.plan.verify ? { verifyCall: input.plan.verify.call } : {}),
          concurrency: input.plan.concurrency,
          ...(input.plan.notifyWebhook ? { webhook: input.plan.notifyWebhook } : {}),
        },
      ],
    });
  } catch (e) {
    throw steeringError(e, id, 'rollback');
  }
}

/**
 * Starts a repair of a finished rollout: the hosts it patched that lost the payload since (a
 * reboot) are patched again under the same rollout id. Repairs are numbered per rollout.
 */
export async function startRepair(client: Client, taskQueue: string, store: EventStore, id: string, by: Actor, reason: string): Promise<WorkflowHandle<typeof repairWorkflow>> {
  requireRecordable('rollout repair', by, reason, { reasonRequired: true });
  try {
    const p = await readProgress(client, id);
    if (!isFinal(p)) throw new FleetpatchError('ROLLOUT_STATE', `rollout ${p.rolloutId} is still ${p.status}; a repair is for a rollout that ended`);
    const input = await rolloutInput(client.workflow.getHandle<typeof rolloutWorkflow>(workflowIdOf(id)));
    const earlier = (await store.readStream(rolloutStream(rolloutIdOf(id)))).filter((e) => e.event.type === 'RepairStarted').length;
    const repair = earlier + 1;
    return await client.workflow.start(repairWorkflow, {
      taskQueue,
      workflowId: `${workflowIdOf(id)}/repair-${repair}`,
      workflowIdReusePolicy: WorkflowIdReusePolicy.REJECT_DUPLICATE,
      args: [{ rolloutId: rolloutIdOf(id), plan: input.plan, requestedBy: by, reason, repair }],
    });
  } catch (e) {
    throw steeringError(e, id, 'repair');
  }
}

export type { RollbackSummary };

/** How long a status read waits for a running rollout to answer its progress query. */
export const QUERY_DEADLINE_MS = 10_000;

/**
 * The latest progress of a rollout, or why it cannot be had now: a running rollout answers
 * through its worker; with no worker polling its task queue (or none answering in time) it says so
 * at once rather than waiting for Temporal's own timeout. A rollout that ended shows what came
 * after it too: a rollback asked for later (its outcome becomes the rollout's status) and its
 * repairs (as waves of their own).
 */
export async function liveProgress(client: Client, id: string, deadlineMs = QUERY_DEADLINE_MS): Promise<{ progress: RolloutProgress } | { unavailable: string; taskQueue: string }> {
  const state = await describeRollout(client, id);
  if (state.status !== 'RUNNING') return { progress: await withLaterRuns(client, await readProgress(client, id), deadlineMs) };
  const workers = await taskQueueWorkers(client, state.taskQueue);
  if (workers.live === 0) {
    return { unavailable: `${noWorkerWords(state.taskQueue, workers)}, so the running rollout cannot answer; start one with \`fleetpatch worker\``, taskQueue: state.taskQueue };
  }
  try {
    return { progress: await client.connection.withDeadline(Date.now() + deadlineMs, () => readProgress(client, id)) };
  } catch (e) {
    if (e instanceof FleetpatchError) throw e;
    return { unavailable: `the rollout did not answer within ${deadlineMs / 1000} s (${(e as Error).message.split('\n')[0]}); is its worker overloaded or stuck?`, taskQueue: state.taskQueue };
  }
}
