/**
 * The rollout summary's account of repairs (src/events/projections/rollout-summary.ts): each
 * repair is a wave of its own after the plan's, with its hosts' outcomes; the hosts' totals count
 * every host once, by its latest outcome; what the repair recorded as its own totals wins for its
 * wave once it is over, as a plan wave's WaveFinished does.
 */
import { describe, expect, it } from 'vitest';
import type { DomainEventInput } from '../../src/events/catalogue.ts';
import { foldRolloutSummary } from '../../src/events/projections/rollout-summary.ts';
import { ALICE, HELLO, XEN, asRecorded, clock } from '../events/support/events.ts';

const now = clock();
const base = (actor: { kind: 'user' | 'workflow'; id: string } = { kind: 'workflow', id: 'rollout/r1' }) => ({
  schemaVersion: 1 as const,
  occurredAt: now(),
  actor,
  correlation: { rolloutId: 'r1' },
  rolloutId: 'r1',
});
const finished = (hostId: string, wave: string, outcome: 'patched' | 'failed', unreachable = false): DomainEventInput => ({
  ...base(),
  type: 'HostPatchFinished',
  hostId,
  wave,
  outcome,
  applied: outcome === 'patched' ? [HELLO] : [],
  ...(outcome === 'failed' ? { failure: { stage: unreachable ? 'read' : 'apply', code: unreachable ? 'HOST_UNREACHABLE' : 'EINVAL', reason: 'no', unreachable } } : {}),
});
const rollout: DomainEventInput[] = [
  { ...base(ALICE), type: 'RolloutStarted', planName: 'hello', mode: 'apply', payloads: [{ ...HELLO, depends: XEN, xenDepends: XEN }], waves: [{ name: 'all' }] },
  { ...base(), type: 'WaveStarted', wave: 'all', waveIndex: 0, plannedHosts: 4 },
  ...['h1', 'h2', 'h3', 'h4'].map((h) => finished(h, 'all', 'patched')),
  { ...base(), type: 'WaveFinished', wave: 'all', waveIndex: 0, outcome: 'succeeded', planned: 4, patched: 4, already: 0, failed: 0, unreachable: 0 },
  { ...base(), type: 'RolloutFinished', status: 'succeeded' },
];
const repair = (name: string, lost: string[], outcomes: DomainEventInput[], totals: { patched: number; failed: number; reason?: string }): DomainEventInput[] => [
  { ...base(ALICE), type: 'RepairStarted', repair: name, reason: `${name} please`, checked: 4, lost: lost.length },
  ...outcomes,
  { ...base(ALICE), type: 'RepairFinished', repair: name, ...totals },
];
const fold = (events: DomainEventInput[]) => foldRolloutSummary('r1', asRecorded('rollout-r1', events));

describe('a rollout summary with repairs', () => {
  it('shows a repair as its own wave, and a host a repair failed on as failed', () => {
    const s = fold([...rollout, ...repair('repair-1', ['h2', 'h3'], [finished('h2', 'repair-1', 'patched'), finished('h3', 'repair-1', 'failed')], { patched: 1, failed: 1 })]);
    expect(s.hosts).toEqual({ patched: 3, already: 0, failed: 1, unreachable: 0 });
    expect(s.waves.map((w) => [w.name, w.status, w.planned, w.patched, w.failed, w.repair ?? false])).toEqual([
      ['all', 'succeeded', 4, 4, 0, false],
      ['repair-1', 'succeeded', 2, 1, 1, true],
    ]);
    expect(s.repairs).toEqual([expect.objectContaining({ name: 'repair-1', requestedBy: ALICE, reason: 'repair-1 please', checked: 4, lost: 2, stopReason: null, finishedAt: expect.any(String) })]);
    expect(s.repairFailures).toEqual({ h3: false });
    expect(s.status).toBe('succeeded');
  });

  it('counts a host by its latest outcome through several repairs, unreachable ones too', () => {
    const s = fold([
      ...rollout,
      ...repair('repair-1', ['h3', 'h4'], [finished('h3', 'repair-1', 'failed'), finished('h4', 'repair-1', 'failed', true)], { patched: 0, failed: 2 }),
      ...repair('repair-2', ['h3', 'h4'], [finished('h3', 'repair-2', 'failed'), finished('h4', 'repair-2', 'patched')], { patched: 1, failed: 1 }),
    ]);
    expect(s.hosts).toEqual({ patched: 3, already: 0, failed: 1, unreachable: 0 });
    const after = fold([
      ...rollout,
      ...repair('repair-1', ['h3', 'h4'], [finished('h3', 'repair-1', 'failed'), finished('h4', 'repair-1', 'failed', true)], { patched: 0, failed: 2 }),
    ]);
    expect(after.hosts).toEqual({ patched: 2, already: 0, failed: 2, unreachable: 1 });
    const third = fold([
      ...rollout,
      ...repair('repair-1', ['h3', 'h4'], [finished('h3', 'repair-1', 'failed'), finished('h4', 'repair-1', 'failed', true)], { patched: 0, failed: 2 }),
      ...repair('repair-2', ['h3', 'h4'], [finished('h3', 'repair-2', 'failed'), finished('h4', 'repair-2', 'patched')], { patched: 1, failed: 1 }),
      ...repair('repair-3', ['h3'], [finished('h3', 'repair-3', 'patched')], { patched: 1, failed: 0 }),
    ]);
    expect(third.hosts).toEqual({ patched: 4, already: 0, failed: 0, unreachable: 0 });
    expect(third.repairFailures).toEqual({});
    expect(third.waves.map((w) => [w.name, w.planned, w.patched, w.failed])).toEqual([
      ['all', 4, 4, 0],
      ['repair-1', 2, 0, 2],
      ['repair-2', 2, 1, 1],
      ['repair-3', 1, 1, 0],
    ]);
  });

  it('a repair that found nothing is a skipped wave; one stopped by its budget failed, with the reason', () => {
    const s = fold([
      ...rollout,
      ...repair('repair-1', [], [], { patched: 0, failed: 0 }),
      ...repair('repair-2', ['h1', 'h2'], [finished('h1', 'repair-2', 'failed')], { patched: 0, failed: 1, reason: 'stopped: failure budget of 0 exceeded' }),
    ]);
    expect(s.waves.slice(1).map((w) => [w.name, w.status, w.planned, w.reason])).toEqual([
      ['repair-1', 'skipped', 0, null],
      ['repair-2', 'failed', 2, 'stopped: failure budget of 0 exceeded'],
    ]);
    expect(s.repairs[1]).toMatchObject({ name: 'repair-2', stopReason: 'stopped: failure budget of 0 exceeded' });
  });

  it('a running repair shows its wave running, its outcomes counted as they come', () => {
    const events = repair('repair-1', ['h1', 'h2'], [finished('h1', 'repair-1', 'patched')], { patched: 2, failed: 0 });
    const s = fold([...rollout, ...events.slice(0, -1)]);
    expect(s.waves[1]).toMatchObject({ name: 'repair-1', status: 'running', planned: 2, patched: 1, finishedAt: null });
    expect(s.repairs[0]).toMatchObject({ finishedAt: null });
  });

  it('a summary stored before repairs were projected folds them on', () => {
    const old = fold(rollout) as Partial<ReturnType<typeof fold>>;
    delete old.repairs;
    delete old.repairFailures;
    const s = foldRolloutSummary('r1', asRecorded('rollout-r1', repair('repair-1', ['h2'], [finished('h2', 'repair-1', 'failed')], { patched: 0, failed: 1 }), rollout.length + 1), old as ReturnType<typeof fold>);
    expect(s.hosts).toEqual({ patched: 3, already: 0, failed: 1, unreachable: 0 });
    expect(s.repairs).toHaveLength(1);
  });
});
