/**
 * The batch engine's crash-recovery paths, run as activities in Temporal's MockActivityEnvironment
 * against real PostgreSQL and an emulated fleet (no Temporal server): a retried batch takes back
 * the host its dead attempt held and finishes it from what the hypervisor says, restating what the
 * dead attempt did but never recorded; a batch of another workflow cannot touch a host whose lease
 * is alive; a lapsed lease makes the host claimable again.
 */
import { readFile } from 'node:fs/promises';
import { MockActivityEnvironment } from '@temporalio/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createActivities, type Activities } from '../../activities/index.ts';
import type { PatchBatchResult } from '../../activities/batch.ts';
import { createActivityDeps } from '../../src/app/activity-deps.ts';
import { FleetClient } from '../../src/agent/client.ts';
import { EmulatorAdmin, startFleetServer, type RunningFleet } from '../../src/emulator/index.ts';
import { claimHosts } from '../../src/events/sql/claims.ts';
import { setTimeout as sleep } from 'node:timers/promises';
import { readPlanFile, resolvePlanPayloads } from '../../src/control/rollouts.ts';
import { createLogger } from '../../src/runtime/logger.ts';
import type { ResolvedPlan } from '../../src/rollout/types.ts';
import { createTestDatabase, type TestDatabase } from '../support/database.ts';
import { hostEvents, IMAGE_A, tempDir, writePayload, writePlan, type BuiltPayload } from '../support/rollout.ts';
// Trusts the test signing key through FLEETPATCH_TRUSTED_KEYS, as a worker would.
import '../support/signing.ts';

const actor = { kind: 'user' as const, id: 'test' };
let db: TestDatabase;
let fleet: RunningFleet;
let acts: Activities;
let fix: BuiltPayload;
let dir: string;

beforeAll(async () => {
  db = await createTestDatabase();
  fleet = await startFleetServer({ hosts: 10, images: [IMAGE_A], seed: 1, port: 0, actionDurationMs: 20 });
  dir = await tempDir('batch-recovery');
  fix = await writePayload(dir, 'fix', { funcs: [{ target: 'xen_extra_version', returns: '-fix' }] }, IMAGE_A);
  const logger = createLogger('warn', { destination: { write: () => undefined } });
  acts = createActivities(createActivityDeps({ pool: db.pool, fleetFile: fleet.fleetFile, logger, actionDeadlineMs: 10_000 }));
});

afterAll(async () => {
  await fleet?.close();
  await db?.drop();
});

/** A rollout's preflight, as its workflow would run it: the work list is written, nothing changes on a host. */
async function prepare(rolloutId: string, hostIds: string[]): Promise<ResolvedPlan> {
  const { plan, dir: d, file } = await readPlanFile(
    await writePlan(dir, { name: rolloutId, payloads: [{ file: fix.file }], hosts: { ids: hostIds }, waves: [{ name: 'all', hosts: '100%' }], concurrency: 1, verify: { call: 'xen_extra_version', expect: '-fix' } }),
  );
  const resolved = await resolvePlanPayloads(plan, d, { pool: db.pool, actor, store: true, planFile: file });
  await env(`rollout-${rolloutId}`, 1).run(acts.preflight, { rolloutId, plan: resolved });
  return resolved;
}

/** An activity context of attempt `attempt` of activity 7 of a workflow run. */
function env(workflowId: string, attempt: number): MockActivityEnvironment {
  return new MockActivityEnvironment({ workflowExecution: { workflowId, runId: 'run-1' }, activityId: '7', attempt, heartbeatTimeoutMs: 10_000 });
}

function batch(rolloutId: string, plan: ResolvedPlan, planned: number) {
  return { rolloutId, wave: 0, waveName: 'all', step: 0, lanes: 1, mode: plan.mode, payloads: plan.payloads, budget: plan.budget, waves: [{ name: 'all', planned }], ...(plan.verify ? { verify: plan.verify } : {}) };
}

const applies = async (hostId: string) => ((await EmulatorAdmin.open(fleet.fleetFile).then((a) => a.journal(hostId)))[hostId] ?? []).filter((e) => e.kind === 'applied').length;

describe('requests per host', () => {
  it('patches a host in five requests and restores it in five, and the rollback ends on what the host reports', { timeout: 60_000 }, async () => {
    const hosts = ['host-0008', 'host-0009'];
    const plan = await prepare('requests', hosts);
    const admin = await EmulatorAdmin.open(fleet.fleetFile);
    const requests = async () => (await admin.stats()).requests - 1;
    // LIST and the former result at once, UPLOAD, APPLY (the host waits for the work), the verification.
    let before = await requests();
    expect(await env('rollout-requests', 1).run(acts.patchBatch, batch('requests', plan, 2))).toMatchObject({ patched: 2, failed: 0, stopped: 'done' });
    expect((await requests()) - before - 1).toBe(5 * hosts.length);

    // LIST, REVERT (waited for), UNLOAD, LIST (what the restore ends on), the former result again.
    expect(await env('rollback-requests', 1).run(acts.prepareRollback, { rollbackId: 'rb-requests', rolloutId: 'requests' })).toBe(2);
    before = await requests();
    const rb = { rollbackId: 'rb-requests', rolloutId: 'requests', lanes: 1, ours: plan.payloads.map((p) => p.buildId), verifyCall: 'xen_extra_version' };
    expect(await env('rollback-requests', 1).run(acts.rollbackBatch, rb)).toEqual({ restored: 2 });
    expect((await requests()) - before - 1).toBe(5 * hosts.length);
    const client = await FleetClient.open(fleet.fleetFile);
    for (const id of hosts) expect((await client.host(id).listAll()).entries).toEqual([]);
    const outcomes = await db.pool.query<{ data: { hostId: string; outcome: string; stackNow: unknown[] } }>(`SELECT data FROM events WHERE type = 'HostRollbackFinished' AND correlation->>'rolloutId' = 'requests'`);
    expect(outcomes.rows.map((r) => [r.data.hostId, r.data.outcome, r.data.stackNow]).sort()).toEqual(hosts.map((h) => [h, 'rolled-back', []]));
  });
});

describe('patchBatch after a crash', () => {
  it('a retried batch takes back the host its dead attempt held, applies nothing twice and records what the dead attempt did not', { timeout: 60_000 }, async () => {
    const hosts = ['host-0000', 'host-0001', 'host-0002'];
    const plan = await prepare('crash', hosts);
    // Attempt 1 claimed a host, uploaded and applied the payload, and died before recording either.
    const claim = await claimHosts(db.pool, { rolloutId: 'crash', wave: 0, step: 0, claimant: 'rollout-crash/run-1/7#1', leaseMs: 60_000, limit: 1 });
    expect(claim.kind).toBe('claimed');
    expect((claim as { hosts: unknown[] }).hosts).toHaveLength(1);
    const held = (claim as { hosts: { hostId: string }[] }).hosts[0]!.hostId;
    const agent = (await FleetClient.open(fleet.fleetFile)).host(held);
    await agent.upload('fix', await readFile(fix.file));
    await agent.action('fix', 'apply');
    await agent.waitForAction('fix', { pollMs: 5, deadlineMs: 5_000 });

    // Attempt 2 of the same activity: takes the held host back first, then the rest.
    const r: PatchBatchResult = await env('rollout-crash', 2).run(acts.patchBatch, batch('crash', plan, hosts.length));
    expect(r).toMatchObject({ stopped: 'done', failed: 0 });
    expect(r.patched + r.already).toBe(3);

    for (const id of hosts) {
      const list = await (await FleetClient.open(fleet.fleetFile)).host(id).listAll();
      expect(list.appliedStack.map((e) => e.name), id).toEqual(['fix']);
      // The hypervisor's own journal: applied once, never twice.
      expect(await applies(id), id).toBe(1);
      const events = (await hostEvents(db.pool, id)).map((e) => e.event.type);
      expect(events.filter((t) => t === 'PayloadApplied'), id).toHaveLength(1);
      expect(events.filter((t) => t === 'PayloadUploaded'), id).toHaveLength(1);
      expect(events, id).not.toContain('DriftDetected');
    }
  });

  it('a batch of another rollout run cannot take a host whose lease is alive; once it lapses, it can', { timeout: 60_000 }, async () => {
    const hosts = ['host-0003', 'host-0004'];
    const plan = await prepare('lease', hosts);
    // Another run's batch holds a host with a live lease and did nothing yet.
    const other = await claimHosts(db.pool, { rolloutId: 'lease', wave: 0, step: 0, claimant: 'rollout-lease/run-0/3#1', leaseMs: 60_000, limit: 1 });
    const held = (other as { hosts: { hostId: string }[] }).hosts[0]!.hostId;
    const free = hosts.find((h) => h !== held)!;

    const first = await env('rollout-lease', 1).run(acts.patchBatch, batch('lease', plan, hosts.length));
    expect(first).toMatchObject({ patched: 1, failed: 0, stopped: 'done' });
    const c = await FleetClient.open(fleet.fleetFile);
    expect((await c.host(free).listAll()).appliedStack.map((e) => e.name)).toEqual(['fix']);
    expect((await c.host(held).listAll()).entries).toEqual([]);

    // The holder vanished: its lease lapses and the host is claimable by the next batch.
    await db.pool.query(`UPDATE rollout_targets SET lease_until = now() - interval '1 second' WHERE rollout_id = 'lease' AND host_id = $1`, [held]);
    const second = await env('rollout-lease', 2).run(acts.patchBatch, batch('lease', plan, hosts.length));
    expect(second).toMatchObject({ patched: 1, failed: 0, stopped: 'done' });
    expect((await c.host(held).listAll()).appliedStack.map((e) => e.name)).toEqual(['fix']);
    expect(await applies(held)).toBe(1);
  });

  it('a held rollout (paused) stops a batch before it claims anything', { timeout: 60_000 }, async () => {
    const plan = await prepare('held', ['host-0005']);
    await env('rollout-held', 1).run(acts.setRolloutHold, { rolloutId: 'held', hold: 'paused' as const, reason: 'operator paused' });
    const r = await env('rollout-held', 1).run(acts.patchBatch, batch('held', plan, 1));
    expect(r).toMatchObject({ patched: 0, failed: 0, stopped: 'paused' });
    expect((await (await FleetClient.open(fleet.fleetFile)).host('host-0005').listAll()).entries).toEqual([]);
  });

  it('a host claimed ahead while the last one was applied goes back to the work list untouched when a pause came meanwhile', { timeout: 60_000 }, async () => {
    const plan = await prepare('ahead', ['host-0006', 'host-0007']);
    // A slow APPLY: the lane claims its next host while it runs, and the pause comes then.
    fleet.setFaults({ actionLatencyMs: 600 });
    try {
      const running = env('rollout-ahead', 1).run(acts.patchBatch, batch('ahead', plan, 2));
      const statuses = async () => (await db.pool.query<{ host_id: string; status: string; claimed_by: string | null }>(`SELECT host_id, status, claimed_by FROM rollout_targets WHERE rollout_id = 'ahead' ORDER BY position`)).rows;
      for (let i = 0; i < 200 && (await statuses()).some((r) => r.status !== 'running'); i++) await sleep(10);
      expect((await statuses()).map((r) => r.status)).toEqual(['running', 'running']);
      await env('rollout-ahead', 1).run(acts.setRolloutHold, { rolloutId: 'ahead', hold: 'paused' as const, reason: 'operator paused' });
      expect(await running).toMatchObject({ patched: 1, failed: 0, stopped: 'paused' });
      const rows = await statuses();
      expect(rows.map((r) => r.status).sort()).toEqual(['patched', 'planned']);
      const ahead = rows.find((r) => r.status === 'planned')!;
      expect(ahead.claimed_by).toBeNull();
      // Nothing happened on it, and nothing was recorded of it beyond the preflight.
      expect((await (await FleetClient.open(fleet.fleetFile)).host(ahead.host_id).listAll()).entries).toEqual([]);
      const facts = await db.pool.query<{ type: string; phase: string | null }>(`SELECT type, data->>'phase' AS phase FROM events WHERE stream_id = $1 ORDER BY stream_position`, [`host-${ahead.host_id}`]);
      expect(facts.rows.filter((r) => r.phase !== 'preflight').map((r) => r.type)).toEqual([]);

      // Resumed, a new batch claims it again and patches it.
      await env('rollout-ahead', 1).run(acts.clearRolloutHold, { rolloutId: 'ahead' });
      fleet.setFaults({ actionLatencyMs: 0 });
      expect(await env('rollout-ahead', 2).run(acts.patchBatch, batch('ahead', plan, 2))).toMatchObject({ patched: 1, stopped: 'done' });
      expect(await applies(ahead.host_id)).toBe(1);
    } finally {
      fleet.setFaults({});
    }
  });
});
