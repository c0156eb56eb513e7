/**
 * Patching one host, as pure decisions: the stack the host must end with (fixed once, at the
 * first change), and the next step towards it given what the host reports now. The batch engine
 * loops "read the host, take the next step, record it", so the same code runs a fresh host, a host
 * a killed worker left half done, and a host a second worker re-claimed: the hypervisor's own
 * answer ("already loaded", "already applied") decides, never a remembered plan.
 *
 * Pure: no I/O.
 */
import { short, type Assignment, type PayloadMeta, type StackEntry } from './matching.ts';
import { commonPrefix, type LiveHost } from './restore.ts';

const EAGAIN = -11;

/** What the rollout wants on a host, fixed when it first changes the host. */
export interface PatchGoal {
  mode: 'apply' | 'stack' | 'replace';
  /** The applied stack the host must end with, bottom first. */
  target: StackEntry[];
  /** The rollout's payloads for this host, in the order they are applied. */
  payloads: PayloadMeta[];
}

/** The goal for a host the preflight (or the live state now) assigned builds to. */
export function patchGoal(mode: PatchGoal['mode'], assignment: Extract<Assignment, { kind: 'apply' | 'replace' }>, liveStack: readonly StackEntry[]): PatchGoal {
  if (assignment.kind === 'replace') return { mode: 'replace', target: [ref(assignment.payload)], payloads: [assignment.payload] };
  return { mode, target: [...liveStack.map(ref), ...assignment.payloads.map(ref)], payloads: assignment.payloads };
}

export type PatchStep =
  | { kind: 'wait'; payload: StackEntry }
  /**
   * Upload `payload`; `then` is the step that follows once it is loaded (the upload changes nothing
   * the step depends on), so fleetpatch's check before that APPLY or REPLACE can be made and
   * recorded before the upload, in the same durable write as the upload's intent.
   */
  | { kind: 'upload'; payload: PayloadMeta; then: ApplyStep }
  /** Unload our own payload: it was reverted and has writable data, so only a fresh upload can be applied. */
  | { kind: 'unload'; payload: PayloadMeta }
  | ApplyStep
  /** Every payload is applied where it belongs. */
  | { kind: 'applied' }
  /** The host is not where this rollout can go on from: it changed under us. */
  | { kind: 'changed'; reason: string };

export type ApplyStep =
  /** fleetpatch checks `payload.depends` against `against` (and records it) before the APPLY. */
  | { kind: 'apply'; payload: PayloadMeta; against: StackEntry | null }
  /** REPLACE: fleetpatch checks `payload.depends` against the hypervisor first. */
  | { kind: 'replace'; payload: PayloadMeta };

const ref = (p: StackEntry): StackEntry => ({ name: p.name, buildId: p.buildId });
const named = (p: StackEntry): string => `${p.name} (${short(p.buildId)})`;

export function nextPatchStep(live: LiveHost, goal: PatchGoal): PatchStep {
  const pending = live.loaded.find((p) => p.rc === EAGAIN);
  if (pending) return { kind: 'wait', payload: ref(pending) };

  if (goal.mode === 'replace') {
    const payload = goal.payloads[0]!;
    if (live.applied.length === 1 && live.applied[0]!.buildId === payload.buildId) return { kind: 'applied' };
    return loadThen(live, payload, { kind: 'replace', payload });
  }

  const keep = commonPrefix(live.applied, goal.target);
  if (live.applied.length > keep) {
    const odd = live.applied[keep]!;
    const wanted = goal.target[keep];
    return {
      kind: 'changed',
      reason: `the host's stack changed under the rollout: ${named(odd)} is applied at position ${keep}${wanted ? `, where ${named(wanted)} belongs` : ', above everything the rollout applies'}`,
    };
  }
  if (keep === goal.target.length) return { kind: 'applied' };
  const need = goal.target[keep]!;
  const payload = goal.payloads.find((p) => p.buildId === need.buildId);
  if (!payload) {
    return { kind: 'changed', reason: `the host's stack changed under the rollout: ${named(need)}, which the rollout builds on, is no longer applied` };
  }
  return loadThen(live, payload, { kind: 'apply', payload, against: live.applied[live.applied.length - 1] ?? null });
}

/** Upload (or reload) `payload` if the host lacks a usable copy; otherwise take `then`. */
function loadThen(live: LiveHost, payload: PayloadMeta, then: ApplyStep): PatchStep {
  const loaded = live.loaded.find((p) => p.buildId === payload.buildId);
  if (loaded) {
    if (loaded.reverted && !loaded.safeToReapply) return { kind: 'unload', payload };
    return then;
  }
  const holder = live.loaded.find((p) => p.name === payload.name);
  if (holder) {
    return { kind: 'changed', reason: `a different payload is already loaded as ${payload.name} (${named(holder)}, not ${short(payload.buildId)})` };
  }
  return { kind: 'upload', payload, then };
}
