/**
 * A rollback that always restores, end to end on real services, with payloads and a hypervisor
 * built by gcc/ld/objcopy the way Xen's test Makefile builds them (xen_hello_world has .bss, so
 * Xen never applies it again once reverted). Every verdict is read from the emulated hypervisors
 * themselves, not from fleetpatch's events; the events are then checked to tell the same story.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadImageFile, startFleetServer, type RunningFleet } from '../../src/emulator/index.ts';
import { FleetClient } from '../../src/agent/index.ts';
import { describeProgress, type Started } from '../../src/cli/rollouts.ts';
import { startRollback } from '../../src/control/steer.ts';
import { main } from '../../src/cli/main.ts';
import { memoryIO } from '../../src/cli/io.ts';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { EventStore } from '../../src/events/store.ts';
import type { PlanInput } from '../../src/rollout/plan.ts';
import type { RolloutProgress } from '../../src/rollout/progress.ts';
import { approveUpdate } from '../../workflows/messages.ts';
import { buildPayload, readImage } from '../../src/payload/index.ts';
import { buildFixtures, type Fixtures } from '../fixtures/toolchain.ts';
import { createTestDatabase, type TestDatabase } from '../support/database.ts';
import { startTestWorker, type TestTemporal } from '../support/temporal.ts';
import { saveHistory } from '../support/histories.ts';
import { hostEvents, replayDifferences, startPlan, tempDir, writePlan, untilProgress } from '../support/rollout.ts';

const ops = { kind: 'user' as const, id: 'ops' };

interface HostView {
  stack: string[];
  loaded: string[];
  extraVersion: string | number | null;
}

describe('a rollback that restores every host it touched (gcc-built payloads with .bss)', () => {
  let fx: Fixtures;
  let db: TestDatabase;
  let fleet: RunningFleet;
  let temporal: TestTemporal;
  let client: FleetClient;
  let dir: string;

  beforeAll(async () => {
    fx = await buildFixtures();
    db = await createTestDatabase();
    fleet = await startFleetServer({ hosts: 16, images: [await loadImageFile(fx.images.xen.path)], seed: 9 });
    temporal = await startTestWorker({ pool: db.pool, fleetFile: fleet.fleetFile });
    client = await FleetClient.open(fleet.fleetFile);
    dir = await tempDir('restore');
  });

  afterAll(async () => {
    await temporal?.close();
    await fleet?.close();
    await db?.drop();
  });

  const start = (plan: PlanInput, rolloutId: string) => startPlan({ client: temporal.client, taskQueue: temporal.taskQueue, pool: db.pool, dir, actor: ops }, plan, rolloutId);
  const hosts = (from: number, n: number) => Array.from({ length: n }, (_, i) => `host-${String(from + i).padStart(4, '0')}`);

  /** What the hypervisor itself says: applied stack, loaded payloads, what xen_extra_version returns. */
  async function view(id: string): Promise<HostView> {
    const list = await client.host(id).listAll();
    const call = await client.host(id).call('xen_extra_version');
    // Loaded payloads as a set: a payload uploaded afresh comes later in Xen's upload order.
    return { stack: list.appliedStack.map((e) => e.name), loaded: list.entries.map((e) => `${e.name}:${e.state}`).sort(), extraVersion: call.result };
  }
  const views = async (ids: string[]) => Object.fromEntries(await Promise.all(ids.map(async (id) => [id, await view(id)] as const)));

  const until = (s: Started, ok: (p: RolloutProgress) => boolean, timeoutMs?: number) => untilProgress(s, ok, timeoutMs === undefined ? { timeoutMs: 90_000 } : { ...{ timeoutMs: 90_000 }, timeoutMs });

  it('a REPLACE whose apply fails on hosts of wave 2 ends with every host back on [hello, bye], nothing of it loaded, "Bye World!" again', async () => {
    const ids = hosts(0, 6);
    const base = await start(
      { name: 'base', mode: 'stack', payloads: [{ file: fx.payloads.helloWorld.path }, { file: fx.payloads.byeWorld.path }], hosts: { ids }, waves: [{ name: 'all', hosts: '100%' }], concurrency: 6, allowUnsigned: true },
      'restore-base-1',
    );
    expect((await base.handle.result()).status).toBe('succeeded');
    const before = await views(ids);
    for (const id of ids) expect(before[id]).toEqual({ stack: ['xen_hello_world', 'xen_bye_world'], loaded: ['xen_bye_world:APPLIED', 'xen_hello_world:APPLIED'], extraVersion: 'Bye World!' });

    const s = await start(
      {
        name: 'replace',
        mode: 'replace',
        payloads: [{ file: fx.payloads.replaceWorld.path }],
        hosts: { ids },
        waves: [
          { name: 'canary', hosts: 2 },
          { name: 'rest', hosts: '100%' },
        ],
        gates: [{ after: 'canary', approval: true }],
        concurrency: 1,
        verify: { call: 'xen_extra_version', expect: 'Hello Again World!' },
        onFailure: 'rollback',
        allowUnsigned: true,
      },
      'restore-replace-1',
    );
    await until(s, (p) => p.status === 'awaiting-approval');
    // The canary is patched; the REPLACE will fail on the next two hosts of wave 2, after Xen has
    // already reverted their whole stack.
    const patched: Record<string, HostView> = await views(ids);
    const onCanary = ids.filter((id) => patched[id]!.stack.join() === 'xen_replace_world');
    expect(onCanary).toHaveLength(2);
    const failing = ids.filter((id) => !onCanary.includes(id)).slice(0, 2);
    fleet.setFaults({ rules: [{ kind: 'applyFailure', hosts: failing, payload: 'xen_replace_world', errno: 'EINVAL', reason: 'injected: patching failed' }] });
    await s.handle.executeUpdate(approveUpdate, { args: [{ by: ops, reason: 'canary healthy' }] });
    const result = await s.handle.result();
    fleet.setFaults({ rules: [] });

    expect(result.status).toBe('rolled-back');
    expect(result.rollback).toMatchObject({ status: 'finished', stackGrew: 0, unrecoverable: 0, failed: 0 });
    expect(result.rollback!.rolledBack + result.rollback!.nothingToDo).toBe(result.rollback!.hosts);
    // The failed host was restored at once, in its own failure path.
    expect(result.failures).toHaveLength(1);
    const failure = result.failures[0]!;
    expect(failing).toContain(failure.hostId);
    expect(failure).toMatchObject({ stage: 'replace', code: 'EINVAL' });
    expect(failure.restore).toBe('restored to its former stack');

    // The hypervisors say every host is exactly as it was.
    expect(await views(ids)).toEqual(before);
    // And the events tell the same story, step by step.
    expect(await replayDifferences(db.pool, fleet.fleetFile)).toEqual([]);
    for (const id of [...onCanary, failure.hostId]) {
      const evs = (await hostEvents(db.pool, id)).map((e) => e.event);
      const since = evs.slice(evs.findIndex((e) => e.type === 'HostPatchStarted' && e.rollout === 'restore-replace-1'));
      expect(since[0]).toMatchObject({ formerStack: [{ name: 'xen_hello_world' }, { name: 'xen_bye_world' }], formerResult: { call: 'xen_extra_version', value: 'Bye World!' } });
      const steps = since.filter((e) => ['PayloadReverted', 'PayloadUnloaded', 'PayloadUploaded', 'PayloadApplied', 'PayloadReplaced'].includes(e.type)).map((e) => `${e.type} ${(e as { payload: { name: string } }).payload.name}`);
      // hello has .bss: unloaded and uploaded afresh from the payload store before it is applied.
      // On the host whose REPLACE failed, Xen had already reverted the whole stack: the restore
      // finds that on the host and records it before it decides anything.
      expect(steps).toEqual(
        id === failure.hostId
          ? ['PayloadUploaded xen_replace_world', 'PayloadReverted xen_bye_world', 'PayloadReverted xen_hello_world', 'PayloadUnloaded xen_hello_world', 'PayloadUploaded xen_hello_world', 'PayloadApplied xen_hello_world', 'PayloadApplied xen_bye_world', 'PayloadUnloaded xen_replace_world']
          : ['PayloadUploaded xen_replace_world', 'PayloadReplaced xen_replace_world', 'PayloadReverted xen_replace_world', 'PayloadUnloaded xen_hello_world', 'PayloadUploaded xen_hello_world', 'PayloadApplied xen_hello_world', 'PayloadApplied xen_bye_world', 'PayloadUnloaded xen_replace_world'],
      );
      // fleetpatch checked each dependency before re-applying, and recorded it.
      const checks = since.filter((e) => e.type === 'DependencyChecked' && e.reason?.includes('to restore the former stack'));
      expect(checks.map((c) => `${(c as { payload: { name: string } }).payload.name}:${(c as { outcome: string }).outcome}`)).toEqual(['xen_hello_world:match', 'xen_bye_world:match']);
      const health = since.filter((e) => e.type === 'HealthChecked').at(-1);
      expect(health).toMatchObject({ outcome: 'healthy', observed: 'Bye World!' });
    }

    // The rollout's own stream says who rolled back, why, and how it ended.
    const rolloutEvents = (await new EventStore(db.pool).readStream('rollout-restore-replace-1')).map((e) => e.event);
    const touched = ids.filter((id) => result.waves[1]!.done > 0 && (onCanary.includes(id) || failure.hostId === id)).length;
    expect(rolloutEvents.find((e) => e.type === 'RollbackStarted')).toMatchObject({ actor: { kind: 'system' } });
    expect((rolloutEvents.find((e) => e.type === 'RollbackStarted') as { hosts: number }).hosts).toBeGreaterThanOrEqual(touched);
    expect(rolloutEvents.find((e) => e.type === 'RollbackFinished')).toMatchObject({ outcome: 'rolled-back', failed: 0 });
    expect(describeProgress(result).join('\n')).toContain('every host is back to its former stack');
    await saveHistory(temporal.client, 'rollout-restore-replace-1', 'rollout-replace-restore');
  });

  it('a stack rollout whose second payload fails verification restores every host, also one that had the first payload before', async () => {
    const ids = hosts(6, 5);
    // host-0006 already runs xen_hello_world, loaded by hand outside fleetpatch.
    const agent = client.host(ids[0]!);
    const { readFile } = await import('node:fs/promises');
    await agent.upload('xen_hello_world', await readFile(fx.payloads.helloWorld.path));
    await agent.action('xen_hello_world', 'apply');
    await agent.waitForAction('xen_hello_world');
    const before = await views(ids);
    expect(before[ids[0]!]!.stack).toEqual(['xen_hello_world']);

    // xen_bye_world answers wrongly on the fourth host to take it: verification fails there.
    fleet.setFaults({ rules: [{ kind: 'verifyFailure', hosts: [ids[3]!], payload: 'xen_bye_world', result: 'garbage' }] });
    const s = await start(
      {
        name: 'stacked',
        mode: 'stack',
        payloads: [{ file: fx.payloads.helloWorld.path }, { file: fx.payloads.byeWorld.path }],
        hosts: { ids },
        waves: [{ name: 'all', hosts: '100%' }],
        // All five at once: every host is touched before the failure stops the wave.
        concurrency: 5,
        verify: { call: 'xen_extra_version', expect: 'Bye World!' },
        onFailure: 'rollback',
        allowUnsigned: true,
      },
      'restore-stacked-1',
    );
    const result = await s.handle.result();
    fleet.setFaults({ rules: [] });
    expect(result.status).toBe('rolled-back');
    expect(result.failures[0]).toMatchObject({ hostId: ids[3], stage: 'verify', restore: 'restored to its former stack' });
    // Every step on the failed host recorded once: applied once, reverted once (no restated duplicates).
    const failedHost = (await hostEvents(db.pool, ids[3]!)).map((e) => e.event);
    for (const type of ['PayloadUploaded', 'PayloadApplied', 'PayloadReverted', 'PayloadUnloaded']) {
      expect(failedHost.filter((e) => e.type === type).map((e) => (e as { payload: { name: string } }).payload.name).sort(), type).toEqual(['xen_bye_world', 'xen_hello_world']);
    }
    expect(await views(ids)).toEqual(before);
    expect(before[ids[1]!]).toEqual({ stack: [], loaded: [], extraVersion: '-unstable' });
    expect(await replayDifferences(db.pool, fleet.fleetFile)).toEqual([]);
  });

  it('names the host it cannot restore because its payload was loaded outside fleetpatch: rollback-incomplete', async () => {
    const ids = hosts(11, 3);
    const { readFile } = await import('node:fs/promises');
    // A vendor's payload with .bss, loaded by hand: fleetpatch never had its bytes.
    const image = readImage(await readFile(fx.images.xen.path), 'xen-syms');
    const vendorBytes = buildPayload({ name: 'vendor_hello', funcs: [{ target: 'xen_changeset', returns: 'vendor build' }], writableData: 16 }, { image });
    for (const id of ids.slice(0, 1)) {
      await client.host(id).upload('vendor_hello', vendorBytes);
      await client.host(id).action('vendor_hello', 'apply');
      await client.host(id).waitForAction('vendor_hello');
    }
    const stranger = ids[0]!;
    const before = await views(ids);
    // The dry run says it before anything is touched.
    const planFile = await writePlan(dir, { name: 'replace-unknown', mode: 'replace', payloads: [{ file: fx.payloads.replaceWorld.path }], hosts: { ids }, waves: [{ name: 'all', hosts: '100%' }], allowUnsigned: true });
    const dry = memoryIO();
    Object.assign(process.env, { DATABASE_URL: db.url, FLEETPATCH_FLEET_FILE: fleet.fleetFile });
    try {
      expect(await main(['rollout', 'plan', planFile], dry)).toBe(0);
    } finally {
      delete process.env.DATABASE_URL;
      delete process.env.FLEETPATCH_FLEET_FILE;
    }
    expect(dry.stdout.join('\n')).toContain(`warning: 1 host(s) carry payloads with writable data that fleetpatch has no bytes for`);
    expect(dry.stdout.join('\n')).toContain(`  ${stranger}: vendor_hello`);

    fleet.setFaults({ rules: [{ kind: 'applyFailure', hosts: [stranger], payload: 'xen_replace_world' }] });
    const s = await start(
      { name: 'replace-unknown', mode: 'replace', payloads: [{ file: fx.payloads.replaceWorld.path }], hosts: { ids }, waves: [{ name: 'all', hosts: '100%' }], concurrency: 1, onFailure: 'rollback', allowUnsigned: true },
      'restore-unknown-1',
    );
    const result = await s.handle.result();
    fleet.setFaults({ rules: [] });

    expect(result.preflight?.unrestorable).toBe(1);
    expect(result.preflight?.unrestorableSamples).toEqual([{ hostId: stranger, payloads: ['vendor_hello'] }]);
    expect(result.status).toBe('rollback-incomplete');
    expect(result.rollback!.unrecoverable).toBe(1);
    expect(result.rollback!.problems).toEqual([
      expect.objectContaining({ hostId: stranger, outcome: 'unrecoverable', stackNow: [], formerStack: [expect.objectContaining({ name: 'vendor_hello' })] }),
    ]);
    const text = describeProgress(result).join('\n');
    expect(text).toMatch(/rollout restore-unknown-1 \(replace-unknown\): rollback-incomplete/);
    expect(text).toContain(`${stranger}: unrecoverable: stack now (empty), should be vendor_hello: vendor_hello`);
    expect(text).toContain('fleetpatch never had its bytes');
    // The other hosts are back; the stranger keeps nothing of ours loaded.
    const after = await views(ids);
    for (const id of ids.slice(1)) expect(after[id]).toEqual(before[id]);
    expect(after[stranger]!.loaded).toEqual(['vendor_hello:CHECKED']);
    expect(await replayDifferences(db.pool, fleet.fleetFile)).toEqual([]);

    // The operator stores the vendor's file (`fleetpatch payload store`) and rolls back again:
    // now the stranger gets its stack back too.
    const vendorFile = path.join(dir, 'vendor_hello.livepatch');
    await writeFile(vendorFile, vendorBytes);
    const io = memoryIO();
    process.env.DATABASE_URL = db.url;
    try {
      expect(await main(['payload', 'store', vendorFile, '--by', 'ops'], io)).toBe(0);
    } finally {
      delete process.env.DATABASE_URL;
    }
    expect(io.stdout.join('\n')).toMatch(/^stored: vendor_hello \(build-id [0-9a-f]+\)/);
    const rb = await (await startRollback(temporal.client, temporal.taskQueue, 'restore-unknown-1', ops, 'the vendor file is stored now')).result();
    expect(rb).toMatchObject({ outcome: 'rolled-back', unrecoverable: 0 });
    expect((await views([stranger]))[stranger]).toEqual(before[stranger]);
    expect(await replayDifferences(db.pool, fleet.fleetFile)).toEqual([]);
  });
});
