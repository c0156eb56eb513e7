/**
 * What an earlier holder of a host did but never recorded: the batch engine records intent before
 * every hypervisor call and the facts after it, so a holder that died in between (worker killed,
 * PostgreSQL gone, heartbeat lost) leaves the host ahead of its record. Before a re-claimed host is
 * decided on, the facts the record lacks about the payloads this rollout moves (its own, and the
 * former stack a restore puts back) are restated from the live host, in an order Xen could have
 * produced them: reverts top first, unloads, uploads, then applies bottom up (or the REPLACE).
 *
 * Anything else that differs (a reboot, someone else's change) is not ours to explain here: the
 * caller compares again and records the rest as drift. Pure.
 */
import type { StackEntry } from './matching.ts';
import type { LiveHost } from './restore.ts';

export interface RecordedHost {
  loaded: readonly (StackEntry & { state: 'CHECKED' | 'APPLIED' })[];
  applied: readonly StackEntry[];
}

export type LostFact =
  | { kind: 'reverted' | 'unloaded' | 'uploaded' | 'applied'; payload: StackEntry }
  | { kind: 'replaced'; payload: StackEntry; replaced: StackEntry[] };

const ref = (p: StackEntry): StackEntry => ({ name: p.name, buildId: p.buildId });

/** `moved`: build-ids whose facts may be restated (the rollout's payloads, and the former stack). */
export function lostFacts(recorded: RecordedHost, live: LiveHost, moved: ReadonlySet<string>): LostFact[] {
  const out: LostFact[] = [];
  const liveLoaded = new Map(live.loaded.map((p) => [p.buildId, p]));
  const recLoaded = new Map(recorded.loaded.map((p) => [p.buildId, p]));
  const liveApplied = new Set(live.applied.map((p) => p.buildId));
  const recApplied = new Set(recorded.applied.map((p) => p.buildId));

  // A REPLACE that happened: the live stack is one of ours alone, the record has another stack.
  const only = live.applied.length === 1 ? live.applied[0]! : undefined;
  const replaced = only && moved.has(only.buildId) && !recApplied.has(only.buildId) && recorded.applied.length > 0 && recorded.applied.every((p) => !liveApplied.has(p.buildId));

  if (!replaced) {
    for (const p of [...recorded.applied].reverse()) {
      if (moved.has(p.buildId) && !liveApplied.has(p.buildId) && liveLoaded.has(p.buildId)) out.push({ kind: 'reverted', payload: ref(p) });
    }
  }
  for (const p of recorded.loaded) {
    if (moved.has(p.buildId) && !liveLoaded.has(p.buildId)) {
      if (recApplied.has(p.buildId) && !replaced) out.push({ kind: 'reverted', payload: ref(p) });
      out.push({ kind: 'unloaded', payload: ref(p) });
    }
  }
  for (const p of live.loaded) {
    if (moved.has(p.buildId) && !recLoaded.has(p.buildId)) out.push({ kind: 'uploaded', payload: ref(p) });
  }
  if (replaced) {
    out.push({ kind: 'replaced', payload: ref(only), replaced: recorded.applied.map(ref) });
    return out;
  }
  for (const p of live.applied) {
    if (moved.has(p.buildId) && !recApplied.has(p.buildId)) out.push({ kind: 'applied', payload: ref(p) });
  }
  return out;
}
