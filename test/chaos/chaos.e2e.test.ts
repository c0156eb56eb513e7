/**
 * The short chaos run in every `npm test`: 100 emulated hosts, one fault of each kind (a worker
 * SIGKILLed, the Temporal server killed and restarted on its file, PostgreSQL stopped and started,
 * a host rebooted, one hanging, one refusing APPLY, one answering wrong, one slow), a repair, the
 * rollback of the whole rollout, then every invariant of chaos/invariants.ts. The full run is `npm run chaos` (500 hosts, several of each).
 */
import { describe, expect, it } from 'vitest';
import { runChaos } from '../../chaos/scenario.ts';

describe('a rollout under faults', () => {
  it('keeps every invariant: stacks replay, nothing applied twice, every change and check recorded, no budget spent on infrastructure', { timeout: 400_000 }, async () => {
    const lines: string[] = [];
    const report = await runChaos({
      seed: Number(process.env.FLEETPATCH_CHAOS_SEED ?? 7),
      hosts: 100,
      workers: 2,
      concurrency: 20,
      actionMs: 150,
      faults: { workerKills: 1, temporalRestarts: 1, postgresOutages: 1, reboots: 1, hungHosts: 1, applyFailures: 1, wrongAnswers: 1, slowHosts: 1 },
      postgresDownMs: 5_000,
      deadlineMs: 300_000,
      say: (l) => lines.push(l),
    });
    const failed = report.verdicts.filter((v) => !v.ok).map((v) => `${v.name}: ${v.detail}; ${v.problems.join('; ')}`);
    expect(failed, lines.join('\n')).toEqual([]);
    expect(report.status).toBe('succeeded');
    // ... and the rollback that followed put every host back, on a fleet that went through it all.
    const rollback = report.verdicts.find((v) => v.name.startsWith('nothing of the rolled-back rollout'));
    expect(rollback?.detail).toMatch(/100 hosts read; rollback rolled-back: \d+ restored/);
    expect(Object.values(report.injected).reduce((a, b) => a + b, 0)).toBe(8);
  });
});
