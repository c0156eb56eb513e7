/**
 * The chaos run's schedule (chaos/scenario.ts): faults spread over the rollout, the repair, the
 * REPLACE and the rollback, each waiting for a share of its phase's hosts to be done, decided by
 * the seed alone.
 */
import { describe, expect, it } from 'vitest';
import { PHASES_OF, schedule } from '../../chaos/scenario.ts';

const faults = { workerKills: 3, temporalRestarts: 1, postgresOutages: 1, reboots: 5, hungHosts: 1, applyFailures: 2, wrongAnswers: 1, slowHosts: 1 };

describe('the chaos schedule', () => {
  it('gives the repair and the rollback faults of their own, and the rollout the reboots the repair needs', () => {
    const s = schedule({ seed: 7, faults });
    const of = (phase: string) => s.filter((f) => f.phase === phase).map((f) => f.kind).sort();
    expect(of('rollout')).toEqual(['applyFailures', 'hungHosts', 'postgresOutages', 'reboots', 'reboots', 'reboots', 'slowHosts', 'temporalRestarts', 'workerKills', 'wrongAnswers']);
    expect(of('repair')).toEqual(['applyFailures', 'reboots', 'workerKills']);
    expect(of('rollback')).toEqual(['reboots', 'workerKills']);
    expect(s).toHaveLength(Object.values(faults).reduce((a, b) => a + b, 0));
    // Each kind's faults are numbered within their phase: which host each looks for.
    expect(s.filter((f) => f.phase === 'rollout' && f.kind === 'reboots').map((f) => f.n).sort()).toEqual([0, 1, 2]);
  });

  it('times every fault by the progress of its phase, inside that phase, the same for the same seed', () => {
    const s = schedule({ seed: 11, faults: { ...faults, reboots: 6, applyFailures: 3, postgresOutages: 2 } });
    for (const f of s) {
      expect(f.at).toBeGreaterThanOrEqual(0);
      expect(f.at).toBeLessThan(1);
      expect(PHASES_OF[f.kind]).toContain(f.phase);
    }
    // Rollout reboots come once hosts are patched; a repair's or a REPLACE's APPLY failure before it starts.
    for (const f of s.filter((x) => x.phase === 'rollout' && x.kind === 'reboots')) expect(f.at).toBeGreaterThanOrEqual(0.25);
    for (const f of s.filter((x) => x.phase !== 'rollout' && x.kind === 'applyFailures')) expect(f.at).toBe(0);
    expect(s.filter((f) => f.phase === 'replace').map((f) => f.kind).sort()).toEqual(['applyFailures', 'postgresOutages', 'reboots']);
    expect(schedule({ seed: 11, faults: { ...faults, reboots: 6, applyFailures: 3, postgresOutages: 2 } })).toEqual(s);
    expect(schedule({ seed: 12, faults })).not.toEqual(schedule({ seed: 11, faults }));
  });
});
