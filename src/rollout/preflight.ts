/**
 * The preflight, as a pure function of the plan and the live host states: which hosts the plan
 * selects, which build each gets (with every dependency comparison made), who is already patched,
 * who cannot take any build, and the waves. `fleetpatch rollout plan` prints it; the preflight
 * activity stores it. Reading the hosts is the caller's job.
 */
import { assignPayload, type Assignment, type DependencyCheck, type HostState } from './matching.ts';
import { unrestorablePayloads } from './restore.ts';
import type { PreflightSummary, ResolvedPlan } from './types.ts';
import { planWaves, selectHosts, type PlannableHost, type PlannedWave } from './waves.ts';

export interface FleetHost extends PlannableHost {
  /** The hypervisor build-id the fleet registry lists (the live state is authoritative). */
  buildId: string;
}

/** A host's live state, or why it could not be read. */
export type LiveState = { ok: true; state: HostState } | { ok: false; code: string; reason: string };

export interface TargetHost {
  hostId: string;
  wave: number;
  step: number;
  position: number;
  group: string | null;
  /** What the preflight expects to do; the host workflow re-checks against the live state. */
  assignment: 'apply' | 'replace' | 'unreachable';
  buildIds: string[];
}

export interface PreflightHostReport {
  hostId: string;
  verdict: Assignment['kind'] | 'unreachable';
  reason?: string;
  buildIds: string[];
  checks: DependencyCheck[];
}

export interface PreflightResult {
  summary: PreflightSummary;
  waves: PlannedWave[];
  targets: TargetHost[];
  hosts: PreflightHostReport[];
}

/**
 * One host's verdict from its live state, with every dependency comparison made (what the
 * preflight records for it). `state` undefined: the host was not read.
 */
export function hostReport(plan: Pick<ResolvedPlan, 'mode' | 'payloads'>, hostId: string, state: LiveState | undefined): PreflightHostReport {
  if (!state || !state.ok) return { hostId, verdict: 'unreachable', reason: state && !state.ok ? state.reason : 'not read', buildIds: [], checks: [] };
  const a = assignPayload(plan.mode, plan.payloads, state.state);
  const buildIds = a.kind === 'apply' ? a.payloads.map((p) => p.buildId) : a.kind === 'replace' ? [a.payload.buildId] : a.kind === 'already' ? a.buildIds : [];
  return { hostId, verdict: a.kind, ...(a.kind === 'incompatible' ? { reason: a.reason } : {}), buildIds, checks: a.checks };
}

/**
 * `storedBytes`: build-ids whose bytes the payload store holds. With it, a REPLACE preflight names
 * the hosts whose stack it could not put back after a failure (see `unrestorablePayloads`).
 */
export function preflight(plan: ResolvedPlan, fleet: FleetHost[], live: Map<string, LiveState>, seed: string, storedBytes?: ReadonlySet<string>): PreflightResult {
  const { selected, unknownIds } = selectHosts(fleet, plan.hosts);
  const reports: PreflightHostReport[] = [];
  const plannable: PlannableHost[] = [];
  const assignmentOf = new Map<string, TargetHost['assignment']>();
  const buildIdsOf = new Map<string, string[]>();
  const unrestorable: { hostId: string; payloads: string[] }[] = [];

  for (const host of selected) {
    const state = live.get(host.id);
    const report = hostReport(plan, host.id, state);
    reports.push(report);
    if (report.verdict === 'unreachable' || report.verdict === 'apply' || report.verdict === 'replace') {
      // Unreachable now: planned into its wave anyway; at its turn it is tried again and, if still
      // unreachable, counts as a failure against the budget.
      plannable.push(host);
      assignmentOf.set(host.id, report.verdict);
      buildIdsOf.set(host.id, report.buildIds);
    }
    if (report.verdict === 'replace' && storedBytes && state?.ok) {
      const lost = unrestorablePayloads(state.state.loaded.filter((p) => p.state === 'APPLIED'), storedBytes);
      if (lost.length > 0) unrestorable.push({ hostId: host.id, payloads: lost.map((p) => p.name) });
    }
  }

  const waves = planWaves(plannable, plan.waves, { seed, concurrency: plan.concurrency });
  const targets: TargetHost[] = waves.flatMap((w) =>
    w.steps.flatMap((s, step) =>
      s.hostIds.map((hostId, position) => ({ hostId, wave: w.index, step, position, group: s.group, assignment: assignmentOf.get(hostId)!, buildIds: buildIdsOf.get(hostId) ?? [] })),
    ),
  );
  const count = (v: PreflightHostReport['verdict']) => reports.filter((r) => r.verdict === v).length;
  const summary: PreflightSummary = {
    selected: selected.length,
    targets: targets.length,
    alreadyPatched: count('already'),
    incompatible: count('incompatible'),
    unreachable: count('unreachable'),
    unknownHostIds: unknownIds,
    waves: waves.map((w) => ({ name: w.name, concurrency: w.concurrency, steps: w.steps.map((s) => ({ group: s.group, size: s.hostIds.length })) })),
    incompatibleSamples: reports.filter((r) => r.verdict === 'incompatible').slice(0, 20).map((r) => ({ hostId: r.hostId, reason: r.reason! })),
    ...(storedBytes ? { unrestorable: unrestorable.length, unrestorableSamples: unrestorable.slice(0, 20) } : {}),
  };
  return { summary, waves, targets, hosts: reports };
}
