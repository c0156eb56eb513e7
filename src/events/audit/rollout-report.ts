/**
 * A rollout's report, replayed from its stream (not from the projection, so it is exact at the
 * moment it is asked): plan, status, waves, every host's outcome, every decision with who and why,
 * each repair with its hosts' outcomes, the rollback, and the dependency checks the rollout made
 * that did not match.
 */
import { FleetpatchError } from '../../errors.ts';
import type { EventOfType } from '../catalogue.ts';
import { foldRolloutSummary, type RepairSummary, type RolloutSummary, type WaveSummary } from '../projections/rollout-summary.ts';
import type { RecordedEvent } from '../sql/event-row.ts';
import type { EventStore } from '../store.ts';
import { rolloutStream } from '../streams.ts';
import { dependencyChecks, type DependencyCheckRecord } from './checks.ts';

export interface HostOutcome {
  hostId: string;
  wave: string;
  outcome: 'patched' | 'already' | 'failed';
  applied: { name: string; buildId: string }[];
  failure: EventOfType<'HostPatchFinished'>['failure'] | null;
  revertedAfterFailure: boolean;
  /** A failed host's restore to its former stack. */
  restore: EventOfType<'HostPatchFinished'>['restore'] | null;
  at: string;
}

export interface HostRollbackOutcome {
  hostId: string;
  outcome: EventOfType<'HostRollbackFinished'>['outcome'];
  reverted: { name: string; buildId: string }[];
  reapplied: { name: string; buildId: string }[];
  /** Where the host stands after the rollback, and where it should (absent in early records). */
  stackNow: { name: string; buildId: string }[] | null;
  formerStack: { name: string; buildId: string }[] | null;
  reason: string | null;
  at: string;
}

/** One repair: who asked and why, its wave's counts, and every host outcome it recorded. */
export interface RepairReport extends RepairSummary {
  wave: WaveSummary | null;
  /** In the order its hosts finished; a later repair's outcome for a host does not remove it here. */
  hosts: HostOutcome[];
}

export interface RolloutReport {
  summary: RolloutSummary;
  /** The last outcome recorded for each host (a repair's replaces the rollout's), in the order hosts finished. */
  hosts: HostOutcome[];
  repairs: RepairReport[];
  rollbacks: HostRollbackOutcome[];
  /** Dependency checks recorded under this rollout that did not match (mismatch or unreachable). */
  failedChecks: DependencyCheckRecord[];
  checksTotal: number;
}

export async function rolloutReport(store: EventStore, rolloutId: string): Promise<RolloutReport> {
  const events = await store.readStream(rolloutStream(rolloutId));
  if (events.length === 0) throw new FleetpatchError('ROLLOUT_NOT_FOUND', `no events are recorded for rollout ${rolloutId}`, { rolloutId });
  const hosts = new Map<string, HostOutcome>();
  const byWave = new Map<string, HostOutcome[]>();
  const rollbacks: HostRollbackOutcome[] = [];
  for (const { event: e } of events as RecordedEvent[]) {
    if (e.type === 'HostPatchFinished') {
      const outcome: HostOutcome = {
        hostId: e.hostId,
        wave: e.wave,
        outcome: e.outcome,
        applied: e.applied,
        failure: e.failure ?? null,
        revertedAfterFailure: e.revertedAfterFailure ?? false,
        restore: e.restore ?? null,
        at: e.occurredAt,
      };
      hosts.delete(e.hostId);
      hosts.set(e.hostId, outcome);
      const wave = byWave.get(e.wave);
      if (wave) wave.push(outcome);
      else byWave.set(e.wave, [outcome]);
    } else if (e.type === 'HostRollbackFinished') {
      rollbacks.push({
        hostId: e.hostId,
        outcome: e.outcome,
        reverted: e.reverted,
        reapplied: e.reapplied,
        stackNow: e.stackNow ?? null,
        formerStack: e.formerStack ?? null,
        reason: e.reason ?? null,
        at: e.occurredAt,
      });
    }
  }
  const checks = await dependencyChecks(store, { rolloutId });
  const summary = foldRolloutSummary(rolloutId, events);
  return {
    summary,
    hosts: [...hosts.values()],
    repairs: summary.repairs.map((r) => ({ ...r, wave: summary.waves.find((w) => w.name === r.name) ?? null, hosts: byWave.get(r.name) ?? [] })),
    rollbacks,
    failedChecks: checks.filter((c) => c.event.outcome !== 'match'),
    checksTotal: checks.length,
  };
}
