/**
 * Restoring a host to the stack it had before a rollout touched it: the pure decision of what to
 * do next, given what the host reports now. The rollback and the per-host failure path both loop
 * "read the live host, take the next step, record it" until this says `done` or `blocked`, so a
 * crash anywhere in between simply resumes from what the host really runs.
 *
 * Xen's rules that shape it (xen-livepatch.md §3):
 * - only the top of the stack can be reverted, so the stack is unwound from the top down to the
 *   longest prefix it shares with the former stack, then rebuilt bottom up;
 * - a payload that was reverted and has writable data (.data/.bss) is refused by APPLY; it must be
 *   unloaded and uploaded again, which needs its bytes: fleetpatch has them for every payload it
 *   ever stored, and for nothing loaded outside it (Xen cannot hand payload bytes back);
 * - a payload's name and build-id must be free to upload it (EEXIST).
 *
 * What restore never does: revert a payload that is neither this rollout's nor part of the former
 * stack (someone else's, applied since: "stack-grew", reported, never forced), or unload a payload
 * the host had loaded before the rollout. Pure: no I/O.
 */
import { short, type StackEntry } from './matching.ts';

/** One loaded payload as the host reports it (a subset of the LIST entry). */
export interface LivePayload {
  name: string;
  buildId: string;
  state: 'CHECKED' | 'APPLIED';
  /** 0, -EAGAIN while an action is pending, or the -errno of the last failed action. */
  rc: number;
  /** Reverted at least once since it was uploaded. */
  reverted: boolean;
  /** Xen's safe_to_reapply: no writable data besides .livepatch.funcs. */
  safeToReapply: boolean;
  /** The build-id it must be applied on. */
  depends: string;
}

export interface LiveHost {
  hypervisorBuildId: string;
  /** Bottom of the stack first. */
  applied: StackEntry[];
  /** Upload order. */
  loaded: LivePayload[];
}

export interface RestoreGoal {
  /** The applied stack before the rollout changed anything, bottom first. */
  formerStack: readonly StackEntry[];
  /** What was loaded before (any state): never unloaded by a restore. */
  formerLoaded: readonly StackEntry[];
  /** Build-ids the rollout brings: these may be reverted and unloaded. */
  ours: ReadonlySet<string>;
  /** Build-ids whose bytes the payload store holds (a reverted payload with .data needs them). */
  storedBytes: ReadonlySet<string>;
}

export type RestoreStep =
  /** An action is pending on the host (rc -EAGAIN): wait for it before deciding anything. */
  | { kind: 'wait'; payload: StackEntry }
  | { kind: 'revert'; payload: StackEntry; why: string }
  | { kind: 'unload'; payload: StackEntry; why: string }
  /** Upload from the payload store, under the name it had. */
  | { kind: 'upload'; payload: StackEntry; why: string }
  /** APPLY on the top of the stack; `depends` is what fleetpatch checks (and records) first. */
  | { kind: 'apply'; payload: StackEntry; depends: string; why: string }
  | { kind: 'done' }
  | { kind: 'blocked'; cause: RestoreBlock; reason: string };

export type RestoreBlock =
  /** Someone else's payload sits above the stack we must unwind: not ours to revert. */
  | 'stack-grew'
  /** A payload of the former stack is gone (or must be reloaded) and fleetpatch never had its bytes. */
  | 'unrecoverable'
  /** Another payload holds the name a former payload must be uploaded under. */
  | 'name-taken';

const EAGAIN = -11;

const ref = (p: StackEntry): string => `${p.name} (${short(p.buildId)})`;
const entry = (p: StackEntry): StackEntry => ({ name: p.name, buildId: p.buildId });

/** Length of the longest common bottom part of two stacks, compared by build-id. */
export function commonPrefix(a: readonly StackEntry[], b: readonly StackEntry[]): number {
  let i = 0;
  while (i < a.length && i < b.length && a[i]!.buildId === b[i]!.buildId) i++;
  return i;
}

/** The next step towards the former stack, or `done`, or why it cannot go on. */
export function nextRestoreStep(live: LiveHost, goal: RestoreGoal): RestoreStep {
  const pending = live.loaded.find((p) => p.rc === EAGAIN);
  if (pending) return { kind: 'wait', payload: entry(pending) };

  const formerIds = new Set(goal.formerStack.map((p) => p.buildId));
  const keep = commonPrefix(live.applied, goal.formerStack);

  // 1. Unwind everything above the shared bottom, top first.
  if (live.applied.length > keep) {
    const top = live.applied[live.applied.length - 1]!;
    if (goal.ours.has(top.buildId)) return { kind: 'revert', payload: entry(top), why: `${ref(top)} is this rollout's payload` };
    if (formerIds.has(top.buildId)) return { kind: 'revert', payload: entry(top), why: `${ref(top)} is out of its former place; it is re-applied in order` };
    const ourBelow = live.applied.slice(keep).find((p) => goal.ours.has(p.buildId));
    return {
      kind: 'blocked',
      cause: 'stack-grew',
      reason: `${ref(top)} is on top of the stack${ourBelow ? `, above this rollout's ${ref(ourBelow)}` : ''}; it is not this rollout's, so it is not reverted (revert it first, then roll back again)`,
    };
  }

  // 2. Rebuild the former stack, bottom up.
  if (keep < goal.formerStack.length) {
    const need = goal.formerStack[keep]!;
    const loaded = live.loaded.find((p) => p.buildId === need.buildId);
    if (loaded) {
      if (loaded.reverted && !loaded.safeToReapply) {
        if (!goal.storedBytes.has(need.buildId)) return unrecoverable(need, 'it has writable data and was reverted, so Xen applies it again only after an unload and a fresh upload');
        return { kind: 'unload', payload: entry(loaded), why: `${ref(need)} has writable data and was reverted: Xen applies it again only after an unload and a fresh upload` };
      }
      return { kind: 'apply', payload: entry(loaded), depends: loaded.depends, why: `${ref(need)} was at position ${keep} of the former stack` };
    }
    const holder = live.loaded.find((p) => p.name === need.name);
    if (holder) {
      const mayUnload = holder.state === 'CHECKED' && (goal.ours.has(holder.buildId) || !goal.formerLoaded.some((f) => f.buildId === holder.buildId));
      if (!mayUnload) {
        return { kind: 'blocked', cause: 'name-taken', reason: `${ref(need)} must be uploaded again, but ${ref(holder)} (${holder.state}) holds its name` };
      }
      return { kind: 'unload', payload: entry(holder), why: `${ref(holder)} holds the name ${need.name} must be uploaded under` };
    }
    if (!goal.storedBytes.has(need.buildId)) return unrecoverable(need, 'it is no longer loaded');
    return { kind: 'upload', payload: entry(need), why: `${ref(need)} was at position ${keep} of the former stack and is no longer loaded` };
  }

  // 3. The stack is back: unload what the rollout left loaded (Xen never unloads by itself).
  const leftover = live.loaded.find((p) => p.state === 'CHECKED' && goal.ours.has(p.buildId) && !goal.formerLoaded.some((f) => f.buildId === p.buildId));
  if (leftover) return { kind: 'unload', payload: entry(leftover), why: `${ref(leftover)} is this rollout's and is no longer applied` };
  return { kind: 'done' };
}

function unrecoverable(need: StackEntry, state: string): RestoreStep {
  return {
    kind: 'blocked',
    cause: 'unrecoverable',
    reason: `${ref(need)} of the former stack cannot be restored: ${state}, and fleetpatch never had its bytes (it was loaded outside fleetpatch; store its file with \`fleetpatch payload store\` to make it restorable)`,
  };
}

/**
 * What may be cleaned up when a restore cannot go on: this rollout's payloads that are loaded and
 * not applied (and were not loaded before), so nothing of ours lingers on a host we could not
 * restore.
 */
export function looseOurs(live: LiveHost, goal: RestoreGoal): StackEntry[] {
  return live.loaded
    .filter((p) => p.state === 'CHECKED' && p.rc !== EAGAIN && goal.ours.has(p.buildId) && !goal.formerLoaded.some((f) => f.buildId === p.buildId))
    .map(entry);
}

/** Whether the host is where the goal wants it: the former stack, nothing of ours left loaded. */
export function isRestored(live: LiveHost, goal: RestoreGoal): boolean {
  return nextRestoreStep(live, goal).kind === 'done';
}

/**
 * Payloads the host carries that fleetpatch could not put back if they were reverted: writable
 * data (so a re-apply needs a fresh upload) and bytes fleetpatch never stored. The preflight
 * reports hosts with such payloads before a REPLACE, which reverts the whole stack.
 */
export function unrestorablePayloads(loaded: readonly { name: string; buildId: string; safeToReapply?: boolean }[], storedBytes: ReadonlySet<string>): StackEntry[] {
  return loaded.filter((p) => p.safeToReapply === false && !storedBytes.has(p.buildId)).map(entry);
}

/** A stack as people read it: `a, b, c` bottom first, or `(empty)`. */
export function describeStack(stack: readonly StackEntry[]): string {
  return stack.length === 0 ? '(empty)' : stack.map((p) => p.name).join(', ');
}
