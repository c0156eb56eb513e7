/**
 * Where each payload is: one row per (payload, host) for every loaded payload, with its place in
 * the applied stack. Derived from a host's stack state, so it is exactly as right as that. Pure.
 */
import type { HostStackState } from './host-stack.ts';

export interface PayloadPlacement {
  buildId: string;
  hostId: string;
  name: string;
  state: 'CHECKED' | 'APPLIED';
  /** Position in the applied stack, bottom = 0; null when only loaded. */
  stackIndex: number | null;
  stackHeight: number;
}

export function placementsOf(state: HostStackState): PayloadPlacement[] {
  const seen = new Set<string>();
  const out: PayloadPlacement[] = [];
  const add = (p: Omit<PayloadPlacement, 'hostId' | 'stackHeight'>) => {
    if (seen.has(p.buildId)) return;
    seen.add(p.buildId);
    out.push({ ...p, hostId: state.hostId, stackHeight: state.applied.length });
  };
  for (const p of state.loaded) {
    const index = state.applied.findIndex((a) => a.name === p.name && a.buildId === p.buildId);
    add({ buildId: p.buildId, name: p.name, state: index >= 0 ? 'APPLIED' : p.state, stackIndex: index >= 0 ? index : null });
  }
  // A drift observation can show an applied payload the host does not list as loaded.
  state.applied.forEach((a, index) => add({ buildId: a.buildId, name: a.name, state: 'APPLIED', stackIndex: index }));
  return out;
}
