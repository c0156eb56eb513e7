import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hostImage, startFleetServer, type RunningFleet } from '../../src/emulator/index.ts';
import { EventStore } from '../../src/events/store.ts';
import { FleetClient } from '../../src/agent/client.ts';
import type { Started } from '../../src/control/rollouts.ts';
import { progressQuery, resumeUpdate } from '../../workflows/messages.ts';
import type { PlanInput } from '../../src/rollout/plan.ts';
import type { RolloutProgress } from '../../src/rollout/progress.ts';
import { createTestDatabase, type TestDatabase } from '../support/database.ts';
import { startTestWorker, type TestTemporal } from '../support/temporal.ts';
import { saveHistory } from '../support/histories.ts';
import { hostEvents, IMAGE_A, liveStacks, startPlan, replayDifferences, tempDir, writePayload, writePlan, type BuiltPayload } from '../support/rollout.ts';

const ops = { kind: 'user' as const, id: 'ops' };

describe('rollouts meeting failures: REPLACE, unreachable hosts, transient faults, pause on failure', () => {
  let db: TestDatabase;
  let fleet: RunningFleet;
  let temporal: TestTemporal;
  let dir: string;
  let hello: BuiltPayload;
  let bye: BuiltPayload;

  beforeAll(async () => {
    db = await createTestDatabase();
    fleet = await startFleetServer({ hosts: 16, images: [hostImage(IMAGE_A)], seed: 21 });
    // A short action deadline keeps the unreachable host's retries brief.
    temporal = await startTestWorker({ pool: db.pool, fleetFile: fleet.fleetFile });
    dir = await tempDir('failures');
    // xen_hello_world has writable data (.bss), so Xen never re-applies it once reverted.
    hello = await writePayload(dir, 'hello', { funcs: [{ target: 'xen_extra_version', returns: 'Hello World' }], writableData: 8 }, IMAGE_A);
    bye = await writePayload(dir, 'bye', { depends: hello.buildId, funcs: [{ target: 'xen_extra_version', returns: 'Bye World!' }] }, IMAGE_A);
  });

  afterAll(async () => {
    await temporal?.close();
    await fleet?.close();
    await db?.drop();
  });

  const start = (plan: PlanInput, rolloutId: string): Promise<Started> =>
    startPlan({ client: temporal.client, taskQueue: temporal.taskQueue, pool: db.pool, dir, actor: ops }, plan, rolloutId);

  const hosts = (from: number, n: number) => Array.from({ length: n }, (_, i) => `host-${String(from + i).padStart(4, '0')}`);

  it('REPLACE swaps each stack for the cumulative payload; a rollback asked for later restores the former stack, payloads with .data included', async () => {
    const ids = hosts(0, 4);
    const stacked = await start({ name: 'stack', mode: 'stack', payloads: [{ file: hello.file }, { file: bye.file }], hosts: { ids }, waves: [{ name: 'all', hosts: '100%' }], concurrency: 4 }, 'stack-1');
    expect((await stacked.handle.result()).status).toBe('succeeded');
    for (const id of ids) expect((await liveStacks(fleet.fleetFile)).get(id)).toEqual(['hello', 'bye']);

    const cumulative = await writePayload(dir, 'cumulative', { funcs: [{ target: 'xen_extra_version', returns: 'Hello Again World!' }, { target: 'xen_changeset', oldAddress: 'name', returns: 'cumulative' }] }, IMAGE_A);
    const replaced = await start(
      { name: 'replace', mode: 'replace', payloads: [{ file: cumulative.file }], hosts: { ids }, waves: [{ name: 'all', hosts: '100%' }], concurrency: 2, verify: { call: 'xen_extra_version', expect: 'Hello Again World!' } },
      'replace-1',
    );
    const result = await replaced.handle.result();
    expect(result.status, JSON.stringify(result.failures)).toBe('succeeded');
    const client = await FleetClient.open(fleet.fleetFile);
    for (const id of ids) {
      const list = await client.host(id).listAll();
      expect(list.appliedStack.map((e) => e.name)).toEqual(['cumulative']);
      // REPLACE reverted the old stack; those payloads stay loaded.
      expect(list.entries.map((e) => [e.name, e.state])).toEqual([['hello', 'CHECKED'], ['bye', 'CHECKED'], ['cumulative', 'APPLIED']]);
      const replacedEvent = (await hostEvents(db.pool, id)).map((e) => e.event).find((e) => e.type === 'PayloadReplaced') as { replaced: { name: string }[] } | undefined;
      expect(replacedEvent?.replaced.map((r) => r.name)).toEqual(['hello', 'bye']);
    }
    await saveHistory(temporal.client, 'rollout-replace-1', 'rollout-replace');

    // Rolling the REPLACE back, as a person asks later: the cumulative payload is reverted; hello
    // has .data and was reverted by REPLACE, so Xen refuses to apply it again: it is unloaded and
    // uploaded afresh from the payload store, then hello and bye are applied again.
    const rb = await temporal.client.workflow.execute('rollbackWorkflow', {
      taskQueue: temporal.taskQueue,
      workflowId: 'rollout-replace-1/rollback-test',
      args: [{ rolloutId: 'replace-1', requestedBy: ops, reason: 'test', ours: [cumulative.buildId], verifyCall: 'xen_extra_version', concurrency: 2 }],
    });
    expect(rb).toMatchObject({ hosts: 4, rolledBack: 4, failed: 0, unrecoverable: 0, stackGrew: 0, outcome: 'rolled-back', problems: [] });
    for (const id of ids) {
      expect((await liveStacks(fleet.fleetFile)).get(id)).toEqual(['hello', 'bye']);
      const list = await client.host(id).listAll();
      expect(list.entries.map((e) => e.name).sort()).toEqual(['bye', 'hello']);
      expect((await client.host(id).call('xen_extra_version')).result).toBe('Bye World!');
    }
    expect(await replayDifferences(db.pool, fleet.fleetFile)).toEqual([]);
    // Who rolled it back and why is on the rollout's stream, like an automatic rollback.
    const events = (await new EventStore(db.pool).readStream('rollout-replace-1')).map((e) => e.event);
    expect(events.find((e) => e.type === 'RollbackStarted')).toMatchObject({ actor: ops, reason: 'test', hosts: 4 });
    expect(events.find((e) => e.type === 'RollbackFinished')).toMatchObject({ actor: ops, outcome: 'rolled-back', rolledBack: 4 });
  });

  it('counts an unreachable host as a failure, with the reason, and retries a transient EBUSY', async () => {
    const ids = hosts(4, 6);
    fleet.setFaults({
      rules: [
        { kind: 'unreachable', hosts: ['host-0005'], mode: 'refuse' },
        // The CPUs fail to rendezvous once on host-0006: rc -EBUSY, state unchanged; a retry succeeds.
        { kind: 'actionTimeout', hosts: ['host-0006'], payload: 'hello', times: 1 },
      ],
    });
    const s = await start({ name: 'flaky', payloads: [{ file: hello.file }], hosts: { ids }, waves: [{ name: 'all', hosts: '100%' }], concurrency: 3, budget: { perWave: 1, total: 1 } }, 'flaky-1');
    const result = await s.handle.result();
    fleet.setFaults({ rules: [] });
    expect(result.status).toBe('succeeded');
    expect(result.preflight!.unreachable).toBe(1);
    expect(result.waves[0]).toMatchObject({ planned: 6, patched: 5, failed: 1, unreachable: 1 });
    expect(result.failures).toEqual([expect.objectContaining({ hostId: 'host-0005', stage: 'read', code: 'HOST_UNREACHABLE' })]);
    const flaky = (await hostEvents(db.pool, 'host-0006')).map((e) => e.event);
    expect(flaky.find((e) => e.type === 'PayloadActionFailed')).toMatchObject({ action: 'apply', errno: 'EBUSY' });
    expect(flaky.filter((e) => e.type === 'PayloadApplied')).toHaveLength(1);
    expect((await liveStacks(fleet.fleetFile)).get('host-0006')).toEqual(['hello']);
  });

  it('pauses when the budget is exceeded and the plan says pause; resumed, it accepts those failures and goes on', async () => {
    const ids = hosts(10, 6);
    fleet.setFaults({ rules: [{ kind: 'verifyFailure', hosts: ['host-0010', 'host-0011', 'host-0012', 'host-0013', 'host-0014', 'host-0015'].slice(0, 2), result: 'wrong' }] });
    const s = await start(
      { name: 'pausing', payloads: [{ file: hello.file }], hosts: { ids }, waves: [{ name: 'all', hosts: '100%' }], concurrency: 1, onFailure: 'pause', verify: { call: 'xen_extra_version', expect: 'Hello World' } },
      'pausing-1',
    );
    let p: RolloutProgress;
    const deadline = Date.now() + 30_000;
    for (p = await s.handle.query(progressQuery); p.status !== 'paused'; p = await s.handle.query(progressQuery)) {
      if (Date.now() > deadline) throw new Error(`never paused: ${JSON.stringify(p)}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(p.decisions.at(-1)).toMatchObject({ action: 'paused', by: { kind: 'system', id: 'fleetpatch' } });
    expect(p.decisions.at(-1)!.reason).toMatch(/^failure budget exceeded: wave "all" failed on 1 of 6 hosts/);
    fleet.setFaults({ rules: [] });
    await s.handle.executeUpdate(resumeUpdate, { args: [{ by: ops, reason: 'the failing hosts are known bad; go on' }] });
    const done = await s.handle.result();
    expect(done.status).toBe('succeeded');
    expect(done.waves[0]).toMatchObject({ planned: 6, failed: 1, patched: 5 });
  });
});
