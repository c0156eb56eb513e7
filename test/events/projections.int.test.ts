/**
 * Projections and audit queries against real PostgreSQL: a projection maintained batch by batch
 * equals one rebuilt from zero and the pure fold of each stream; as-of queries; placements now and
 * in the past; dependency checks by every filter; a rollout report; replay and drift.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { dependencyChecks } from '../../src/events/audit/checks.ts';
import { compareStacks, replayHost, type LiveHostState } from '../../src/events/audit/replay.ts';
import { rolloutReport } from '../../src/events/audit/rollout-report.ts';
import { hostStackAsOf } from '../../src/events/audit/stack-as-of.ts';
import { hostTimeline } from '../../src/events/audit/timeline.ts';
import { whereIsPayload } from '../../src/events/audit/where.ts';
import { foldHostStack, hostSnapshot } from '../../src/events/projections/host-stack.ts';
import { Projector } from '../../src/events/projections/projector.ts';
import { foldRolloutSummary } from '../../src/events/projections/rollout-summary.ts';
import { EventStore } from '../../src/events/store.ts';
import { createTestDatabase, type TestDatabase } from '../support/database.ts';
import { ALICE, BYE, HELLO, NOP, REPLACE, XEN, XEN_OTHER, hostEvents, rolloutStory, withIds, xenTestRun } from './support/events.ts';

let db: TestDatabase;
let store: EventStore;
let projector: Projector;
/** The instant after each single-event append to host p1, index = stream position. */
const p1Times: string[] = [];

const tables = async () => ({
  hostStacks: (await db.pool.query('SELECT * FROM host_stacks ORDER BY host_id')).rows,
  placements: (await db.pool.query('SELECT * FROM payload_placements ORDER BY build_id, host_id')).rows,
  rollouts: (await db.pool.query('SELECT * FROM rollout_summaries ORDER BY rollout_id')).rows,
});

beforeAll(async () => {
  db = await createTestDatabase();
  store = new EventStore(db.pool);
  projector = new Projector(store, { batchSize: 4 });

  // p1: one event per append, a few milliseconds apart, so every position has its own time.
  const p1 = hostEvents('p1', undefined, 'r1');
  const steps = [p1.checked(HELLO, XEN, XEN, { kind: 'hypervisor' }, 'preflight'), p1.uploaded(HELLO), p1.applied(HELLO), p1.uploaded(BYE), p1.applied(BYE), p1.reverted(BYE), p1.unloaded(BYE)];
  for (const [i, event] of steps.entries()) {
    await store.append('host-p1', withIds(`p1-${i}`, [event]), { expectedVersion: i });
    await sleep(5);
    p1Times.push(new Date().toISOString());
    await sleep(5);
    if (i % 2 === 1) await projector.catchUp();
  }
  // p2: Xen's whole test run; p3: REPLACE then a reboot into another hypervisor, then NOP.
  await store.append('host-p2', withIds('p2', xenTestRun('p2')));
  await projector.catchUp();
  const p3 = hostEvents('p3', undefined, 'r1');
  await store.append('host-p3', withIds('p3a', [p3.uploaded(HELLO), p3.applied(HELLO), p3.uploaded(REPLACE), p3.replaced(REPLACE, [HELLO])]));
  await store.append('host-p3', withIds('p3b', [p3.rebooted(XEN_OTHER), p3.checked(NOP, XEN, XEN_OTHER, { kind: 'hypervisor' }, 'upload'), p3.uploaded(NOP), p3.applied(NOP)]));
  await store.append('rollout-r1', withIds('r1', rolloutStory('r1')));
  await projector.catchUp();
});
afterAll(async () => {
  await db?.drop();
});

describe('projections', () => {
  it('equal, maintained batch by batch or rebuilt from zero, the pure fold of each stream', async () => {
    const incremental = await tables();
    expect(incremental.hostStacks.map((r) => r.host_id)).toEqual(['p1', 'p2', 'p3']);

    for (const host of ['p1', 'p2', 'p3']) {
      const fold = foldHostStack(host, await store.readStream(`host-${host}`));
      const row = incremental.hostStacks.find((r) => r.host_id === host)!;
      expect({ loaded: row.loaded, applied: row.applied, stream_position: Number(row.stream_position), hypervisor: row.hypervisor_build_id }).toEqual({
        loaded: fold.loaded,
        applied: fold.applied,
        stream_position: fold.streamPosition,
        hypervisor: fold.hypervisorBuildId,
      });
    }
    expect(incremental.rollouts[0].summary).toEqual(foldRolloutSummary('r1', await store.readStream('rollout-r1')));

    expect(await projector.rebuild()).toEqual({ events: 7 + 13 + 8 + 16 });
    expect(await tables()).toEqual(incremental);
    // Another batch size, another projector name: the same state.
    await new Projector(store, { batchSize: 1000 }).rebuild();
    expect(await tables()).toEqual(incremental);
    expect(await projector.catchUp()).toEqual({ events: 0 });
  });

  it('keeps up with new events after a rebuild', async () => {
    await store.append('host-p2', withIds('p2-more', [hostEvents('p2').reverted(REPLACE)]));
    expect(await projector.catchUp()).toEqual({ events: 1 });
    const row = (await db.pool.query(`SELECT applied FROM host_stacks WHERE host_id = 'p2'`)).rows[0];
    expect(row.applied).toEqual([]);
  });
});

describe('audit queries', () => {
  it("gives a host's stack as of a stream position or a time", async () => {
    expect((await hostStackAsOf(store, 'p1', { position: 3 })).applied).toEqual([HELLO]);
    expect((await hostStackAsOf(store, 'p1', { position: 5 })).applied).toEqual([HELLO, BYE]);
    expect((await hostStackAsOf(store, 'p1', { position: 0 })).applied).toEqual([]);
    // p1Times[i] is just after the event at position i + 1 was recorded.
    expect((await hostStackAsOf(store, 'p1', { at: p1Times[1]! })).loaded).toEqual([{ ...HELLO, state: 'CHECKED' }]);
    expect((await hostStackAsOf(store, 'p1', { at: p1Times[4]! })).applied).toEqual([HELLO, BYE]);
    const asOf6 = await hostStackAsOf(store, 'p1', { at: p1Times[5]! });
    expect(asOf6.applied).toEqual([HELLO]);
    expect(asOf6.streamPosition).toBe(6);
    expect((await hostStackAsOf(store, 'p1', { at: '2000-01-01T00:00:00Z' })).streamPosition).toBe(0);
    const now = await hostStackAsOf(store, 'p1');
    expect(now).toMatchObject({ applied: [HELLO], loaded: [{ ...HELLO, state: 'APPLIED' }], streamPosition: 7 });
    await expect(hostStackAsOf(store, 'p1', { at: 'tuesday' })).rejects.toMatchObject({ code: 'ARGUMENT' });
  });

  it('tells which hosts run a payload now and at a past time', async () => {
    const now = await whereIsPayload(store, HELLO.buildId, { projector });
    expect(now.map((p) => [p.hostId, p.state, p.stackIndex])).toEqual([
      ['p1', 'APPLIED', 0],
      ['p2', 'CHECKED', null],
    ]);
    // The same answer replayed from events at "now".
    expect(await whereIsPayload(store, HELLO.buildId, { at: new Date().toISOString() })).toEqual(now);
    expect((await whereIsPayload(store, BYE.buildId, { at: p1Times[4]! })).map((p) => [p.hostId, p.state, p.stackIndex, p.stackHeight])).toEqual([['p1', 'APPLIED', 1, 2]]);
    expect(await whereIsPayload(store, BYE.buildId, { at: p1Times[6]! })).toEqual([]);
    expect((await whereIsPayload(store, NOP.buildId, { projector })).map((p) => p.hostId)).toEqual(['p3']);
    expect(await whereIsPayload(store, 'ee'.repeat(20), { projector })).toEqual([]);
  });

  it('finds dependency checks by host, payload, rollout and outcome', async () => {
    const all = await dependencyChecks(store);
    expect(all).toHaveLength(5);
    expect((await dependencyChecks(store, { hostId: 'p2' })).map((c) => c.event.outcome)).toEqual(['match', 'match', 'mismatch']);
    const mismatches = await dependencyChecks(store, { outcome: 'mismatch' });
    expect(mismatches.map((c) => [c.event.hostId, c.event.payload.name, c.event.expected, c.event.found, c.event.against])).toEqual([
      ['p2', BYE.name, HELLO.buildId, REPLACE.buildId, { kind: 'payload', ...REPLACE }],
      ['p3', NOP.name, XEN, XEN_OTHER, { kind: 'hypervisor' }],
    ]);
    expect(mismatches[0]!.event.errno).toBe('EINVAL');
    expect((await dependencyChecks(store, { buildId: HELLO.buildId })).map((c) => c.event.hostId)).toEqual(['p1', 'p2']);
    expect((await dependencyChecks(store, { rolloutId: 'r1' })).map((c) => [c.event.hostId, c.event.phase])).toEqual([
      ['p1', 'preflight'],
      ['p3', 'upload'],
    ]);
    expect(await dependencyChecks(store, { rolloutId: 'r1', outcome: 'match' })).toHaveLength(1);
    await expect(dependencyChecks(store, { outcome: 'maybe' })).rejects.toMatchObject({ code: 'ARGUMENT' });
  });

  it("gives a host's timeline with its outcomes in rollouts", async () => {
    const [other] = rolloutStory('r2');
    await store.append('rollout-r2', withIds('r2', [other!, { ...rolloutStory('r2')[2]!, hostId: 'p1', wave: 'canary' } as typeof other & object]));
    const timeline = await hostTimeline(store, 'p1');
    expect(timeline.map((e) => e.event.type)).toEqual([
      'DependencyChecked', 'PayloadUploaded', 'PayloadApplied', 'PayloadUploaded', 'PayloadApplied', 'PayloadReverted', 'PayloadUnloaded', 'HostPatchFinished',
    ]);
    expect(timeline[7]!.streamId).toBe('rollout-r2');
    expect(await hostTimeline(store, 'nobody')).toEqual([]);
  });

  it("reports a rollout: waves, hosts, who decided what and why, the rollback, failed checks", async () => {
    const report = await rolloutReport(store, 'r1');
    expect(report.summary).toMatchObject({ status: 'rollback-incomplete', planName: 'hello-everywhere', startedBy: ALICE });
    expect(report.hosts.map((h) => [h.hostId, h.outcome, h.failure?.code ?? null])).toEqual([
      ['h1', 'patched', null],
      ['h2', 'patched', null],
      ['h3', 'failed', 'EINVAL'],
    ]);
    expect(report.summary.decisions.map((d) => `${d.action} by ${d.by.id}: ${d.reason}`)).toEqual([
      'paused by rollout/r1: waiting for approval after canary',
      'approved by alice: canary healthy for 10 minutes',
      'resumed by alice: approved',
    ]);
    expect(report.rollbacks.map((r) => [r.hostId, r.outcome])).toEqual([
      ['h1', 'rolled-back'],
      ['h2', 'stack-grew'],
    ]);
    expect(report.checksTotal).toBe(2);
    expect(report.failedChecks.map((c) => c.event.hostId)).toEqual(['p3']);
    await expect(rolloutReport(store, 'r-none')).rejects.toMatchObject({ code: 'ROLLOUT_NOT_FOUND' });
  });
});

describe('replay', () => {
  const actor = { kind: 'user' as const, id: 'auditor' };

  it('finds nothing when the live host matches its events, and records nothing', async () => {
    const live = hostSnapshot(foldHostStack('p3', await store.readStream('host-p3')));
    const r = await replayHost(store, 'p3', async () => live, { actor });
    expect(r.differences).toEqual([]);
    expect(r.drift).toBeNull();
    expect(await store.streamVersion('host-p3')).toBe(8);
  });

  it('reports and records drift once, then agrees with the host', async () => {
    // Someone applied BYE by hand on p1, and its hypervisor is not what the events say.
    const live: LiveHostState = { hypervisorBuildId: XEN_OTHER, appliedStack: [HELLO, BYE], loaded: [{ ...HELLO, state: 'APPLIED' }, { ...BYE, state: 'APPLIED' }] };
    const dry = await replayHost(store, 'p1', async () => live, { actor, record: false });
    expect(dry.differences.map((d) => d.where)).toEqual(['hypervisor', 'applied', 'loaded']);
    expect(dry.drift).toBeNull();
    expect(await store.streamVersion('host-p1')).toBe(7);

    const r = await replayHost(store, 'p1', async () => live, { actor, correlation: { rolloutId: 'r1' } });
    expect(r.differences).toEqual(compareStacks(hostSnapshot(r.replayed), live));
    expect(r.drift).toMatchObject({ streamPosition: 8, alreadyRecorded: false });
    const [drift] = await store.readStream('host-p1', { from: 8 });
    expect(drift!.event).toMatchObject({ type: 'DriftDetected', actor, live, differences: r.differences });

    const again = await replayHost(store, 'p1', async () => live, { actor });
    expect(again.differences).toEqual([]);
    await projector.catchUp();
    expect((await whereIsPayload(store, BYE.buildId, { projector })).map((p) => [p.hostId, p.state])).toEqual([
      ['p1', 'APPLIED'],
      ['p2', 'CHECKED'],
    ]);
  });

  it('compares again when the host stream moves on during the replay', async () => {
    let calls = 0;
    const p3 = hostEvents('p3');
    const r = await replayHost(
      store,
      'p3',
      async () => {
        calls++;
        // While the first comparison runs, a new event lands on the host.
        if (calls === 1) await store.append('host-p3', withIds('p3-late', [p3.reverted(NOP)]));
        return { appliedStack: [], loaded: [] };
      },
      { actor },
    );
    expect(calls).toBe(2);
    expect(r.replayed.streamPosition).toBe(9);
    expect(r.drift).toMatchObject({ streamPosition: 10 });
  });
});
