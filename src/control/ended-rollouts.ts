/**
 * Rollouts whose workflow ended without recording its end. A workflow records its own end whatever
 * stops it (workflows/rollout.ts), except when Temporal terminates it (or its run times out): then
 * no workflow code runs again, and the event store would say "running" for ever. Every worker
 * looks for such rollouts now and then and records the end Temporal knows, in words, under the
 * same idempotency key the workflow itself uses: if both write, the fact is recorded once.
 */
import { WorkflowNotFoundError, type Client } from '@temporalio/client';
import type { temporal } from '@temporalio/proto';
import { SYSTEM_ACTOR } from '../domain/actor.ts';
import { printable } from '../domain/text.ts';
import type { DomainEventInput } from '../events/catalogue.ts';
import { eventIdFromKey } from '../events/event-id.ts';
import { selectUnfinishedRollouts } from '../events/sql/unfinished-rollouts.ts';
import type { EventStore } from '../events/store.ts';
import { rolloutStream } from '../events/streams.ts';
import type { FinalRolloutStatus, RolloutProgress } from '../rollout/progress.ts';
import { workflowIdOf } from './rollouts.ts';

export interface RecordedEnd {
  rolloutId: string;
  status: FinalRolloutStatus;
  reason: string;
}

/** How many unfinished rollouts one sweep looks at (the oldest first). */
const SWEEP_LIMIT = 200;

/** Records the end of every rollout whose workflow has closed without recording it; returns what it recorded. */
export async function recordEndedRollouts(client: Client, store: EventStore): Promise<RecordedEnd[]> {
  const recorded: RecordedEnd[] = [];
  for (const { rolloutId } of await selectUnfinishedRollouts(store.pool, SWEEP_LIMIT)) {
    const end = await endTemporalKnows(client, rolloutId);
    if (!end) continue;
    const event = {
      type: 'RolloutFinished',
      schemaVersion: 1,
      occurredAt: end.at.toISOString(),
      actor: SYSTEM_ACTOR,
      correlation: { rolloutId, workflowId: workflowIdOf(rolloutId) },
      rolloutId,
      status: end.status,
      reason: end.reason,
    } as DomainEventInput;
    // The key the workflow records its own end under (activities/rollout.ts, `finished`).
    await store.append(rolloutStream(rolloutId), [{ eventId: eventIdFromKey(`rollout/${rolloutId}/finished`), event }]);
    recorded.push({ rolloutId, status: end.status, reason: end.reason });
  }
  return recorded;
}

/** How the rollout's workflow ended, when it has, as a final status and a reason in words. */
async function endTemporalKnows(client: Client, rolloutId: string): Promise<{ status: FinalRolloutStatus; reason: string; at: Date } | undefined> {
  const handle = client.workflow.getHandle(workflowIdOf(rolloutId));
  let described;
  try {
    described = await handle.describe();
  } catch (e) {
    // Temporal no longer has it (its retention passed, or another namespace): nothing to learn from.
    if (e instanceof WorkflowNotFoundError) return undefined;
    throw e;
  }
  const at = described.closeTime ?? new Date();
  const leftAsIs = 'hosts it was working on may be mid-change: fleetpatch audit replay shows what they run';
  switch (described.status.name) {
    case 'TERMINATED': {
      const why = await terminationOf(client, workflowIdOf(rolloutId), described.runId);
      return { status: 'aborted', at, reason: `its workflow was terminated in Temporal${why}, so it could not record its own end; ${leftAsIs}` };
    }
    case 'TIMED_OUT':
      return { status: 'failed', at, reason: `its workflow ran past its execution timeout in Temporal, so it could not record its own end; ${leftAsIs}` };
    case 'FAILED':
    case 'CANCELLED':
      // The workflow records these ends itself; one missing means it could not (the store was down throughout).
      return { status: described.status.name === 'FAILED' ? 'failed' : 'aborted', at, reason: `its workflow ended ${described.status.name.toLowerCase()} in Temporal without its end recorded; ${leftAsIs}` };
    case 'COMPLETED': {
      const p = (await handle.result()) as RolloutProgress;
      return { status: p.status as FinalRolloutStatus, at, reason: p.stopReason ?? 'its workflow completed; its end was recorded late' };
    }
    default:
      return undefined; // RUNNING (or continued as new: the new run is running)
  }
}

/** " by <identity>: <reason>", from the run's last history event, when Temporal says. */
async function terminationOf(client: Client, workflowId: string, runId: string): Promise<string> {
  try {
    const r = await client.workflowService.getWorkflowExecutionHistoryReverse({ namespace: client.options.namespace, execution: { workflowId, runId }, maximumPageSize: 1 });
    const attrs: temporal.api.history.v1.IWorkflowExecutionTerminatedEventAttributes | null | undefined = r.history?.events?.[0]?.workflowExecutionTerminatedEventAttributes;
    if (!attrs) return '';
    const who = attrs.identity ? ` by ${printable(attrs.identity.slice(0, 200))}` : '';
    const why = attrs.reason ? `: "${printable(attrs.reason.slice(0, 500))}"` : '';
    return `${who}${why}`;
  } catch {
    return '';
  }
}

/** Sweeps every `everyMs` until stopped; a failed sweep is logged and tried again next time. */
export function sweepEndedRollouts(client: Client, store: EventStore, opts: { everyMs: number; onRecorded?: (end: RecordedEnd) => void; onError?: (e: unknown) => void }): () => Promise<void> {
  let running: Promise<void> | undefined;
  const sweep = () => {
    running ??= recordEndedRollouts(client, store)
      .then((ends) => ends.forEach((e) => opts.onRecorded?.(e)), (e: unknown) => opts.onError?.(e))
      .finally(() => (running = undefined));
  };
  const timer = setInterval(sweep, opts.everyMs);
  timer.unref();
  sweep();
  return async () => {
    clearInterval(timer);
    await running;
  };
}
