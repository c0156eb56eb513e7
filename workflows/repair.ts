/**
 * repairWorkflow: a finished rollout's hosts that lost its payload since (a reboot loses every
 * live patch) are patched again, under the same rollout id, as one more wave ("repair-N"), each
 * host's outcome recorded as the repair's own (HostPatchFinished in wave repair-N).
 * Every host the rollout patched, and every host an earlier repair failed on, is read again; a
 * reboot is recorded (HostRebooted, with the stack it lost) before anything else; the hosts that
 * do not run the payload go through the same
 * batch engine as the rollout: former state kept, dependency checked and recorded, applied,
 * verified, restored on failure. The plan's concurrency and wave budget apply; an exceeded budget
 * stops the repair (nothing is rolled back: what it patched is what the rollout had patched).
 */
import { condition, patched, workflowInfo } from '@temporalio/workflow';
import { batchLanes } from '../src/rollout/batches.ts';
import type { Actor, ResolvedPlan } from '../src/rollout/types.ts';
import { batchOps, bookkeeping } from './activities.ts';

export interface RepairInput {
  rolloutId: string;
  plan: ResolvedPlan;
  requestedBy: Actor;
  reason: string;
  /** The repair's number within the rollout: 1 for the first, and so on. */
  repair: number;
}

export interface RepairSummary {
  repair: string;
  /** Hosts the rollout had patched, and hosts an earlier repair failed on, read again. */
  checked: number;
  /** Those that no longer ran the payload. */
  lost: number;
  patched: number;
  failed: number;
  stopped: 'done' | 'budget' | 'aborted' | 'paused';
  budgetReason?: string;
}

export async function repairWorkflow(input: RepairInput): Promise<RepairSummary> {
  const { rolloutId, plan } = input;
  const name = `repair-${input.repair}`;
  // The repair's hosts run as one more wave after the plan's own.
  const wave = plan.waves.length + input.repair - 1;
  const key = workflowInfo().workflowId;
  const record = (what: string, body: Parameters<typeof bookkeeping.recordRolloutEvent>[0]['body']) =>
    bookkeeping.recordRolloutEvent({ rolloutId, key: `${key}/${what}`, body, actor: input.requestedBy });

  // Activity arguments are not part of the command sequence: recorded histories replay unchanged.
  const { checked, lost } = await batchOps.prepareRepair({ rolloutId, wave, repairsFrom: plan.waves.length, mode: plan.mode, payloads: plan.payloads });
  await record('started', { type: 'RepairStarted', rolloutId, repair: name, reason: input.reason, checked, lost });
  const summary: RepairSummary = { repair: name, checked, lost, patched: 0, failed: 0, stopped: 'done' };
  if (lost > 0) {
    const waves = [...plan.waves.map((w) => ({ name: w.name, planned: 0 })), ...Array.from({ length: input.repair }, (_, i) => ({ name: `repair-${i + 1}`, planned: i + 1 === input.repair ? lost : 0 }))];
    for (;;) {
      const results = await Promise.all(
        batchLanes(plan.concurrency).map((lanes) =>
          batchOps.patchBatch({
            rolloutId,
            wave,
            waveName: name,
            repair: name,
            step: 0,
            lanes,
            mode: plan.mode,
            payloads: plan.payloads,
            ...(plan.verify ? { verify: plan.verify } : {}),
            budget: plan.budget,
            waves,
          }),
        ),
      );
      for (const r of results) {
        summary.patched += r.patched;
        summary.failed += r.failed;
      }
      const budget = results.find((r) => r.stopped === 'budget');
      if (budget) {
        summary.stopped = 'budget';
        if (budget.budgetReason) summary.budgetReason = budget.budgetReason;
        break;
      }
      if ((await bookkeeping.unfinishedHosts({ rolloutId, wave, step: 0 })) === 0) break;
      // Hosts still held by a batch whose worker vanished: their lease lapses, then a batch takes them.
      await condition(() => false, '10s');
    }
    // A batch that was retried reports only what its last attempt finished: the work list knows
    // every host the repair finished, whichever attempt did.
    if (patched('repair-totals-from-work-list')) {
      const counts = await bookkeeping.waveOutcomes({ rolloutId, wave });
      summary.patched = counts.patched;
      summary.failed = counts.failed;
    }
  }
  await record('finished', {
    type: 'RepairFinished',
    rolloutId,
    repair: name,
    patched: summary.patched,
    failed: summary.failed,
    ...(summary.budgetReason ? { reason: `stopped: ${summary.budgetReason}` } : {}),
  });
  return summary;
}
