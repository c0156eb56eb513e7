import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { saveHistory } from '../support/histories.ts';
import { hostImage, startFleetServer, type RunningFleet } from '../../src/emulator/index.ts';
import { preflight } from '../../src/rollout/preflight.ts';
import type { RolloutProgress } from '../../src/rollout/progress.ts';
import { readPlanFile, resolvePlanPayloads, startRollout } from '../../src/control/rollouts.ts';
import { FleetClient } from '../../src/agent/client.ts';
import { readLiveStates } from '../../src/agent/live-state.ts';
import { rolloutReport } from '../../src/events/audit/rollout-report.ts';
import { EventStore } from '../../src/events/store.ts';
import { rolloutStream } from '../../src/events/streams.ts';
import { main } from '../../src/cli/main.ts';
import { memoryIO } from '../../src/cli/io.ts';
import { createTestDatabase, type TestDatabase } from '../support/database.ts';
import { startTestWorker, type TestTemporal } from '../support/temporal.ts';
import { hostEvents, IMAGE_A, IMAGE_B, liveStacks, replayDifferences, tempDir, writePayload, writePlan, type BuiltPayload } from '../support/rollout.ts';

const operator = { kind: 'user' as const, id: 'test-operator' };

async function run(t: TestTemporal, db: TestDatabase, planFile: string, rolloutId: string): Promise<RolloutProgress> {
  const { plan, dir } = await readPlanFile(planFile);
  const resolved = await resolvePlanPayloads(plan, dir, { pool: db.pool, actor: operator, store: true });
  const s = await startRollout(t.client, t.taskQueue, resolved, { requestedBy: operator, rolloutId });
  return s.handle.result();
}

describe('a 3-wave rollout over 50 hosts with two hypervisor images and two payload builds', () => {
  let db: TestDatabase;
  let fleet: RunningFleet;
  let temporal: TestTemporal;
  let dir: string;
  let fixA: BuiltPayload;
  let fixB: BuiltPayload;
  let old: BuiltPayload;
  const prePatched = ['host-0000', 'host-0002', 'host-0004', 'host-0006'];

  beforeAll(async () => {
    db = await createTestDatabase();
    fleet = await startFleetServer({ hosts: 50, images: [hostImage(IMAGE_A), hostImage(IMAGE_B)], seed: 11 });
    temporal = await startTestWorker({ pool: db.pool, fleetFile: fleet.fleetFile });
    dir = await tempDir('rollout');
    fixA = await writePayload(dir, 'fix-a', { funcs: [{ target: 'xen_extra_version', returns: '-fix' }] }, IMAGE_A);
    fixB = await writePayload(dir, 'fix-b', { funcs: [{ target: 'xen_extra_version', returns: '-fix' }] }, IMAGE_B);
    old = await writePayload(dir, 'old', { funcs: [{ target: 'xen_changeset', returns: 'old' }] }, IMAGE_A);
    // Four hosts already carry another payload (applied by an earlier fleetpatch rollout).
    const before = await run(
      temporal,
      db,
      await writePlan(dir, { name: 'old', payloads: [{ file: old.file }], hosts: { ids: prePatched }, waves: [{ name: 'all', hosts: '100%' }], concurrency: 4 }),
      'old-1',
    );
    expect(before.status).toBe('succeeded');
  });

  afterAll(async () => {
    await temporal?.close();
    await fleet?.close();
    await db?.drop();
  });

  const mainPlan = () => ({
    name: 'fix',
    payloads: [{ file: fixA.file }, { file: fixB.file }],
    waves: [
      { name: 'canary', hosts: 1 },
      { name: 'regions', hosts: '30%', groupBy: 'region' },
      { name: 'rest', hosts: '100%' },
    ],
    concurrency: 10,
    verify: { call: 'xen_extra_version', expect: '-fix' },
  });

  it('shows incompatible hosts in the dry-run preflight and changes nothing', async () => {
    const planFile = await writePlan(dir, mainPlan());
    const eventsBefore = (await new EventStore(db.pool).readAll(0, 100_000)).length;
    const io = memoryIO();
    process.env.FLEETPATCH_FLEET_FILE = fleet.fleetFile;
    try {
      expect(await main(['rollout', 'plan', planFile], io)).toBe(0);
    } finally {
      delete process.env.FLEETPATCH_FLEET_FILE;
    }
    const out = io.stdout.join('\n');
    expect(out).toContain('hosts: 50 selected, 46 to patch, 0 already patched, 4 incompatible, 0 unreachable');
    expect(out).toMatch(/fix-a: 21 hosts/);
    expect(out).toMatch(/fix-b: 25 hosts/);
    for (const id of prePatched) expect(out).toMatch(new RegExp(`${id}: no build depends on the top of the stack, old`));
    expect((await new EventStore(db.pool).readAll(0, 100_000)).length).toBe(eventsBefore);
    const stacks = await liveStacks(fleet.fleetFile);
    expect([...stacks.values()].filter((s) => s.length > 0)).toHaveLength(4);
  });

  it('gives every host the build made for its hypervisor and top of stack, wave by wave', async () => {
    const result = await run(temporal, db, await writePlan(dir, mainPlan()), 'fix-1');
    expect(result.status).toBe('succeeded');
    // The test server suggests continue-as-new at 200 events: the rollout carried on across runs.
    if (inject('lowContinueAsNewThreshold')) expect(result.generation).toBeGreaterThanOrEqual(1);
    await saveHistory(temporal.client, 'rollout-fix-1', 'rollout-two-images-first-run', { firstRun: true });
    await saveHistory(temporal.client, 'rollout-fix-1', 'rollout-two-images-last-run');
    expect(result.preflight).toMatchObject({ selected: 50, targets: 46, incompatible: 4, alreadyPatched: 0 });
    expect(result.preflight!.incompatibleSamples.map((s) => s.hostId).sort()).toEqual(prePatched);
    expect(result.waves.map((w) => [w.name, w.status, w.planned, w.patched, w.failed])).toEqual([
      ['canary', 'succeeded', 1, 1, 0],
      ['regions', 'succeeded', 13, 13, 0],
      ['rest', 'succeeded', 32, 32, 0],
    ]);
    // The grouped wave went one region at a time.
    expect(result.preflight!.waves[1]!.steps.map((s) => s.group)).toEqual(['ap-south', 'eu-west', 'us-east'].filter((g) => result.preflight!.waves[1]!.steps.some((s) => s.group === g)));

    const stacks = await liveStacks(fleet.fleetFile);
    const fleetClient = await FleetClient.open(fleet.fleetFile);
    for (const h of fleetClient.fleet.hosts) {
      const expected = prePatched.includes(h.id) ? ['old'] : h.buildId === IMAGE_A.buildIdHex ? ['fix-a'] : ['fix-b'];
      expect(stacks.get(h.id), h.id).toEqual(expected);
    }
    // Every patched host: exactly one upload and one apply of its build, a healthy check.
    for (const h of fleetClient.fleet.hosts.filter((x) => !prePatched.includes(x.id))) {
      const events = (await hostEvents(db.pool, h.id)).map((e) => e.event);
      const build = h.buildId === IMAGE_A.buildIdHex ? fixA : fixB;
      expect(events.filter((e) => e.type === 'PayloadApplied').map((e) => (e as { payload: { buildId: string } }).payload.buildId)).toEqual([build.buildId]);
      expect(events.filter((e) => e.type === 'PayloadUploaded')).toHaveLength(1);
      expect(events.filter((e) => e.type === 'HealthChecked' && e.outcome === 'healthy')).toHaveLength(1);
    }
  });

  it('leaves the event store able to replay every host to exactly its live stack', async () => {
    expect(await replayDifferences(db.pool, fleet.fleetFile)).toEqual([]);
    const rollout = (await new EventStore(db.pool).readStream(rolloutStream('fix-1'))).map((e) => e.event.type);
    expect(rollout[0]).toBe('RolloutStarted');
    expect(rollout.at(-1)).toBe('RolloutFinished');
    expect(rollout.filter((t) => t === 'WaveStarted')).toHaveLength(3);
    expect(rollout.filter((t) => t === 'HostPatchFinished')).toHaveLength(46);
  });

  it('does not run the same rollout twice', async () => {
    const { plan, dir: d } = await readPlanFile(await writePlan(dir, mainPlan()));
    const resolved = await resolvePlanPayloads(plan, d, { pool: db.pool, actor: operator, store: true });
    const again = await startRollout(temporal.client, temporal.taskQueue, resolved, { requestedBy: operator, rolloutId: 'fix-1' });
    expect(again.started).toBe(false);
    expect((await again.handle.result()).status).toBe('succeeded');
  });
});

describe('a failure budget exceeded in wave 2', () => {
  let db: TestDatabase;
  let fleet: RunningFleet;
  let temporal: TestTemporal;

  beforeAll(async () => {
    db = await createTestDatabase();
    fleet = await startFleetServer({ hosts: 20, images: [hostImage(IMAGE_A)], seed: 5 });
    temporal = await startTestWorker({ pool: db.pool, fleetFile: fleet.fleetFile });
  });

  afterAll(async () => {
    await temporal?.close();
    await fleet?.close();
    await db?.drop();
  });

  it('rolls back automatically: every patched host returns to its previous stack, top first, and the report says why', async () => {
    const dir = await tempDir('rollback');
    // A two-payload stack: base on the hypervisor, then top on base.
    const base = await writePayload(dir, 'base', { funcs: [{ target: 'xen_changeset', returns: 'base' }] }, IMAGE_A);
    const top = await writePayload(dir, 'top', { depends: base.buildId, funcs: [{ target: 'xen_extra_version', returns: '-top' }] }, IMAGE_A);
    const planFile = await writePlan(dir, {
      name: 'stacked',
      payloads: [{ file: base.file }, { file: top.file }],
      mode: 'stack',
      waves: [
        { name: 'canary', hosts: 1 },
        { name: 'half', hosts: '50%' },
        { name: 'rest', hosts: '100%' },
      ],
      concurrency: 2,
      budget: { perWave: 1, total: 10 },
      verify: { call: 'xen_extra_version', expect: '-top' },
      onFailure: 'rollback',
    });
    const rolloutId = 'stacked-rb-1';
    const { plan, dir: d } = await readPlanFile(planFile);
    const resolved = await resolvePlanPayloads(plan, d, { pool: db.pool, actor: operator, store: true });
    // Fail `top` on the first three hosts of wave 2: two failures exceed a budget of 1.
    const client = await FleetClient.open(fleet.fleetFile);
    const planned = preflight(resolved, client.fleet.hosts.map((h) => ({ id: h.id, labels: h.labels, buildId: h.buildId })), await readLiveStates(client, client.hostIds), rolloutId);
    const wave2 = planned.waves[1]!.steps[0]!.hostIds;
    const failing = wave2.slice(0, 3);
    fleet.setFaults({ rules: [{ kind: 'applyFailure', payload: 'top', hosts: failing, errno: 'EINVAL', reason: 'injected: the new code does not fit' }] });

    const s = await startRollout(temporal.client, temporal.taskQueue, resolved, { requestedBy: operator, rolloutId });
    const result = await s.handle.result();

    expect(result.status).toBe('rolled-back');
    await saveHistory(temporal.client, `rollout-${rolloutId}`, 'rollout-budget-exceeded-rollback');
    await saveHistory(temporal.client, `rollout-${rolloutId}/rollback`, 'rollback');
    expect(result.stopReason).toMatch(/wave "half" failed on [23] of 9 hosts, over its budget \(1 = 1 failure allowed\)/);
    expect(result.waves[1]!.status).toBe('failed');
    // The reason counts the failures the same way the table does (hosts in flight included).
    expect(result.stopReason).toContain(`failed on ${result.waves[1]!.failed} of 9 hosts`);
    expect(result.waves[2]!.done).toBe(0);
    // The report knows the size the preflight planned for the wave that never ran.
    const report = await rolloutReport(new EventStore(db.pool), rolloutId);
    expect(report.summary.waves.map((w) => [w.name, w.planned])).toEqual(result.waves.map((w) => [w.name, w.planned]));
    expect(report.summary.waves[2]!.planned).toBeGreaterThan(0);
    const finished = (await new EventStore(db.pool).readStream(rolloutStream(rolloutId))).map((e) => e.event).find((e) => e.type === 'WaveFinished' && e.wave === 'half');
    expect(finished).toMatchObject({ failed: result.waves[1]!.failed });
    expect((finished as { reason: string }).reason).toContain(`failed on ${result.waves[1]!.failed} of 9 hosts`);
    expect(result.failures[0]).toMatchObject({ stage: 'apply', code: 'EINVAL' });
    expect(result.failures[0]!.reason).toContain('injected: the new code does not fit');
    const patched = result.waves[0]!.patched + result.waves[1]!.patched;
    expect(result.rollback).toMatchObject({ status: 'finished', rolledBack: patched, failed: 0, stackGrew: 0 });

    // Every host is back to its previous (empty) stack, with nothing of ours left loaded.
    for (const [id, stack] of await liveStacks(fleet.fleetFile)) expect(stack, id).toEqual([]);
    for (const id of client.hostIds) expect((await client.host(id).listAll()).entries, id).toEqual([]);
    // Reverted top first on every host that got both.
    for (const id of [planned.waves[0]!.steps[0]!.hostIds[0]!, ...wave2.filter((h) => !failing.includes(h))]) {
      const events = (await hostEvents(db.pool, id)).map((e) => e.event);
      const reverted = events.filter((e) => e.type === 'PayloadReverted').map((e) => (e as { payload: { name: string } }).payload.name);
      if (events.some((e) => e.type === 'PayloadApplied' && (e as { payload: { name: string } }).payload.name === 'top')) expect(reverted).toEqual(['top', 'base']);
    }
    // The failed hosts reverted what they had applied themselves.
    for (const id of failing.filter((h) => result.failures.some((f) => f.hostId === h))) {
      const events = (await hostEvents(db.pool, id)).map((e) => e.event.type);
      expect(events).toContain('PayloadActionFailed');
      expect(events.filter((t) => t === 'PayloadReverted')).toHaveLength(1);
    }
    expect(await replayDifferences(db.pool, fleet.fleetFile)).toEqual([]);
    const rollout = (await new EventStore(db.pool).readStream(rolloutStream(rolloutId))).map((e) => e.event);
    expect(rollout.map((e) => e.type)).toEqual(expect.arrayContaining(['RollbackStarted', 'RollbackFinished', 'RolloutFinished']));
    expect(rollout.find((e) => e.type === 'WaveFinished' && e.wave === 'half')).toMatchObject({ outcome: 'failed' });
    expect(rollout.some((e) => e.type === 'WaveStarted' && e.wave === 'rest')).toBe(false);
  });
});
