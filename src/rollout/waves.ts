/**
 * Wave planning: which hosts go in which wave, and in which order within a wave. Pure.
 *
 * Wave sizes are CUMULATIVE targets over the hosts that need the patch: `hosts: 1` then
 * `hosts: "10%"` then `"100%"` means 1 host, then up to 10% in all, then everything left. A
 * percentage rounds up (10% of 5 hosts is 1 host), a count is capped at the number of hosts. A wave
 * whose target is already reached gets no hosts and is skipped.
 *
 * Hosts are ordered by a hash of (rollout seed, host id): stable for one rollout, spread across
 * racks and regions rather than alphabetical, and different between rollouts so the same hosts
 * are not always the canaries.
 *
 * `groupBy: region` splits a wave into steps, one label value at a time (sorted), so one failure
 * domain is patched and proven within budget before the next one is touched.
 */
import { labelOf } from '../domain/fleet-host.ts';

export interface PlannableHost {
  id: string;
  labels: Record<string, string>;
}

export interface WaveSpec {
  name: string;
  hosts: number | string;
  groupBy?: string | undefined;
  concurrency?: number | undefined;
}

export interface PlannedStep {
  /** The label value of this step when the wave is grouped, else null. */
  group: string | null;
  hostIds: string[];
}

export interface PlannedWave {
  index: number;
  name: string;
  concurrency: number;
  groupBy: string | null;
  /** Cumulative target after this wave. */
  target: number;
  steps: PlannedStep[];
}

export const NO_LABEL = '(none)';

/** 32-bit FNV-1a: a tiny stable hash, good enough to shuffle host order deterministically. */
export function fnv1a(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h >>> 0;
}

export function cumulativeTarget(size: number | string, total: number): number {
  if (typeof size === 'number') return Math.min(size, total);
  const percent = parseFloat(size);
  return Math.min(total, Math.ceil((total * Math.round(percent * 100)) / 10_000));
}

export function planWaves(hosts: PlannableHost[], waves: WaveSpec[], opts: { seed: string; concurrency: number }): PlannedWave[] {
  const ordered = [...hosts].sort((a, b) => fnv1a(`${opts.seed}/${a.id}`) - fnv1a(`${opts.seed}/${b.id}`) || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  let taken = 0;
  return waves.map((wave, index) => {
    const target = Math.max(taken, cumulativeTarget(wave.hosts, ordered.length));
    const chosen = ordered.slice(taken, target);
    taken = target;
    let steps: PlannedStep[];
    if (chosen.length === 0) steps = [];
    else if (!wave.groupBy) steps = [{ group: null, hostIds: chosen.map((h) => h.id) }];
    else {
      const byGroup = new Map<string, string[]>();
      for (const h of chosen) {
        const g = labelOf(h.labels, wave.groupBy) ?? NO_LABEL;
        byGroup.set(g, [...(byGroup.get(g) ?? []), h.id]);
      }
      steps = [...byGroup.keys()].sort().map((group) => ({ group, hostIds: byGroup.get(group)! }));
    }
    return { index, name: wave.name, concurrency: wave.concurrency ?? opts.concurrency, groupBy: wave.groupBy ?? null, target, steps };
  });
}

export interface HostSelector {
  labels?: Record<string, string> | undefined;
  ids?: string[] | undefined;
}

/** The hosts a selector names; ids the fleet does not know are returned separately. */
export function selectHosts<H extends PlannableHost>(fleet: H[], selector: HostSelector): { selected: H[]; unknownIds: string[] } {
  const wantedIds = selector.ids ? new Set(selector.ids) : undefined;
  const labels = Object.entries(selector.labels ?? {});
  const selected = fleet.filter((h) => (!wantedIds || wantedIds.has(h.id)) && labels.every(([k, v]) => labelOf(h.labels, k) === v));
  const known = new Set(fleet.map((h) => h.id));
  return { selected, unknownIds: (selector.ids ?? []).filter((id) => !known.has(id)) };
}
