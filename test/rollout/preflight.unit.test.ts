import { describe, expect, it } from 'vitest';
import { preflight, type FleetHost, type LiveState } from '../../src/rollout/preflight.ts';
import type { PayloadMeta, ResolvedPlan } from '../../src/rollout/types.ts';

const XEN_A = 'aa'.repeat(20);
const XEN_B = 'bb'.repeat(20);
const XEN_C = 'cc'.repeat(20);
const fixA: PayloadMeta = { name: 'fix-a', buildId: '1a'.repeat(20), depends: XEN_A, xenDepends: XEN_A };
const fixB: PayloadMeta = { name: 'fix-b', buildId: '1b'.repeat(20), depends: XEN_B, xenDepends: XEN_B };

const plan: ResolvedPlan = {
  name: 'fix',
  mode: 'apply',
  payloads: [fixA, fixB],
  hosts: { labels: { env: 'prod' } },
  waves: [
    { name: 'canary', hosts: 1 },
    { name: 'rest', hosts: '100%' },
  ],
  concurrency: 10,
  budget: { perWave: { kind: 'count', count: 0 }, total: { kind: 'count', count: 0 } },
  bakeMs: 0,
  approvalAfter: [],
  onFailure: 'rollback',
};

const image = (i: number) => [XEN_A, XEN_B, XEN_C][i % 3]!;
const fleet: FleetHost[] = Array.from({ length: 12 }, (_, i) => ({ id: `host-${String(i).padStart(4, '0')}`, labels: { env: i < 10 ? 'prod' : 'dev' }, buildId: image(i) }));

function live(overrides: Record<string, LiveState> = {}): Map<string, LiveState> {
  const m = new Map<string, LiveState>();
  for (const [i, h] of fleet.entries()) m.set(h.id, { ok: true, state: { hostId: h.id, hypervisorBuildId: image(i), applied: [], loaded: [] } });
  for (const [k, v] of Object.entries(overrides)) m.set(k, v);
  return m;
}

describe('preflight', () => {
  it('gives each selected host its build, reports hosts no build fits, and changes nothing', () => {
    const r = preflight(plan, fleet, live(), 'seed');
    expect(r.summary.selected).toBe(10);
    // hosts 2, 5, 8 run hypervisor C: no build for it
    expect(r.summary.incompatible).toBe(3);
    expect(r.summary.incompatibleSamples.map((s) => s.hostId).sort()).toEqual(['host-0002', 'host-0005', 'host-0008']);
    expect(r.summary.targets).toBe(7);
    for (const t of r.targets) {
      const i = Number(t.hostId.slice(5));
      expect(t.buildIds).toEqual([image(i) === XEN_A ? fixA.buildId : fixB.buildId]);
    }
    expect(r.summary.waves.map((w) => w.steps.reduce((n, s) => n + s.size, 0))).toEqual([1, 6]);
  });

  it('keeps every dependency comparison, with what was expected and found', () => {
    const r = preflight(plan, fleet, live(), 'seed');
    const c = r.hosts.find((h) => h.hostId === 'host-0002')!;
    expect(c.verdict).toBe('incompatible');
    expect(c.checks).toHaveLength(2);
    expect(c.checks.every((k) => k.outcome === 'mismatch' && k.found === XEN_C)).toBe(true);
  });

  it('plans unreachable hosts into waves so they count against the budget at their turn', () => {
    const r = preflight(plan, fleet, live({ 'host-0000': { ok: false, code: 'HOST_UNREACHABLE', reason: 'connection refused' } }), 'seed');
    expect(r.summary.unreachable).toBe(1);
    expect(r.targets.find((t) => t.hostId === 'host-0000')!.assignment).toBe('unreachable');
  });

  it('leaves out hosts that already run the payload', () => {
    const l = live();
    l.set('host-0000', { ok: true, state: { hostId: 'host-0000', hypervisorBuildId: XEN_A, applied: [{ name: 'fix-a', buildId: fixA.buildId }], loaded: [] } });
    const r = preflight(plan, fleet, l, 'seed');
    expect(r.summary.alreadyPatched).toBe(1);
    expect(r.targets.some((t) => t.hostId === 'host-0000')).toBe(false);
  });

  it('reports ids the fleet does not have', () => {
    const r = preflight({ ...plan, hosts: { ids: ['host-0001', 'host-7777'] } }, fleet, live(), 'seed');
    expect(r.summary.unknownHostIds).toEqual(['host-7777']);
  });
});
