/**
 * Reboot-aware stacks, end to end: a live-patch stack is lost on reboot, and fleetpatch notices
 * whenever it reads a host (preflight, every host step, repair, rollback, audit replay), records
 * HostRebooted with the stack it lost before it decides anything, and never counts a host whose
 * patch a reboot took away as patched.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hostImage, startFleetServer, type RunningFleet } from '../../src/emulator/index.ts';
import { FleetClient } from '../../src/agent/index.ts';
import { startRepair, startRollback } from '../../src/control/steer.ts';
import { EventStore } from '../../src/events/store.ts';
import { createTestDatabase, type TestDatabase } from '../support/database.ts';
import { startTestWorker, type TestTemporal } from '../support/temporal.ts';
import { saveHistory } from '../support/histories.ts';
import { hostEvents, IMAGE_A, liveStacks, replayDifferences, startPlan, tempDir, writePayload, type BuiltPayload } from '../support/rollout.ts';

const ops = { kind: 'user' as const, id: 'ops' };

describe('hosts that reboot lose their stack, and fleetpatch records it', () => {
  let db: TestDatabase;
  let fleet: RunningFleet;
  let temporal: TestTemporal;
  let client: FleetClient;
  let dir: string;
  let fix: BuiltPayload;

  beforeAll(async () => {
    db = await createTestDatabase();
    fleet = await startFleetServer({ hosts: 14, images: [hostImage(IMAGE_A)], seed: 4 });
    temporal = await startTestWorker({ pool: db.pool, fleetFile: fleet.fleetFile });
    client = await FleetClient.open(fleet.fleetFile);
    dir = await tempDir('reboots');
    fix = await writePayload(dir, 'fix', { funcs: [{ target: 'xen_extra_version', returns: '-fix' }], writableData: 8 }, IMAGE_A);
  });

  afterAll(async () => {
    await temporal?.close();
    await fleet?.close();
    await db?.drop();
  });

  const ids = (from: number, n: number) => Array.from({ length: n }, (_, i) => `host-${String(from + i).padStart(4, '0')}`);
  const plan = (name: string, hosts: string[]) => ({ name, payloads: [{ file: fix.file }], hosts: { ids: hosts }, waves: [{ name: 'all', hosts: '100%' }], concurrency: 4, verify: { call: 'xen_extra_version', expect: '-fix' } });
  const start = (name: string, hosts: string[], rolloutId: string) => startPlan({ client: temporal.client, taskQueue: temporal.taskQueue, pool: db.pool, dir, actor: ops }, plan(name, hosts), rolloutId);

  it('repairs a finished rollout: the rebooted hosts are recorded as such and patched again under the same rollout id', async () => {
    const hosts = ids(0, 8);
    const s = await start('fix', hosts, 'reboot-fix-1');
    expect((await s.handle.result()).status).toBe('succeeded');
    const rebooted = hosts.slice(2, 5);
    for (const id of rebooted) await client.host(id).reboot({ downMs: 0 });
    const stacks = await liveStacks(fleet.fleetFile);
    for (const id of rebooted) expect(stacks.get(id)).toEqual([]);

    const repair = await startRepair(temporal.client, temporal.taskQueue, new EventStore(db.pool), 'reboot-fix-1', ops, 'three hosts rebooted overnight');
    const r = await repair.result();
    expect(r).toMatchObject({ repair: 'repair-1', checked: 8, lost: 3, patched: 3, failed: 0, stopped: 'done' });
    await saveHistory(temporal.client, repair.workflowId, 'repair');
    const after = await liveStacks(fleet.fleetFile);
    for (const id of hosts) expect(after.get(id), id).toEqual(['fix']);
    for (const id of rebooted) {
      const events = (await hostEvents(db.pool, id)).map((e) => e.event);
      const reboot = events.findIndex((e) => e.type === 'HostRebooted');
      expect(events[reboot]).toMatchObject({ lostStack: [{ name: 'fix', buildId: fix.buildId }], bootId: expect.stringMatching(/-1$/) });
      // Recorded before anything else was decided for the host: then patched again.
      expect(events.slice(reboot + 1).map((e) => e.type)).toEqual(expect.arrayContaining(['HostPatchStarted', 'PayloadUploaded', 'PayloadApplied', 'HealthChecked']));
    }
    for (const id of hosts.filter((h) => !rebooted.includes(h))) {
      expect((await hostEvents(db.pool, id)).map((e) => e.event.type)).not.toContain('HostRebooted');
    }
    const rollout = (await new EventStore(db.pool).readStream('rollout-reboot-fix-1')).map((e) => e.event);
    expect(rollout.find((e) => e.type === 'RepairStarted')).toMatchObject({ actor: ops, repair: 'repair-1', checked: 8, lost: 3, reason: 'three hosts rebooted overnight' });
    expect(rollout.find((e) => e.type === 'RepairFinished')).toMatchObject({ patched: 3, failed: 0 });
    expect(await replayDifferences(db.pool, fleet.fleetFile)).toEqual([]);

    // A second repair finds nothing to do.
    const again = await (await startRepair(temporal.client, temporal.taskQueue, new EventStore(db.pool), 'reboot-fix-1', ops, 'check again')).result();
    expect(again).toMatchObject({ repair: 'repair-2', checked: 8, lost: 0, patched: 0 });
  });

  it('a host that crashes while applying is patched again when it is back, never counted patched without the payload', async () => {
    const hosts = ids(8, 2);
    fleet.setFaults({ rules: [{ kind: 'crashDuringApply', hosts: [hosts[0]!], downMs: 1500, times: 1 }] });
    const s = await start('crashy', hosts, 'reboot-crashy-1');
    const result = await s.handle.result();
    fleet.setFaults({ rules: [] });
    expect(result.status).toBe('succeeded');
    expect(result.waves[0]).toMatchObject({ patched: 2, failed: 0 });
    expect((await liveStacks(fleet.fleetFile)).get(hosts[0]!)).toEqual(['fix']);
    const events = (await hostEvents(db.pool, hosts[0]!)).map((e) => e.event);
    const reboot = events.findIndex((e) => e.type === 'HostRebooted');
    expect(reboot).toBeGreaterThan(0);
    expect(events.slice(reboot + 1).filter((e) => e.type === 'PayloadApplied')).toHaveLength(1);
    expect(await replayDifferences(db.pool, fleet.fleetFile)).toEqual([]);
  });

  it('a rollback finds a rebooted host with nothing of the rollout on it, and says so', async () => {
    const hosts = ids(10, 2);
    const s = await start('undo', hosts, 'reboot-undo-1');
    expect((await s.handle.result()).status).toBe('succeeded');
    await client.host(hosts[0]!).reboot({ downMs: 0 });
    const rb = await (await startRollback(temporal.client, temporal.taskQueue, 'reboot-undo-1', ops, 'not needed after all')).result();
    expect(rb).toMatchObject({ hosts: 2, rolledBack: 1, nothingToDo: 1, outcome: 'rolled-back' });
    const rollout = (await new EventStore(db.pool).readStream('rollout-reboot-undo-1')).map((e) => e.event);
    const host = rollout.find((e) => e.type === 'HostRollbackFinished' && e.hostId === hosts[0]) as { outcome: string; reason?: string };
    expect(host.outcome).toBe('nothing-to-do');
    expect(host.reason).toMatch(/rebooted since the rollout changed it/);
    expect((await hostEvents(db.pool, hosts[0]!)).map((e) => e.event.type)).toContain('HostRebooted');
    expect(await liveStacks(fleet.fleetFile)).toEqual(expect.any(Map));
    expect((await liveStacks(fleet.fleetFile)).get(hosts[1]!)).toEqual([]);
    expect(await replayDifferences(db.pool, fleet.fleetFile)).toEqual([]);
  });

  it('a host that reboots in the middle of its rollback has the reboot recorded at once, and is found back, with the reason', async () => {
    const hosts = ids(12, 2);
    const s = await start('midway', hosts, 'reboot-midway-1');
    expect((await s.handle.result()).status).toBe('succeeded');
    // From now on the host's second request (the REVERT, after the rollback's LIST) reboots it instead.
    fleet.setFaults({ rules: [{ kind: 'reboot', hosts: [hosts[0]!], afterRequests: 1, times: 1, downMs: 300 }] });
    const handle = await startRollback(temporal.client, temporal.taskQueue, 'reboot-midway-1', ops, 'not needed after all');
    const rb = await handle.result();
    fleet.setFaults({ rules: [] });
    expect(rb).toMatchObject({ hosts: 2, failed: 0, outcome: 'rolled-back' });
    const rollout = (await new EventStore(db.pool).readStream('rollout-reboot-midway-1')).map((e) => e.event);
    const host = rollout.find((e) => e.type === 'HostRollbackFinished' && e.hostId === hosts[0]) as { outcome: string; reason?: string; stackNow: unknown[] };
    expect(host).toMatchObject({ outcome: expect.stringMatching(/^(nothing-to-do|rolled-back)$/), stackNow: [] });
    expect(host.reason).toMatch(/rebooted during the restore/);
    // Recorded by the rollback itself, not left for the next reader to find.
    const reboot = (await hostEvents(db.pool, hosts[0]!)).map((e) => e.event).find((e) => e.type === 'HostRebooted');
    expect(reboot).toMatchObject({ lostStack: [{ name: 'fix' }], correlation: { workflowId: handle.workflowId } });
    expect(await replayDifferences(db.pool, fleet.fleetFile)).toEqual([]);
    expect((await liveStacks(fleet.fleetFile)).get(hosts[0]!)).toEqual([]);
  });
});
