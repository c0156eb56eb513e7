/**
 * A rollout's summary, folded from its stream: plan, status, waves with their counts (a repair's
 * wave after the plan's), every decision a person or the workflow took (pause, resume, abort,
 * approval: who, when, why), the repairs and the rollback. Compact whatever the fleet size;
 * per-host detail stays in the events. Pure.
 */
import type { Actor, DomainEvent, PayloadRef } from '../catalogue.ts';
import type { Decision } from '../../domain/decision.ts';
import type { RollbackCounts } from '../../domain/rollback-counts.ts';

export type { Decision };
import type { RecordedEvent } from '../sql/event-row.ts';
import { rolloutStream } from '../streams.ts';

export type RolloutSummaryStatus = 'unknown' | 'running' | 'paused' | 'rolling-back' | 'succeeded' | 'failed' | 'rolled-back' | 'rollback-incomplete' | 'aborted';

export interface WaveSummary {
  name: string;
  index: number;
  status: 'pending' | 'running' | 'succeeded' | 'failed' | 'skipped';
  planned: number;
  patched: number;
  already: number;
  failed: number;
  unreachable: number;
  startedAt: string | null;
  finishedAt: string | null;
  reason: string | null;
  /** Present (true) on the wave of a repair ("repair-N"), which runs after the plan's waves. */
  repair?: true;
}

/** One `rollout repair`: who asked, why, what it found; its hosts' counts are its wave's. */
export interface RepairSummary {
  name: string;
  requestedBy: Actor;
  reason: string;
  startedAt: string;
  finishedAt: string | null;
  /** Hosts it read, and those it found without the payload (its wave's planned hosts). */
  checked: number;
  lost: number;
  /** Why it stopped early (an exceeded budget); null when it ran to the end or still runs. */
  stopReason: string | null;
}

/** The rollback as the audit sees it: the shared counts, who asked, when, why, how it ended. */
export interface RollbackSummary extends RollbackCounts {
  status: 'running' | 'finished';
  /** Who asked: the system for an automatic rollback, a person for `rollout rollback`. */
  requestedBy: Actor | null;
  startedAt: string;
  finishedAt: string | null;
  reason: string;
  /** rolled-back only when every host the rollout touched is back; null while it runs. */
  outcome: 'rolled-back' | 'rollback-incomplete' | null;
}

export interface RolloutSummary {
  rolloutId: string;
  planName: string | null;
  mode: 'apply' | 'replace' | 'stack' | null;
  status: RolloutSummaryStatus;
  startedBy: Actor | null;
  startReason: string | null;
  startedAt: string | null;
  finishedAt: string | null;
  /** Why it ended when it did not succeed (abort reason, rollback reason, ...). */
  finishReason: string | null;
  payloads: PayloadRef[];
  waves: WaveSummary[];
  /**
   * What runs where: every host counted once, by its latest outcome (a repair's outcome for a host
   * replaces the one it repaired).
   */
  hosts: { patched: number; already: number; failed: number; unreachable: number };
  decisions: Decision[];
  repairs: RepairSummary[];
  /**
   * The hosts whose latest outcome is a repair's failure (true: unreachable), so that a later
   * repair's outcome for one of them replaces that failure in `hosts`. Any other host a repair
   * takes was counted patched. Few: a repair stops at its failure budget.
   */
  repairFailures: Record<string, boolean>;
  rollback: RollbackSummary | null;
  streamPosition: number;
  updatedAt: string | null;
}

export function emptyRolloutSummary(rolloutId: string): RolloutSummary {
  return {
    rolloutId,
    planName: null,
    mode: null,
    status: 'unknown',
    startedBy: null,
    startReason: null,
    startedAt: null,
    finishedAt: null,
    finishReason: null,
    payloads: [],
    waves: [],
    hosts: { patched: 0, already: 0, failed: 0, unreachable: 0 },
    decisions: [],
    repairs: [],
    repairFailures: {},
    rollback: null,
    streamPosition: 0,
    updatedAt: null,
  };
}

function emptyWave(name: string, index: number): WaveSummary {
  return { name, index, status: 'pending', planned: 0, patched: 0, already: 0, failed: 0, unreachable: 0, startedAt: null, finishedAt: null, reason: null };
}

function withWave(s: RolloutSummary, name: string, index: number | null, change: (w: WaveSummary) => WaveSummary): WaveSummary[] {
  const at = s.waves.findIndex((w) => w.name === name);
  if (at >= 0) return s.waves.map((w, i) => (i === at ? change(w) : w));
  return [...s.waves, change(emptyWave(name, index ?? s.waves.length))];
}

export function evolveRolloutSummary(s: RolloutSummary, recorded: RecordedEvent): RolloutSummary {
  if (recorded.streamId !== rolloutStream(s.rolloutId)) {
    throw new TypeError(`event ${recorded.streamId}@${recorded.streamPosition} is not in the stream of rollout ${s.rolloutId}`);
  }
  return { ...apply(s, recorded.event), streamPosition: recorded.streamPosition, updatedAt: recorded.recordedAt };
}

export function foldRolloutSummary(rolloutId: string, events: Iterable<RecordedEvent>, from: RolloutSummary = emptyRolloutSummary(rolloutId)): RolloutSummary {
  let s = from;
  for (const e of events) s = evolveRolloutSummary(s, e);
  return s;
}

const decision = (e: DomainEvent, action: Decision['action'], reason: string | undefined, wave: string | undefined): Decision => ({
  action,
  by: e.actor,
  at: e.occurredAt,
  reason: reason ?? null,
  wave: wave ?? null,
});

function apply(s: RolloutSummary, e: DomainEvent): RolloutSummary {
  switch (e.type) {
    case 'RolloutStarted':
      return {
        ...s,
        planName: e.planName,
        mode: e.mode,
        status: 'running',
        startedBy: e.actor,
        startReason: e.reason ?? null,
        startedAt: e.occurredAt,
        payloads: e.payloads.map((p) => ({ name: p.name, buildId: p.buildId })),
        waves: e.waves.map((w, i) => s.waves.find((x) => x.name === w.name) ?? emptyWave(w.name, i)),
      };
    case 'PreflightCompleted':
      // Every wave's planned size, also of waves that never start (a rollback stopped the rollout).
      return { ...s, waves: e.waves.reduce((ws, w, i) => withWave({ ...s, waves: ws }, w.name, i, (x) => ({ ...x, planned: w.planned, status: w.planned === 0 ? 'skipped' : x.status })), s.waves) };
    case 'WaveStarted':
      return { ...s, waves: withWave(s, e.wave, e.waveIndex, (w) => ({ ...w, index: e.waveIndex, status: 'running', planned: e.plannedHosts, startedAt: e.occurredAt })) };
    case 'HostPatchFinished': {
      const unreachable = e.failure?.unreachable === true;
      const bump = (c: { patched: number; already: number; failed: number; unreachable: number }) => ({
        ...c,
        [e.outcome]: c[e.outcome] + 1,
        unreachable: c.unreachable + (unreachable ? 1 : 0),
      });
      const waves = withWave(s, e.wave, null, (w) => ({ ...w, ...bump(w) }));
      if (s.waves.find((w) => w.name === e.wave)?.repair !== true) return { ...s, hosts: bump(s.hosts), waves };
      // A repair's host was counted before: patched, or failed in an earlier repair.
      const failures = { ...(s.repairFailures ?? {}) };
      const before = failures[e.hostId];
      const hosts = { ...s.hosts };
      if (before === undefined) hosts.patched = Math.max(0, hosts.patched - 1);
      else {
        hosts.failed = Math.max(0, hosts.failed - 1);
        if (before) hosts.unreachable = Math.max(0, hosts.unreachable - 1);
      }
      if (e.outcome === 'failed') failures[e.hostId] = unreachable;
      else delete failures[e.hostId];
      return { ...s, hosts: bump(hosts), waves, repairFailures: failures };
    }
    case 'RepairStarted':
      return {
        ...s,
        waves: withWave(s, e.repair, null, (w) => ({ ...w, repair: true, status: e.lost === 0 ? 'skipped' : 'running', planned: e.lost, startedAt: e.occurredAt })),
        repairs: [
          ...(s.repairs ?? []).filter((r) => r.name !== e.repair),
          { name: e.repair, requestedBy: e.actor, reason: e.reason, startedAt: e.occurredAt, finishedAt: null, checked: e.checked, lost: e.lost, stopReason: null },
        ],
      };
    case 'RepairFinished':
      // Its own counts are authoritative once it is over (as a wave's WaveFinished).
      return {
        ...s,
        waves: withWave(s, e.repair, null, (w) => ({
          ...w,
          repair: true,
          status: e.reason ? 'failed' : w.planned === 0 ? 'skipped' : 'succeeded',
          patched: e.patched,
          failed: e.failed,
          finishedAt: e.occurredAt,
          reason: e.reason ?? null,
        })),
        repairs: (s.repairs ?? []).map((r) => (r.name === e.repair ? { ...r, finishedAt: e.occurredAt, stopReason: e.reason ?? null } : r)),
      };
    case 'WaveFinished':
      // The workflow's own counts are authoritative once the wave is over.
      return {
        ...s,
        waves: withWave(s, e.wave, e.waveIndex, (w) => ({
          ...w,
          index: e.waveIndex,
          status: e.outcome,
          planned: e.planned,
          patched: e.patched,
          already: e.already,
          failed: e.failed,
          unreachable: e.unreachable,
          finishedAt: e.occurredAt,
          reason: e.reason ?? null,
        })),
      };
    case 'RolloutPaused':
      return { ...s, status: 'paused', decisions: [...s.decisions, decision(e, 'paused', e.reason, e.wave)] };
    case 'RolloutResumed':
      return { ...s, status: 'running', decisions: [...s.decisions, decision(e, 'resumed', e.reason, undefined)] };
    case 'RolloutAborted':
      return { ...s, finishReason: e.reason, decisions: [...s.decisions, decision(e, 'aborted', e.reason, undefined)] };
    case 'ApprovalGiven':
      return { ...s, decisions: [...s.decisions, decision(e, 'approved', e.reason, e.wave)] };
    case 'RollbackStarted':
      return {
        ...s,
        status: 'rolling-back',
        finishReason: s.finishReason ?? e.reason,
        rollback: {
          status: 'running',
          requestedBy: e.actor,
          startedAt: e.occurredAt,
          finishedAt: null,
          reason: e.reason,
          hosts: e.hosts,
          rolledBack: 0,
          stackGrew: 0,
          unrecoverable: 0,
          failed: 0,
          nothingToDo: 0,
          outcome: null,
        },
      };
    case 'HostRollbackFinished': {
      if (!s.rollback) return s;
      const key = ({ 'rolled-back': 'rolledBack', 'stack-grew': 'stackGrew', unrecoverable: 'unrecoverable', failed: 'failed', 'nothing-to-do': 'nothingToDo' } as const)[e.outcome];
      return { ...s, rollback: { ...s.rollback, [key]: s.rollback[key] + 1 } };
    }
    case 'RollbackFinished': {
      const unrecoverable = e.unrecoverable ?? 0;
      const outcome = e.outcome ?? (e.stackGrew + e.failed + unrecoverable > 0 ? 'rollback-incomplete' : 'rolled-back');
      const rollback: RollbackSummary = {
        ...(s.rollback ?? { requestedBy: e.actor, startedAt: e.occurredAt, reason: '(not recorded)', hosts: 0 }),
        status: 'finished',
        finishedAt: e.occurredAt,
        rolledBack: e.rolledBack,
        stackGrew: e.stackGrew,
        unrecoverable,
        failed: e.failed,
        nothingToDo: e.nothingToDo,
        outcome,
      };
      // A rollback a person asked for after the rollout ended decides where the rollout stands;
      // during the rollout, its RolloutFinished does.
      const ended = s.finishedAt !== null;
      return { ...s, rollback, ...(ended ? { status: outcome } : {}) };
    }
    case 'RolloutFinished':
      return { ...s, status: e.status, finishedAt: e.occurredAt, finishReason: e.reason ?? s.finishReason };
    default:
      return s;
  }
}
