/**
 * A REPLACE that fails after the hypervisor reverted the stack, run as activities against real
 * PostgreSQL and an emulated fleet: the host is restored to the stack it ran, and every check and
 * change the hypervisor made on the way is recorded.
 */
import { MockActivityEnvironment } from '@temporalio/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { everyChangeRecorded, everyCheckRecorded, nothingAppliedTwice } from '../../chaos/invariants.ts';
import { createActivities, type Activities } from '../../activities/index.ts';
import { createActivityDeps } from '../../src/app/activity-deps.ts';
import { EmulatorAdmin, startFleetServer, type RunningFleet } from '../../src/emulator/index.ts';
import { EventStore } from '../../src/events/store.ts';
import { readPlanFile, resolvePlanPayloads } from '../../src/control/rollouts.ts';
import { createLogger } from '../../src/runtime/logger.ts';
import type { ResolvedPlan } from '../../src/rollout/types.ts';
import { createTestDatabase, type TestDatabase } from '../support/database.ts';
import { IMAGE_A, tempDir, writePayload, writePlan, type BuiltPayload } from '../support/rollout.ts';
import '../support/signing.ts';

const actor = { kind: 'user' as const, id: 'test' };
let db: TestDatabase;
let fleet: RunningFleet;
let acts: Activities;
let fix: BuiltPayload;
let fix2: BuiltPayload;
let dir: string;

beforeAll(async () => {
  db = await createTestDatabase();
  fleet = await startFleetServer({ hosts: 1, images: [IMAGE_A], seed: 3, port: 0, actionDurationMs: 20 });
  dir = await tempDir('replace-failure');
  fix = await writePayload(dir, 'fix', { funcs: [{ target: 'xen_extra_version', returns: '-fix' }], writableData: 8 }, IMAGE_A);
  fix2 = await writePayload(dir, 'fix2', { funcs: [{ target: 'xen_extra_version', returns: '-fix2' }] }, IMAGE_A);
  const logger = createLogger('warn', { destination: { write: () => undefined } });
  acts = createActivities(createActivityDeps({ pool: db.pool, fleetFile: fleet.fleetFile, logger, actionDeadlineMs: 10_000 }));
});

afterAll(async () => {
  await fleet?.close();
  await db?.drop();
});

const env = (workflowId: string) => new MockActivityEnvironment({ workflowExecution: { workflowId, runId: 'run-1' }, activityId: '7', attempt: 1, heartbeatTimeoutMs: 10_000 });

async function rollout(name: string, payload: BuiltPayload, mode: 'apply' | 'replace', expect: string): Promise<ResolvedPlan> {
  const { plan: p, dir: d, file } = await readPlanFile(
    await writePlan(dir, { name, payloads: [{ file: payload.file }], mode, hosts: { ids: ['host-0000'] }, waves: [{ name: 'all', hosts: '100%' }], concurrency: 1, budget: { perWave: 1, total: 1 }, verify: { call: 'xen_extra_version', expect } }),
  );
  const plan = await resolvePlanPayloads(p, d, { pool: db.pool, actor, store: true, planFile: file });
  await env(`rollout-${name}`).run(acts.preflight, { rolloutId: name, plan });
  return plan;
}
const batch = (rolloutId: string, plan: ResolvedPlan) => ({ rolloutId, wave: 0, waveName: 'all', step: 0, lanes: 1, mode: plan.mode, payloads: plan.payloads, budget: plan.budget, waves: [{ name: 'all', planned: 1 }], ...(plan.verify ? { verify: plan.verify } : {}) });

describe('a REPLACE that fails after reverting the stack', () => {
  it('is restored to the stack the host ran, every change and check on the way recorded', { timeout: 60_000 }, async () => {
    const first = await rollout('first', fix, 'apply', '-fix');
    expect(await env('rollout-first').run(acts.patchBatch, batch('first', first))).toMatchObject({ patched: 1 });
    fleet.setFaults({ rules: [{ kind: 'applyFailure', hosts: ['host-0000'], payload: 'fix2', errno: 'EINVAL', reason: 'no' }] });
    const second = await rollout('second', fix2, 'replace', '-fix2');
    expect(await env('rollout-second').run(acts.patchBatch, batch('second', second))).toMatchObject({ failed: 1 });
    fleet.setFaults({ rules: [] });
    const admin = await EmulatorAdmin.open(fleet.fleetFile);
    // The hypervisor reverted fix before the REPLACE failed; the restore put it back, from its stored file.
    expect((await admin.journal('host-0000'))['host-0000']!.filter((e) => e.kind !== 'checked').map((e) => `${e.kind} ${e.name}`)).toEqual([
      'uploaded fix', 'applied fix', 'uploaded fix2', 'reverted fix', 'failed fix2', 'unloaded fix', 'uploaded fix', 'applied fix', 'unloaded fix2',
    ]);
    const outcome = (await new EventStore(db.pool).readStream('rollout-second')).map((e) => e.event).find((e) => e.type === 'HostPatchFinished');
    expect(outcome).toMatchObject({ outcome: 'failed', failure: { stage: 'replace', code: 'EINVAL' }, restore: { outcome: 'restored', stackNow: [{ name: 'fix' }] } });
    const journal = await (await EmulatorAdmin.open(fleet.fleetFile)).journal();
    const events = (await new EventStore(db.pool).readAll(0, 100_000)).map((e) => e.event);
    const ours = new Set([fix.buildId, fix2.buildId]);
    expect(everyChangeRecorded(journal, events).problems).toEqual([]);
    expect(everyCheckRecorded(journal, events).problems).toEqual([]);
    expect(nothingAppliedTwice(journal, ours).problems).toEqual([]);
  });
});

describe('a REPLACE whose restore fails too, rolled back later', () => {
  it('records every check the hypervisor makes in the rollback, none taken for the failed restore\'s', { timeout: 60_000 }, async () => {
    const hostId = 'host-0000';
    const third = await rollout('third', fix2, 'replace', '-fix2');
    // Every APPLY and REPLACE on the host fails: the REPLACE, then the restore's re-apply of fix.
    fleet.setFaults({ rules: [{ kind: 'applyFailure', hosts: [hostId], errno: 'EINVAL', reason: 'no' }] });
    expect(await env('rollout-third').run(acts.patchBatch, batch('third', third))).toMatchObject({ failed: 1 });
    fleet.setFaults({ rules: [] });
    const store = new EventStore(db.pool);
    const finished = (await store.readStream('rollout-third')).map((e) => e.event).find((e) => e.type === 'HostPatchFinished');
    expect(finished).toMatchObject({ outcome: 'failed', restore: { outcome: 'failed' } });

    expect(await env('rollout-third/rollback-1').run(acts.prepareRollback, { rollbackId: 'rollout-third/rollback-1', rolloutId: 'third' })).toBe(1);
    expect(await env('rollout-third/rollback-1').run(acts.rollbackBatch, { rollbackId: 'rollout-third/rollback-1', rolloutId: 'third', lanes: 1, ours: [fix2.buildId], verifyCall: 'xen_extra_version' })).toEqual({ restored: 1 });
    const journal = await (await EmulatorAdmin.open(fleet.fleetFile)).journal();
    expect(journal[hostId]!.filter((e) => e.kind === 'applied').map((e) => e.name).at(-1)).toBe('fix');
    const events = (await store.readAll(0, 100_000)).map((e) => e.event);
    expect(everyCheckRecorded(journal, events).problems).toEqual([]);
    expect(everyChangeRecorded(journal, events).problems).toEqual([]);
    expect(nothingAppliedTwice(journal, new Set([fix.buildId, fix2.buildId])).problems).toEqual([]);
    const health = events.filter((e) => e.type === 'HealthChecked' && e.correlation?.workflowId === 'rollout-third/rollback-1');
    expect(health).toEqual([expect.objectContaining({ outcome: 'healthy' })]);
  });
});
