import { describe, expect, it } from 'vitest';
import { cumulativeTarget, planWaves, selectHosts, type PlannableHost } from '../../src/rollout/waves.ts';

const fleet: PlannableHost[] = Array.from({ length: 50 }, (_, i) => ({
  id: `host-${String(i).padStart(4, '0')}`,
  labels: { region: ['eu', 'us', 'ap'][i % 3]!, rack: `r${i % 5}`, env: i < 40 ? 'prod' : 'staging' },
}));

describe('wave planning', () => {
  it('treats sizes as cumulative targets, rounding percentages up', () => {
    expect(cumulativeTarget(1, 50)).toBe(1);
    expect(cumulativeTarget('10%', 50)).toBe(5);
    expect(cumulativeTarget('10%', 5)).toBe(1);
    expect(cumulativeTarget(500, 50)).toBe(50);
    const waves = planWaves(fleet, [{ name: 'canary', hosts: 1 }, { name: 'early', hosts: '10%' }, { name: 'rest', hosts: '100%' }], { seed: 'r1', concurrency: 50 });
    expect(waves.map((w) => w.steps.flatMap((s) => s.hostIds).length)).toEqual([1, 4, 45]);
  });

  it('patches every host exactly once across waves', () => {
    const waves = planWaves(fleet, [{ name: 'a', hosts: 3 }, { name: 'b', hosts: '40%' }, { name: 'c', hosts: '100%' }], { seed: 'x', concurrency: 10 });
    const all = waves.flatMap((w) => w.steps.flatMap((s) => s.hostIds));
    expect(all).toHaveLength(50);
    expect(new Set(all).size).toBe(50);
  });

  it('is stable for one seed and differs between seeds', () => {
    const spec = [{ name: 'canary', hosts: 1 }, { name: 'rest', hosts: '100%' }];
    const a = planWaves(fleet, spec, { seed: 'rollout-a', concurrency: 5 });
    expect(planWaves([...fleet].reverse(), spec, { seed: 'rollout-a', concurrency: 5 })).toEqual(a);
    const canaries = new Set(['s1', 's2', 's3', 's4', 's5'].map((seed) => planWaves(fleet, spec, { seed, concurrency: 5 })[0]!.steps[0]!.hostIds[0]));
    expect(canaries.size).toBeGreaterThan(1);
  });

  it('splits a grouped wave into one step per label value, never mixing domains', () => {
    const waves = planWaves(fleet, [{ name: 'canary', hosts: 1 }, { name: 'regions', hosts: '100%', groupBy: 'region' }], { seed: 's', concurrency: 5 });
    const steps = waves[1]!.steps;
    expect(steps.map((s) => s.group)).toEqual(['ap', 'eu', 'us']);
    for (const step of steps) {
      for (const id of step.hostIds) expect(fleet.find((h) => h.id === id)!.labels.region).toBe(step.group);
    }
  });

  it('skips a wave whose target an earlier wave already reached', () => {
    const waves = planWaves(fleet.slice(0, 5), [{ name: 'canary', hosts: 1 }, { name: 'early', hosts: '10%' }, { name: 'rest', hosts: '100%' }], { seed: 's', concurrency: 5 });
    expect(waves[1]!.steps).toEqual([]);
    expect(waves[2]!.steps[0]!.hostIds).toHaveLength(4);
  });

  it('uses the wave concurrency over the plan default', () => {
    const waves = planWaves(fleet, [{ name: 'a', hosts: 1, concurrency: 1 }, { name: 'b', hosts: '100%' }], { seed: 's', concurrency: 20 });
    expect(waves.map((w) => w.concurrency)).toEqual([1, 20]);
  });
});

describe('host selection', () => {
  it('selects by labels and ids together', () => {
    expect(selectHosts(fleet, { labels: { env: 'staging' } }).selected).toHaveLength(10);
    expect(selectHosts(fleet, { labels: { env: 'prod', region: 'eu' } }).selected.every((h) => h.labels.region === 'eu' && h.labels.env === 'prod')).toBe(true);
    const r = selectHosts(fleet, { ids: ['host-0001', 'host-0045', 'host-9999'], labels: { env: 'prod' } });
    expect(r.selected.map((h) => h.id)).toEqual(['host-0001']);
    expect(r.unknownIds).toEqual(['host-9999']);
  });
});

describe('labels named like the properties of every object', () => {
  const hosts: PlannableHost[] = [
    { id: 'host-a', labels: { rack: 'r1' } },
    { id: 'host-b', labels: JSON.parse('{"rack":"r2","__proto__":"p1","constructor":"c1"}') as Record<string, string> },
  ];
  it('group and select by the host\'s own labels only: __proto__, constructor and toString are labels like any other', () => {
    for (const key of ['__proto__', 'constructor', 'toString']) {
      const [wave] = planWaves(hosts, [{ name: 'all', hosts: '100%', groupBy: key }], { seed: 's', concurrency: 5 });
      const groups = Object.fromEntries(wave!.steps.map((s) => [s.group, s.hostIds]));
      expect(groups).toEqual(key === 'toString' ? { '(none)': expect.arrayContaining(['host-a', 'host-b']) } : { '(none)': ['host-a'], [key === '__proto__' ? 'p1' : 'c1']: ['host-b'] });
    }
    expect(selectHosts(hosts, { labels: JSON.parse('{"constructor":"c1"}') as Record<string, string> }).selected.map((h) => h.id)).toEqual(['host-b']);
    expect(selectHosts(hosts, { labels: { toString: 'x' } }).selected).toEqual([]);
  });
});
