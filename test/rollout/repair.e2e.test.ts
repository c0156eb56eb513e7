/**
 * Every repair is a recorded attempt of its own, end to end: hosts reboot after a rollout, a repair
 * fails on one of them (a fault injected on the emulated hypervisor), and the record says so where
 * an operator looks, `audit rollout` (its report and the lines it prints), the rollout's summary
 * and the host's own projected stack, as the hypervisor does: the failed host runs nothing. Later
 * repairs of the same hosts record their own outcomes, and the latest one is what counts.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hostImage, startFleetServer, type RunningFleet } from '../../src/emulator/index.ts';
import { FleetClient } from '../../src/agent/index.ts';
import { startRepair } from '../../src/control/steer.ts';
import { hostStacks, listRollouts } from '../../src/events/audit/projections.ts';
import { rolloutReport } from '../../src/events/audit/rollout-report.ts';
import { EventStore } from '../../src/events/store.ts';
import { describeRolloutReport } from '../../src/cli/audit.ts';
import { createTestDatabase, type TestDatabase } from '../support/database.ts';
import { startTestWorker, type TestTemporal } from '../support/temporal.ts';
import { IMAGE_A, liveStacks, replayDifferences, startPlan, tempDir, writePayload, type BuiltPayload } from '../support/rollout.ts';

const ops = { kind: 'user' as const, id: 'ops' };
const ROLLOUT = 'repair-own-1';

describe('a repair records every host it takes as its own outcome', () => {
  let db: TestDatabase;
  let fleet: RunningFleet;
  let temporal: TestTemporal;
  let client: FleetClient;
  let store: EventStore;
  let dir: string;
  let fix: BuiltPayload;
  const hosts = Array.from({ length: 6 }, (_, i) => `host-${String(i).padStart(4, '0')}`);
  const [h0, , h2, h3, h4] = hosts as [string, string, string, string, string, string];

  beforeAll(async () => {
    db = await createTestDatabase();
    fleet = await startFleetServer({ hosts: hosts.length, images: [hostImage(IMAGE_A)], seed: 9 });
    temporal = await startTestWorker({ pool: db.pool, fleetFile: fleet.fleetFile });
    client = await FleetClient.open(fleet.fleetFile);
    store = new EventStore(db.pool);
    dir = await tempDir('repair-own');
    fix = await writePayload(dir, 'fix', { funcs: [{ target: 'xen_extra_version', returns: '-fix' }], writableData: 8 }, IMAGE_A);
    const plan = { name: 'fix', payloads: [{ file: fix.file }], hosts: { ids: hosts }, waves: [{ name: 'all', hosts: '100%' }], concurrency: 3, budget: { perWave: 2, total: 4 }, verify: { call: 'xen_extra_version', expect: '-fix' } };
    const s = await startPlan({ client: temporal.client, taskQueue: temporal.taskQueue, pool: db.pool, dir, actor: ops }, plan, ROLLOUT);
    expect((await s.handle.result()).status).toBe('succeeded');
  });

  afterAll(async () => {
    await temporal?.close();
    await fleet?.close();
    await db?.drop();
  });

  const repair = async (reason: string) => (await startRepair(temporal.client, temporal.taskQueue, store, ROLLOUT, ops, reason)).result();
  const outcomesOf = async (hostId: string) =>
    (await store.readStream(`rollout-${ROLLOUT}`)).flatMap(({ event: e }) => (e.type === 'HostPatchFinished' && e.hostId === hostId ? [`${e.wave}:${e.outcome}`] : []));
  const projected = async (hostId: string) => (await hostStacks(store, { hostIds: [hostId] }))[0]?.applied.map((p) => p.name);
  const row = (lines: string[], first: string, second: string) => lines.find((l) => l.startsWith(`${first} `) && l.split(/\s+/)[1] === second);

  it('a repair that fails on a host records it failed, in its own wave, where audit rollout and the host projection show it', { timeout: 120_000 }, async () => {
    for (const id of [h2, h3, h4]) await client.host(id).reboot({ downMs: 0 });
    fleet.setFaults({ rules: [{ kind: 'applyFailure', hosts: [h3], errno: 'EINVAL', reason: 'the patch does not apply here' }] });
    const r = await repair('three hosts rebooted overnight');
    expect(r).toMatchObject({ repair: 'repair-1', checked: 6, lost: 3, patched: 2, failed: 1, stopped: 'done' });

    // The hypervisor: the failed host runs nothing, the repaired ones run the payload.
    const live = await liveStacks(fleet.fleetFile);
    expect(live.get(h3)).toEqual([]);
    for (const id of [h2, h4]) expect(live.get(id), id).toEqual(['fix']);

    // The rollout's record agrees, host by host and in its counts.
    const report = await rolloutReport(store, ROLLOUT);
    expect(report.summary.hosts).toEqual({ patched: 5, already: 0, failed: 1, unreachable: 0 });
    expect(report.summary.waves.map((w) => [w.name, w.status, w.planned, w.patched, w.failed])).toEqual([
      ['all', 'succeeded', 6, 6, 0],
      ['repair-1', 'succeeded', 3, 2, 1],
    ]);
    const failed = report.hosts.find((h) => h.hostId === h3);
    expect(failed).toMatchObject({ wave: 'repair-1', outcome: 'failed', applied: [], failure: { code: 'EINVAL' }, restore: { outcome: 'restored', stackNow: [] } });
    expect(report.hosts.find((h) => h.hostId === h2)).toMatchObject({ wave: 'repair-1', outcome: 'patched', applied: [{ name: 'fix' }] });
    expect(report.hosts.find((h) => h.hostId === h0)).toMatchObject({ wave: 'all', outcome: 'patched' });
    expect(report.repairs).toHaveLength(1);
    expect(report.repairs[0]).toMatchObject({ name: 'repair-1', requestedBy: ops, reason: 'three hosts rebooted overnight', checked: 6, lost: 3, stopReason: null, wave: { patched: 2, failed: 1 } });
    expect(report.repairs[0]!.hosts.map((h) => `${h.hostId}:${h.outcome}`).sort()).toEqual([`${h2}:patched`, `${h3}:failed`, `${h4}:patched`]);

    // What `audit rollout` prints.
    const lines = describeRolloutReport(report);
    expect(lines).toContain('Hosts: 5 patched, 0 already, 1 failed (0 unreachable)');
    expect(row(lines, 'repair-1', 'succeeded')).toMatch(/^repair-1\s+succeeded\s+3\s+2\s+0\s+1\s+0\s/);
    expect(row(lines, h3, 'repair-1')).toMatch(/failed \(restore: restored\)\s+-\s+apply EINVAL/);

    // The host's own state in the store: nothing applied on the failed host, the payload on the others.
    expect(await projected(h3)).toEqual([]);
    expect(await projected(h2)).toEqual(['fix']);
    expect(await replayDifferences(db.pool, fleet.fleetFile)).toEqual([]);
  });

  it('a second repair of the same host records its own outcome, and the latest outcome is the one that counts', { timeout: 180_000 }, async () => {
    // The fault is still there: the next repair tries the host again, and fails again, on record.
    const second = await repair('try host-0003 again');
    expect(second).toMatchObject({ repair: 'repair-2', checked: 6, lost: 1, patched: 0, failed: 1 });
    expect(await outcomesOf(h3)).toEqual(['all:patched', 'repair-1:failed', 'repair-2:failed']);

    fleet.setFaults({ rules: [] });
    const third = await repair('the hypervisor was fixed');
    expect(third).toMatchObject({ repair: 'repair-3', lost: 1, patched: 1, failed: 0 });
    expect(await outcomesOf(h3)).toEqual(['all:patched', 'repair-1:failed', 'repair-2:failed', 'repair-3:patched']);

    // A host a repair patched reboots again: the next repair patches it again, on record.
    await client.host(h2).reboot({ downMs: 0 });
    const fourth = await repair('host-0002 rebooted again');
    expect(fourth).toMatchObject({ repair: 'repair-4', lost: 1, patched: 1, failed: 0 });
    expect(await outcomesOf(h2)).toEqual(['all:patched', 'repair-1:patched', 'repair-4:patched']);

    const live = await liveStacks(fleet.fleetFile);
    for (const id of hosts) expect(live.get(id), id).toEqual(['fix']);
    const report = await rolloutReport(store, ROLLOUT);
    expect(report.summary.hosts).toEqual({ patched: 6, already: 0, failed: 0, unreachable: 0 });
    expect(report.summary.waves.map((w) => [w.name, w.planned, w.patched, w.failed])).toEqual([
      ['all', 6, 6, 0],
      ['repair-1', 3, 2, 1],
      ['repair-2', 1, 0, 1],
      ['repair-3', 1, 1, 0],
      ['repair-4', 1, 1, 0],
    ]);
    expect(report.hosts.find((h) => h.hostId === h3)).toMatchObject({ wave: 'repair-3', outcome: 'patched' });
    expect(report.hosts.find((h) => h.hostId === h2)).toMatchObject({ wave: 'repair-4', outcome: 'patched' });
    expect(await projected(h3)).toEqual(['fix']);
    expect(await replayDifferences(db.pool, fleet.fleetFile)).toEqual([]);
    // The projection kept batch by batch says what the pure fold of the stream says.
    expect((await listRollouts(store)).find((x) => x.rolloutId === ROLLOUT)).toMatchObject({ hosts: report.summary.hosts, waves: report.summary.waves });
  });
});
