/**
 * A repair's batch after a crash, run as activities in Temporal's MockActivityEnvironment against
 * real PostgreSQL and an emulated fleet: the repair records each host's outcome as its own (not
 * dropped as the rollout's), and a retried batch of the same repair, which takes back the host its
 * dead attempt held, records every fact once: nothing applied twice, nothing written twice.
 */
import { readFile } from 'node:fs/promises';
import { MockActivityEnvironment } from '@temporalio/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createActivities, type Activities } from '../../activities/index.ts';
import { createActivityDeps } from '../../src/app/activity-deps.ts';
import { FleetClient } from '../../src/agent/client.ts';
import { EmulatorAdmin, startFleetServer, type RunningFleet } from '../../src/emulator/index.ts';
import { claimHosts } from '../../src/events/sql/claims.ts';
import { EventStore } from '../../src/events/store.ts';
import { readPlanFile, resolvePlanPayloads } from '../../src/control/rollouts.ts';
import { createLogger } from '../../src/runtime/logger.ts';
import type { ResolvedPlan } from '../../src/rollout/types.ts';
import { createTestDatabase, type TestDatabase } from '../support/database.ts';
import { hostEvents, IMAGE_A, tempDir, writePayload, writePlan, type BuiltPayload } from '../support/rollout.ts';
import '../support/signing.ts';

const actor = { kind: 'user' as const, id: 'test' };
let db: TestDatabase;
let fleet: RunningFleet;
let acts: Activities;
let fix: BuiltPayload;
let dir: string;

beforeAll(async () => {
  db = await createTestDatabase();
  fleet = await startFleetServer({ hosts: 3, images: [IMAGE_A], seed: 3, port: 0, actionDurationMs: 20 });
  dir = await tempDir('repair-batch');
  fix = await writePayload(dir, 'fix', { funcs: [{ target: 'xen_extra_version', returns: '-fix' }] }, IMAGE_A);
  const logger = createLogger('warn', { destination: { write: () => undefined } });
  acts = createActivities(createActivityDeps({ pool: db.pool, fleetFile: fleet.fleetFile, logger, actionDeadlineMs: 10_000 }));
});

afterAll(async () => {
  await fleet?.close();
  await db?.drop();
});

function env(workflowId: string, attempt: number): MockActivityEnvironment {
  return new MockActivityEnvironment({ workflowExecution: { workflowId, runId: 'run-1' }, activityId: '7', attempt, heartbeatTimeoutMs: 10_000 });
}

const batch = (plan: ResolvedPlan, wave: number, waveName: string, planned: number, repair?: string) => ({
  rolloutId: 'again',
  wave,
  waveName,
  ...(repair ? { repair } : {}),
  step: 0,
  lanes: 2,
  mode: plan.mode,
  payloads: plan.payloads,
  budget: plan.budget,
  waves: [{ name: 'all', planned: wave === 0 ? planned : 0 }, ...(wave === 1 ? [{ name: waveName, planned }] : [])],
  ...(plan.verify ? { verify: plan.verify } : {}),
});

describe('a repair batch', () => {
  it('records every host it repairs as the repair\'s own outcome, and a retried batch writes nothing twice', { timeout: 90_000 }, async () => {
    const hosts = ['host-0000', 'host-0001', 'host-0002'];
    const { plan: p, dir: d, file } = await readPlanFile(
      await writePlan(dir, { name: 'again', payloads: [{ file: fix.file }], hosts: { ids: hosts }, waves: [{ name: 'all', hosts: '100%' }], concurrency: 2, verify: { call: 'xen_extra_version', expect: '-fix' } }),
    );
    const plan = await resolvePlanPayloads(p, d, { pool: db.pool, actor, store: true, planFile: file });
    await env('rollout-again', 1).run(acts.preflight, { rolloutId: 'again', plan });
    expect(await env('rollout-again', 1).run(acts.patchBatch, batch(plan, 0, 'all', 3))).toMatchObject({ patched: 3, failed: 0 });

    const fleetClient = await FleetClient.open(fleet.fleetFile);
    for (const id of hosts) await fleetClient.host(id).reboot({ downMs: 0 });
    const repairId = 'rollout-again/repair-1';
    expect(await env(repairId, 1).run(acts.prepareRepair, { rolloutId: 'again', wave: 1, repairsFrom: 1, mode: plan.mode, payloads: plan.payloads })).toEqual({ checked: 3, lost: 3 });

    // Attempt 1 of the repair's batch claimed a host, uploaded and applied the payload, and died before recording either.
    const claim = await claimHosts(db.pool, { rolloutId: 'again', wave: 1, step: 0, claimant: `${repairId}/run-1/7#1`, leaseMs: 60_000, limit: 1 });
    expect(claim.kind).toBe('claimed');
    const held = (claim as { hosts: { hostId: string }[] }).hosts[0]!.hostId;
    const agent = fleetClient.host(held);
    await agent.upload('fix', await readFile(fix.file));
    await agent.action('fix', 'apply');
    await agent.waitForAction('fix', { pollMs: 5, deadlineMs: 5_000 });

    // Attempt 2 takes the held host back first, then the rest.
    const r = await env(repairId, 2).run(acts.patchBatch, batch(plan, 1, 'repair-1', 3, 'repair-1'));
    expect(r).toMatchObject({ patched: 3, failed: 0, stopped: 'done' });

    const store = new EventStore(db.pool);
    const outcomes = async () => (await store.readStream('rollout-again')).flatMap(({ event: e }) => (e.type === 'HostPatchFinished' ? [`${e.hostId}:${e.wave}:${e.outcome}`] : []));
    expect((await outcomes()).sort()).toEqual(hosts.flatMap((h) => [`${h}:all:patched`, `${h}:repair-1:patched`]).sort());
    const admin = await EmulatorAdmin.open(fleet.fleetFile);
    for (const id of hosts) {
      expect((await fleetClient.host(id).listAll()).appliedStack.map((e) => e.name), id).toEqual(['fix']);
      const journal = (await admin.journal(id))[id] ?? [];
      const boot = journal.filter((e) => e.kind === 'rebooted').at(-1)!.boot;
      expect(journal.filter((e) => e.kind === 'applied' && e.boot === boot), id).toHaveLength(1);
      const events = (await hostEvents(db.pool, id)).map((e) => e.event.type);
      const since = events.slice(events.lastIndexOf('HostRebooted') + 1);
      expect(since.filter((t) => t === 'PayloadApplied'), id).toHaveLength(1);
      expect(since.filter((t) => t === 'PayloadUploaded'), id).toHaveLength(1);
      // The held host already ran the payload when attempt 2 read it: nothing to start, only to restate.
      expect(since.filter((t) => t === 'HostPatchStarted'), id).toHaveLength(id === held ? 0 : 1);
      expect(events, id).not.toContain('DriftDetected');
    }

    // Retried once more (its completion was lost): nothing left to claim, nothing written.
    const count = async () => (await store.readAll(0, 100_000)).length;
    const before = await count();
    expect(await env(repairId, 3).run(acts.patchBatch, batch(plan, 1, 'repair-1', 3, 'repair-1'))).toMatchObject({ patched: 0, failed: 0, stopped: 'done' });
    expect(await count()).toBe(before);
  });
});
