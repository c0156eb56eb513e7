/**
 * rollbackWorkflow: bring every host a rollout touched back to the stack it had before, and say
 * plainly which hosts could not be. Each host is restored by the same restoreHost activity the
 * per-host failure path uses (revert ours top first, reload what Xen will not re-apply, re-apply
 * the former stack bottom up, unload what is ours, and check that the verified function returns
 * what it returned before). A host whose stack has grown above ours with someone else's payload is
 * reported ("stack-grew"), never forced: reverting under another payload is what Xen refuses and
 * what an operator must decide.
 *
 * The rollback records its own start and end on the rollout's stream, with who asked and why, so
 * an automatic rollback and one a person requests later read the same in the audit. Its work list
 * (rollback_targets) lives in PostgreSQL; batches claim hosts from it like the rollout's do, so
 * the history stays a few events long whatever the fleet size.
 */
import { CancellationScope, ContinueAsNew, condition, defineQuery, patched, proxyLocalActivities, setHandler, workflowInfo } from '@temporalio/workflow';
import type { Activities } from '../activities/index.ts';
import { batchLanes } from '../src/rollout/batches.ts';
import type { Actor } from '../src/rollout/types.ts';
import type { RollbackCounts, RollbackProblem } from '../src/domain/rollback-counts.ts';
import { batchOps, bookkeeping } from './activities.ts';

export interface RollbackInput {
  rolloutId: string;
  /** Who decided to roll back (the system for an automatic rollback) and why. */
  requestedBy: Actor;
  reason: string;
  /** Build-ids the rollout brought: the only payloads the rollback reverts and unloads. */
  ours: string[];
  /** The plan's verify function: it must return what it returned before the rollout. */
  verifyCall?: string;
  concurrency: number;
  /** The plan's webhook, told about the rollback's start and end. */
  webhook?: string;
}

export type { RollbackProblem };

export interface RollbackSummary extends RollbackCounts {
  /** rolled-back only when every touched host is back to its former stack. */
  outcome: 'rolled-back' | 'rollback-incomplete';
  /** Every host that is not back (up to 200), with where it stands, where it should, and why. */
  problems: RollbackProblem[];
}

export const rollbackProgressQuery = defineQuery<RollbackSummary>('rollbackProgress');

export const PROBLEM_SAMPLE = 200;

/** Recording how a rollback ended after an error: a bounded number of tries, never a loop. */
const lastWord = proxyLocalActivities<Activities>({
  startToCloseTimeout: '1m',
  retry: { initialInterval: '1s', backoffCoefficient: 2, maximumInterval: '30s', maximumAttempts: 7 },
});

export async function rollbackWorkflow(input: RollbackInput): Promise<RollbackSummary> {
  const rollbackId = workflowInfo().workflowId;
  const record = (what: string, body: Parameters<typeof bookkeeping.recordRolloutEvent>[0]['body'], ops: Pick<Activities, 'recordRolloutEvent'> = bookkeeping) =>
    ops.recordRolloutEvent({ rolloutId: input.rolloutId, key: `${rollbackId}/${what}`, body, actor: input.requestedBy, ...(input.webhook ? { webhook: input.webhook } : {}) });
  const summary: RollbackSummary = { hosts: 0, rolledBack: 0, nothingToDo: 0, stackGrew: 0, unrecoverable: 0, failed: 0, outcome: 'rolled-back', problems: [] };
  const finished = () =>
    ({
      type: 'RollbackFinished',
      rolloutId: input.rolloutId,
      rolledBack: summary.rolledBack,
      stackGrew: summary.stackGrew,
      failed: summary.failed,
      nothingToDo: summary.nothingToDo,
      unrecoverable: summary.unrecoverable,
      outcome: summary.outcome,
    }) as const;
  let startRecorded = false;
  /** Set once every host has an outcome: an error after that is only in recording the end. */
  let decided = false;

  try {
    return await restoreEveryHost();
  } catch (err) {
    // A rollback recorded as started is recorded as ended (incomplete, unless every host already had
    // its outcome), whatever stopped it; then the error stands. The store never keeps a rollout
    // "rolling back" for ever. A history recorded before this path existed replays as it failed.
    if (err instanceof ContinueAsNew || !startRecorded || !patched('rollback-end-recorded-after-error')) throw err;
    if (!decided) summary.outcome = 'rollback-incomplete';
    await CancellationScope.nonCancellable(() => record('rollback-finished', finished(), lastWord)).catch(() => undefined);
    throw err;
  }

  async function restoreEveryHost(): Promise<RollbackSummary> {
    // The work list: every host the rollout touched (kept in PostgreSQL, not in this history).
    const hosts = await bookkeeping.prepareRollback({ rollbackId, rolloutId: input.rolloutId });
    summary.hosts = hosts;
    setHandler(rollbackProgressQuery, () => summary);
    await record('rollback-started', { type: 'RollbackStarted', rolloutId: input.rolloutId, reason: input.reason, hosts });
    startRecorded = true;

    for (;;) {
      const batch = { rollbackId, rolloutId: input.rolloutId, ours: input.ours, ...(input.verifyCall ? { verifyCall: input.verifyCall } : {}) };
      const results = await Promise.allSettled(batchLanes(input.concurrency).map((lanes) => batchOps.rollbackBatch({ ...batch, lanes })));
      const tally = await bookkeeping.rollbackTally({ rollbackId, problems: PROBLEM_SAMPLE });
      Object.assign(summary, {
        rolledBack: tally.byOutcome['rolled-back'] ?? 0,
        nothingToDo: tally.byOutcome['nothing-to-do'] ?? 0,
        stackGrew: tally.byOutcome['stack-grew'] ?? 0,
        unrecoverable: tally.byOutcome['unrecoverable'] ?? 0,
        failed: tally.byOutcome['failed'] ?? 0,
        problems: tally.problems as RollbackProblem[],
      });
      if (tally.unfinished === 0) break;
      // Hosts a vanished batch still holds (its lease lapses), or a batch that gave up after its
      // retries: the hosts stay on the work list, and the rollback goes on until each has an outcome.
      const gaveUp = results.some((r) => r.status === 'rejected');
      await condition(() => false, gaveUp ? '30s' : '10s');
    }
    summary.outcome = summary.stackGrew + summary.unrecoverable + summary.failed === 0 ? 'rolled-back' : 'rollback-incomplete';
    decided = true;
    await record('rollback-finished', finished());
    return summary;
  }
}
