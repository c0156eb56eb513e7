/**
 * The short chaos run in every `npm test`: 100 emulated hosts; faults timed by progress over the
 * rollout (a worker SIGKILLed, the Temporal server killed and restarted on its file, PostgreSQL
 * stopped and started, hosts rebooted after they were patched and while being patched, one
 * hanging, one refusing APPLY, one answering wrong, one slow), the repair (APPLY refused on a host
 * that lost the payload, every worker SIGKILLed while its batch holds hosts, a host rebooted), a
 * REPLACE over part of the fleet and its rollback, and the rollback of the whole rollout (every
 * worker SIGKILLed mid-way, a host rebooted); then every invariant of chaos/invariants.ts. The
 * full run is `npm run chaos` (500 hosts, several of each).
 */
import { describe, expect, it } from 'vitest';
import { runChaos } from '../../chaos/scenario.ts';

describe('a rollout, its repair, a REPLACE and the rollback under faults', () => {
  it('keeps every invariant: stacks replay, nothing applied twice, every change, check and repair outcome recorded, no budget spent on infrastructure', { timeout: 600_000 }, async () => {
    const lines: string[] = [];
    const report = await runChaos({
      seed: Number(process.env.FLEETPATCH_CHAOS_SEED ?? 7),
      hosts: 100,
      workers: 2,
      concurrency: 20,
      actionMs: 150,
      faults: { workerKills: 3, temporalRestarts: 1, postgresOutages: 1, reboots: 5, hungHosts: 1, applyFailures: 2, wrongAnswers: 1, slowHosts: 1 },
      postgresDownMs: 5_000,
      deadlineMs: 540_000,
      say: (l) => lines.push(l),
    });
    const log = lines.join('\n');
    const failed = report.verdicts.filter((v) => !v.ok).map((v) => `${v.name}: ${v.detail}; ${v.problems.join('; ')}`);
    expect(failed, log).toEqual([]);
    expect(report.status).toBe('succeeded');
    // Faults landed during the repair and during the rollback, not only during the rollout.
    const kinds = (phase: string) => report.landed.filter((f) => f.phase === phase).map((f) => f.kind).sort();
    expect(kinds('repair'), log).toEqual(['applyFailures', 'reboots', 'workerKills']);
    expect(kinds('rollback'), log).toEqual(['reboots', 'workerKills']);
    expect(report.missed, log).toEqual([]);
    // The repair had work, failed where it was made to, and its record agrees with the hosts.
    expect(report.phases.repair, log).toMatch(/^repair-1: [2-9] host\(s\) had lost the payload, [1-9] patched again, 1 failed$/);
    const repair = report.verdicts.find((v) => v.name.startsWith('every repair outcome'));
    expect(repair?.detail, log).toMatch(/^1 repair\(s\), [2-9] host outcome\(s\) recorded \(1 failed\); [1-9] compared with the live hosts/);
    // The REPLACE ran on hosts with an empty stack too, and was rolled back.
    expect(report.phases.replace, log).toMatch(/succeeded on \d+ hosts \([1-9]\d* with an empty stack\); rolled back: rolled-back/);
    // ... and the rollback that followed put every host back, on a fleet that went through it all.
    const rollback = report.verdicts.find((v) => v.name.startsWith('nothing of the rolled-back rollout'));
    expect(rollback?.detail).toMatch(/100 hosts read; rollback rolled-back: \d+ restored/);
  });
});
