/**
 * A rollout's status from whichever source can give it, saying which and why: Temporal first (the
 * live progress of a running rollout, or the result of an ended one with its later rollbacks and
 * repairs), which needs no PostgreSQL; the event store's record when Temporal cannot answer (it
 * is unreachable, no worker runs the rollout, its workflow ended without a result, or Temporal no
 * longer keeps it). Each source is opened only when it is needed, so one being down never hides
 * what the other knows.
 */
import type { Client } from '@temporalio/client';
import { FleetpatchError, toCatalogued, type ErrorCode } from '../errors.ts';
import { rolloutReport, type RolloutReport } from '../events/audit/rollout-report.ts';
import type { EventStore } from '../events/store.ts';
import type { RolloutProgress } from '../rollout/progress.ts';
import { liveProgress, QUERY_DEADLINE_MS } from './steer.ts';
import { rolloutIdOf } from './rollouts.ts';

export type RolloutStatusView =
  | { source: 'temporal'; progress: RolloutProgress }
  | {
      source: 'store';
      /** Why Temporal could not give the status, as a catalogue code and in words. */
      code: ErrorCode;
      why: string;
      /** What the event store recorded; null when it has recorded nothing for the rollout yet. */
      recorded: RolloutReport | null;
      taskQueue?: string;
    };

export interface StatusSources {
  temporal: () => Promise<Client>;
  store: () => Promise<EventStore>;
}

/** Why Temporal could not give the status; other errors (bugs) are thrown. */
const FALLBACK: readonly ErrorCode[] = ['TEMPORAL_UNAVAILABLE', 'NO_WORKER', 'ROLLOUT_STATE', 'ROLLOUT_NOT_FOUND'];

export async function rolloutStatus(sources: StatusSources, id: string, deadlineMs = QUERY_DEADLINE_MS): Promise<RolloutStatusView> {
  let reason: { code: ErrorCode; why: string; error: FleetpatchError; taskQueue?: string };
  try {
    const live = await liveProgress(await sources.temporal(), id, deadlineMs);
    if ('progress' in live) return { source: 'temporal', progress: live.progress };
    const error = new FleetpatchError('NO_WORKER', live.unavailable, { taskQueue: live.taskQueue });
    reason = { code: 'NO_WORKER', why: live.unavailable, error, taskQueue: live.taskQueue };
  } catch (e) {
    const error = toCatalogued(e);
    if (!FALLBACK.includes(error.code)) throw error;
    const why =
      error.code === 'TEMPORAL_UNAVAILABLE'
        ? `Temporal cannot be reached (${error.message})`
        : error.code === 'ROLLOUT_NOT_FOUND'
          ? `Temporal keeps no workflow for rollout ${rolloutIdOf(id)} (it never started there, or it ended longer ago than the namespace keeps histories)`
          : error.message;
    reason = { code: error.code, why, error };
  }
  let store: EventStore;
  try {
    store = await sources.store();
  } catch (e) {
    throw new FleetpatchError(reason.code, `${reason.error.message}; the event store cannot be read instead: ${toCatalogued(e).message}`, { ...reason.error.details });
  }
  const recorded = await rolloutReport(store, rolloutIdOf(id)).catch((e: unknown) => {
    if (e instanceof FleetpatchError && e.code === 'ROLLOUT_NOT_FOUND') return null;
    throw e;
  });
  // Neither knows it: the rollout does not exist.
  if (!recorded && reason.code === 'ROLLOUT_NOT_FOUND') throw reason.error;
  return { source: 'store', code: reason.code, why: reason.why, recorded, ...(reason.taskQueue ? { taskQueue: reason.taskQueue } : {}) };
}
