/**
 * The compact state a rollout workflow keeps and carries across continue-as-new, and the pure
 * rules that update it. It stays small whatever the fleet size: counters per wave and a bounded
 * sample of failures; per-host detail lives in the event store.
 */
import { budgetExceeded, describeBudget } from './budget.ts';
import { describeStack } from './restore.ts';
import type { z } from 'zod';
import type { DecisionSchema, RepairProgressSchema, RollbackProgressSchema, RolloutProgressSchema, RolloutStatusSchema, WaveProgressSchema } from './progress-schema.ts';
import type { Actor, HostPatchResult, PreflightSummary, ResolvedPlan, StackEntry } from './types.ts';

export type RolloutStatus = z.infer<typeof RolloutStatusSchema>;

export type FinalRolloutStatus = 'succeeded' | 'failed' | 'rolled-back' | 'rollback-incomplete' | 'aborted';
export const FINAL_STATUSES: readonly RolloutStatus[] = ['succeeded', 'failed', 'rolled-back', 'rollback-incomplete', 'aborted'];

export type WaveProgress = z.infer<typeof WaveProgressSchema>;

export type Decision = z.infer<typeof DecisionSchema>;

/** The rollout's live view (the progress query's answer, and the workflow's result). */
export type RolloutProgress = z.infer<typeof RolloutProgressSchema>;

/** The rollback's counts and the hosts it could not bring back (a bounded sample). */
export type RollbackProgress = z.infer<typeof RollbackProgressSchema>;

/** A repair of an ended rollout, as `rollout status` shows it. */
export type RepairProgress = z.infer<typeof RepairProgressSchema>;

/** At most this many hosts a rollback could not restore are kept in the progress. */
export const ROLLBACK_PROBLEM_SAMPLE = 50;

export function rollbackProgress(
  s: { hosts: number; rolledBack: number; nothingToDo: number; stackGrew: number; unrecoverable: number; failed: number; problems: RollbackProgress['problems'] },
  by: Actor,
  reason: string,
): RollbackProgress {
  return {
    status: 'finished',
    requestedBy: by,
    reason,
    hosts: s.hosts,
    rolledBack: s.rolledBack,
    nothingToDo: s.nothingToDo,
    stackGrew: s.stackGrew,
    unrecoverable: s.unrecoverable,
    failed: s.failed,
    problems: s.problems.slice(0, ROLLBACK_PROBLEM_SAMPLE),
  };
}

/** At most this many failures are kept with their reasons; the event store has all of them. */
export const FAILURE_SAMPLE = 50;

export function initialProgress(rolloutId: string, plan: ResolvedPlan, startedAt: string): RolloutProgress {
  return {
    rolloutId,
    planName: plan.name,
    status: 'preflight',
    startedAt,
    waves: plan.waves.map((w) => ({ name: w.name, status: 'pending', planned: 0, done: 0, patched: 0, already: 0, failed: 0, unreachable: 0 })),
    cursor: { wave: 0, step: 0, offset: 0 },
    failures: [],
    decisions: [],
    generation: 0,
  };
}

export function applyPreflight(p: RolloutProgress, preflight: PreflightSummary): RolloutProgress {
  return {
    ...p,
    preflight,
    status: 'running',
    waves: p.waves.map((w, i) => {
      const planned = (preflight.waves[i]?.steps ?? []).reduce((n, s) => n + s.size, 0);
      return { ...w, planned, status: planned === 0 ? 'skipped' : 'pending' };
    }),
  };
}

/**
 * Takes the work list's counts (the truth, shared by every batch) into the live view: per wave,
 * hosts finished by outcome, and the first failures with their reasons and restores (mutates).
 */
export function applyCounts(
  p: RolloutProgress,
  waves: readonly { wave: number; done: number; patched: number; already: number; failed: number; unreachable: number }[],
  failures: readonly { hostId: string; wave: number; failure: { stage: string; code: string; reason: string }; restore: { outcome: string; stackNow: StackEntry[]; formerStack: StackEntry[]; reason?: string } | null }[],
): void {
  for (const c of waves) {
    const w = p.waves[c.wave];
    if (!w) continue;
    Object.assign(w, { done: c.done, patched: c.patched, already: c.already, failed: c.failed, unreachable: c.unreachable });
  }
  p.failures = failures.slice(0, FAILURE_SAMPLE).map((f) => ({
    hostId: f.hostId,
    wave: p.waves[f.wave]?.name ?? String(f.wave),
    stage: f.failure.stage,
    code: f.failure.code,
    reason: f.failure.reason,
    ...(f.restore ? { restore: describeRestore(f.restore) } : {}),
  }));
}

/** Folds one host's result into its wave's counters (mutates: called on the workflow's own copy). */
export function recordHostResult(p: RolloutProgress, waveIndex: number, r: HostPatchResult): void {
  const w = p.waves[waveIndex]!;
  w.done++;
  if (r.outcome === 'patched') w.patched++;
  else if (r.outcome === 'already') w.already++;
  else {
    w.failed++;
    if (r.failure?.unreachable) w.unreachable++;
    if (p.failures.length < FAILURE_SAMPLE) {
      p.failures.push({
        hostId: r.hostId,
        wave: w.name,
        stage: r.failure?.stage ?? 'unknown',
        code: r.failure?.code ?? 'UNKNOWN',
        reason: r.failure?.reason ?? 'no reason given',
        ...(r.restore ? { restore: describeRestore(r.restore) } : {}),
      });
    }
  }
}

/** A failed host's restore in a few words: where it stands now. */
export function describeRestore(r: { outcome: string; stackNow: StackEntry[]; formerStack: StackEntry[]; reason?: string }): string {
  if (r.outcome === 'restored') return 'restored to its former stack';
  if (r.outcome === 'nothing-to-do') return 'nothing of the rollout was left on it';
  return `NOT restored (${r.outcome}): stack now ${describeStack(r.stackNow)}, should be ${describeStack(r.formerStack)}${r.reason ? `: ${r.reason}` : ''}`;
}

export function totals(p: RolloutProgress): { planned: number; done: number; patched: number; already: number; failed: number; unreachable: number } {
  return p.waves.reduce(
    (t, w) => ({ planned: t.planned + w.planned, done: t.done + w.done, patched: t.patched + w.patched, already: t.already + w.already, failed: t.failed + w.failed, unreachable: t.unreachable + w.unreachable }),
    { planned: 0, done: 0, patched: 0, already: 0, failed: 0, unreachable: 0 },
  );
}

/**
 * Whether a budget is exceeded, and why in words. The wave budget is measured against the wave's
 * planned size, the total budget against all planned hosts, so the verdict can be reached (and
 * the wave stopped) as soon as one failure too many happens, without waiting for the wave to end.
 *
 * A person who resumes a rollout that paused on its budget accepts the failures so far
 * (`p.accepted`): it pauses again at the next failure beyond them, not at the next host.
 */
export function budgetVerdict(p: RolloutProgress, plan: Pick<ResolvedPlan, 'budget'>, waveIndex: number): { exceeded: false } | { exceeded: true; reason: string } {
  return budgetVerdictOf(plan.budget, p.waves, waveIndex, p.accepted);
}

/**
 * The same verdict from plain counts: what a batch computes after every failed host (with the
 * counts of the work list, shared by every batch of the rollout) to stop claiming hosts at once.
 */
export function budgetVerdictOf(
  budget: ResolvedPlan['budget'],
  waves: readonly { name: string; planned: number; failed: number }[],
  waveIndex: number,
  accepted: RolloutProgress['accepted'],
): { exceeded: false } | { exceeded: true; reason: string } {
  const w = waves[waveIndex]!;
  const acceptedInWave = accepted?.wave === waveIndex ? accepted.waveFailures : 0;
  if (budgetExceeded(budget.perWave, w.planned, w.failed) && w.failed > acceptedInWave) {
    return { exceeded: true, reason: `wave "${w.name}" failed on ${w.failed} of ${w.planned} hosts, over its budget (${describeBudget(budget.perWave, w.planned)})` };
  }
  const planned = waves.reduce((n, x) => n + x.planned, 0);
  const failed = waves.reduce((n, x) => n + x.failed, 0);
  if (budgetExceeded(budget.total, planned, failed) && failed > (accepted?.totalFailures ?? 0)) {
    return { exceeded: true, reason: `the rollout failed on ${failed} hosts in all, over its total budget (${describeBudget(budget.total, planned)})` };
  }
  return { exceeded: false };
}

/** Records that a person resumed past an exceeded budget: the failures so far are accepted. */
export function acceptFailures(p: RolloutProgress, waveIndex: number): void {
  p.accepted = { wave: waveIndex, waveFailures: p.waves[waveIndex]!.failed, totalFailures: totals(p).failed };
}

/**
 * What ran for a rollout after it ended, as read from Temporal: a rollback a person asked for
 * (`rollout rollback`) or a repair (`rollout repair`). `state` is `ended` when the workflow stopped
 * without a result (failed, terminated, timed out), with Temporal's words in `endedAs`.
 */
export type LaterRun =
  | {
      kind: 'rollback';
      startedAt: string;
      requestedBy: Actor;
      reason: string;
      state: 'running' | 'finished' | 'ended';
      /** Its counts (the result once finished, the live query while running; absent when it could not be read). */
      counts?: { hosts: number; rolledBack: number; nothingToDo: number; stackGrew: number; unrecoverable: number; failed: number; problems: RollbackProgress['problems'] };
      endedAs?: string;
    }
  | {
      kind: 'repair';
      name: string;
      startedAt: string;
      requestedBy: Actor;
      reason: string;
      state: 'running' | 'finished' | 'ended';
      result?: { checked: number; lost: number; patched: number; failed: number; budgetReason?: string };
      endedAs?: string;
    };

/**
 * The rollout's progress with what ran after it ended folded in, oldest first: the latest
 * rollback decides the status (`rolling-back` while it runs, then its outcome; a rollback that
 * stopped on an error leaves the rollout `rollback-incomplete`), and every repair is listed with
 * its counts. The rollout's own waves and totals stay what the rollout did.
 */
export function foldLaterRuns(p: RolloutProgress, runs: readonly LaterRun[]): RolloutProgress {
  let out: RolloutProgress = { ...p };
  for (const run of [...runs].sort((a, b) => (a.startedAt < b.startedAt ? -1 : a.startedAt > b.startedAt ? 1 : 0))) {
    if (run.kind === 'repair') {
      const r = run.result;
      const repair: RepairProgress = {
        name: run.name,
        status: run.state === 'ended' ? 'failed' : run.state,
        requestedBy: run.requestedBy,
        reason: run.reason,
        startedAt: run.startedAt,
        checked: r?.checked ?? 0,
        lost: r?.lost ?? 0,
        patched: r?.patched ?? 0,
        failed: r?.failed ?? 0,
        ...(run.endedAs ? { stopReason: run.endedAs } : r?.budgetReason ? { stopReason: r.budgetReason } : {}),
      };
      out = { ...out, repairs: [...(out.repairs ?? []), repair] };
      continue;
    }
    const c = run.counts ?? { hosts: 0, rolledBack: 0, nothingToDo: 0, stackGrew: 0, unrecoverable: 0, failed: 0, problems: [] };
    const rollback: RollbackProgress = {
      ...rollbackProgress(c, run.requestedBy, run.reason),
      status: run.state === 'ended' ? 'failed' : run.state,
      startedAt: run.startedAt,
      ...(run.endedAs ? { error: run.endedAs } : {}),
    };
    const notBack = c.stackGrew + c.unrecoverable + c.failed;
    const asked = `rolled back after it ended, asked by ${run.requestedBy.id}: ${run.reason}`;
    if (run.state === 'running') out = { ...out, status: 'rolling-back', rollback, stopReason: asked };
    else if (run.state === 'ended') out = { ...out, status: 'rollback-incomplete', rollback, stopReason: `${asked}; the rollback stopped before every host had an outcome: ${run.endedAs ?? 'its workflow did not complete'}` };
    else {
      const words = notBack === 0 ? asked : `${asked}; the rollback could not restore ${notBack} of ${c.hosts} host(s): ${c.problems.slice(0, 3).map((x) => `${x.hostId} (${x.outcome})`).join(', ')}${notBack > 3 ? ', ...' : ''}`;
      out = { ...out, status: notBack === 0 ? 'rolled-back' : 'rollback-incomplete', rollback, stopReason: words };
    }
  }
  return out;
}
