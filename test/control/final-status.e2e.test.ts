/**
 * Every accepted rollout ends with a final status in the event store, whatever stops it: a reason
 * the store refuses, a preflight that cannot record a host, a rollback whose activity fails, a
 * cancellation through Temporal. The store is read as every reader reads it (the summary's fold),
 * and the hosts are checked on the hypervisors.
 */
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { ApplicationFailure } from '@temporalio/common';
import { WorkflowFailedError } from '@temporalio/client';
import { createActivities } from '../../activities/index.ts';
import { createActivityDeps } from '../../src/app/activity-deps.ts';
import { readPlanFile, resolvePlanPayloads, startRollout } from '../../src/control/rollouts.ts';
import { liveProgress, startRollback } from '../../src/control/steer.ts';
import { recordEndedRollouts } from '../../src/control/ended-rollouts.ts';
import { hostImage, startFleetServer, type RunningFleet } from '../../src/emulator/index.ts';
import { EventStore } from '../../src/events/store.ts';
import { rolloutStream } from '../../src/events/streams.ts';
import { foldRolloutSummary } from '../../src/events/projections/rollout-summary.ts';
import type { PlanInput } from '../../src/rollout/plan.ts';
import type { ResolvedPlan } from '../../src/rollout/types.ts';
import { createLogger } from '../../src/runtime/logger.ts';
import { startWorker, type RunningWorker } from '../../src/runtime/worker.ts';
import { progressQuery } from '../../workflows/messages.ts';
import type { rolloutWorkflow } from '../../workflows/rollout.ts';
import { createTestDatabase, type TestDatabase } from '../support/database.ts';
import { saveHistory } from '../support/histories.ts';
import { startTestWorker, type TestTemporal } from '../support/temporal.ts';
import { IMAGE_A, liveStacks, tempDir, writePayload, writePlan } from '../support/rollout.ts';

const alice = { kind: 'user' as const, id: 'alice' };

describe('a rollout that was accepted always ends recorded', () => {
  let db: TestDatabase;
  let fleet: RunningFleet;
  let temporal: TestTemporal;
  /** A worker whose rollback tally always fails, as an activity that gives up does. */
  let faulty: RunningWorker;
  const faultyQueue = `faulty-${Math.random().toString(16).slice(2, 10)}`;
  let dir: string;
  let fixFile: string;

  beforeAll(async () => {
    db = await createTestDatabase();
    fleet = await startFleetServer({ hosts: 8, images: [hostImage(IMAGE_A)], seed: 29 });
    temporal = await startTestWorker({ pool: db.pool, fleetFile: fleet.fleetFile });
    const logger = createLogger('error', { pretty: false, name: 'test' });
    const activities = createActivities(createActivityDeps({ pool: db.pool, fleetFile: fleet.fleetFile, logger }));
    faulty = await startWorker({
      address: inject('temporalAddress'),
      namespace: inject('temporalNamespace'),
      taskQueue: faultyQueue,
      logger,
      activities: {
        ...activities,
        rollbackTally: async () => {
          throw ApplicationFailure.nonRetryable('injected: the rollback tally cannot be read', 'INTERNAL');
        },
      },
      workflowBundlePath: inject('workflowBundlePath'),
    });
    dir = await tempDir('final-status');
    fixFile = (await writePayload(dir, 'fix', { funcs: [{ target: 'xen_extra_version', returns: '-fix' }] }, IMAGE_A)).file;
  });

  afterAll(async () => {
    await faulty?.shutdown();
    await temporal?.close();
    await fleet?.close();
    await db?.drop();
  });

  const resolve = async (plan: PlanInput): Promise<ResolvedPlan> => {
    const { plan: p, dir: d, file } = await readPlanFile(await writePlan(dir, plan));
    return resolvePlanPayloads(p, d, { pool: db.pool, actor: alice, store: true, planFile: file });
  };
  const recorded = async (id: string) => {
    const events = await new EventStore(db.pool).readStream(rolloutStream(id));
    return { types: events.map((e) => e.event.type), events: events.map((e) => e.event), summary: foldRolloutSummary(id, events) };
  };

  it('a reason the store refuses: the start is recorded without it, and the rollout ends failed, recorded, with no host touched', { timeout: 180_000 }, async () => {
    const hosts = ['host-0000', 'host-0001'];
    const plan = await resolve({ name: 'long-reason', payloads: [{ file: fixFile }], hosts: { ids: hosts }, waves: [{ name: 'all', hosts: '100%' }] });
    // The edges refuse it (src/control, and the API and CLI before it) ...
    await expect(startRollout(temporal.client, temporal.taskQueue, plan, { requestedBy: alice, rolloutId: 'long-reason-0', reason: 'x'.repeat(3000) })).rejects.toMatchObject({ code: 'ARGUMENT', message: expect.stringContaining('at most 1000 are recorded') });
    // ... and a caller that goes round them straight to Temporal still gets a recorded end.
    const workflowId = 'rollout-long-reason-1';
    const handle = await temporal.client.workflow.start<typeof rolloutWorkflow>('rolloutWorkflow', { taskQueue: temporal.taskQueue, workflowId, args: [{ rolloutId: 'long-reason-1', plan, requestedBy: alice, reason: 'x'.repeat(3000) }] });
    const s = { handle, workflowId };
    const result = await s.handle.result();
    expect(result.status).toBe('failed');
    await saveHistory(temporal.client, s.workflowId, 'rollout-error-recorded');
    expect(result.stopReason).toMatch(/^the rollout stopped on an error: EVENT_INVALID: event RolloutStarted does not match the catalogue: .*reason: /);
    const r = await recorded('long-reason-1');
    expect(r.types).toEqual(['RolloutStarted', 'RolloutFinished']);
    expect(r.events[0]).not.toHaveProperty('reason');
    expect(r.events[1]).toMatchObject({ status: 'failed', reason: result.stopReason });
    expect(r.summary).toMatchObject({ status: 'failed', planName: 'long-reason', finishReason: result.stopReason });
    const stacks = await liveStacks(fleet.fleetFile);
    for (const id of hosts) expect(stacks.get(id)).toEqual([]);
  });

  it('a host id the preflight cannot record: the rollout ends failed, recorded, instead of "running" for ever', { timeout: 180_000 }, async () => {
    const valid = await resolve({ name: 'nul-host', payloads: [{ file: fixFile }], hosts: { ids: ['host-0002'] }, waves: [{ name: 'all', hosts: '100%' }] });
    // What a plan that slipped past validation would carry: the workflow must cope with it too.
    const plan: ResolvedPlan = { ...valid, hosts: { ids: ['host-0002', 'x\u0000y'] } };
    const s = await startRollout(temporal.client, temporal.taskQueue, plan, { requestedBy: alice, rolloutId: 'nul-host-1' });
    const result = await s.handle.result();
    expect(result.status).toBe('failed');
    expect(result.stopReason).toMatch(/^the rollout stopped on an error: preflight failed: /);
    const r = await recorded('nul-host-1');
    expect(r.types[0]).toBe('RolloutStarted');
    expect(r.types.at(-1)).toBe('RolloutFinished');
    expect(r.summary.status).toBe('failed');
    expect(r.summary.finishReason).toBe(result.stopReason);
    expect((await liveStacks(fleet.fleetFile)).get('host-0002')).toEqual([]);
  });

  it('a rollback whose activity fails: its end is recorded (incomplete), and the rollout reads rollback-incomplete everywhere', { timeout: 180_000 }, async () => {
    const hosts = ['host-0003', 'host-0004'];
    const plan = await resolve({ name: 'undo', payloads: [{ file: fixFile }], hosts: { ids: hosts }, waves: [{ name: 'all', hosts: '100%' }] });
    const s = await startRollout(temporal.client, temporal.taskQueue, plan, { requestedBy: alice, rolloutId: 'undo-1' });
    expect((await s.handle.result()).status).toBe('succeeded');
    const rb = await startRollback(temporal.client, faultyQueue, 'undo-1', alice, 'undo it');
    await expect(rb.result()).rejects.toThrow(WorkflowFailedError);
    await saveHistory(temporal.client, rb.workflowId, 'rollback-error-recorded');
    const r = await recorded('undo-1');
    expect(r.types).toContain('RollbackStarted');
    expect(r.types.at(-1)).toBe('RollbackFinished');
    expect(r.events.at(-1)).toMatchObject({ outcome: 'rollback-incomplete' });
    expect(r.summary.status).toBe('rollback-incomplete');
    expect(r.summary.rollback).toMatchObject({ status: 'finished', outcome: 'rollback-incomplete' });
    // Temporal's side says the same: the rollback stopped on an error.
    const live = await liveProgress(temporal.client, 'undo-1');
    expect('progress' in live && live.progress).toMatchObject({ status: 'rollback-incomplete', rollback: { status: 'failed', requestedBy: alice, reason: 'undo it' } });
    expect('progress' in live && live.progress.rollback?.error).toMatch(/injected: the rollback tally cannot be read/);
  });

  it('a rollout cancelled through Temporal ends aborted, recorded, and its workflow says cancelled', { timeout: 180_000 }, async () => {
    const plan = await resolve({ name: 'cancelled', payloads: [{ file: fixFile }], hosts: { ids: ['host-0005', 'host-0006'] }, waves: [{ name: 'canary', hosts: 1 }, { name: 'rest', hosts: '100%' }], gates: [{ after: 'canary', approval: true }] });
    const s = await startRollout(temporal.client, temporal.taskQueue, plan, { requestedBy: alice, rolloutId: 'cancelled-1' });
    for (let i = 0; (await s.handle.query(progressQuery)).status !== 'awaiting-approval'; i++) {
      if (i > 300) throw new Error('never reached its gate');
      await new Promise((r) => setTimeout(r, 200));
    }
    await s.handle.cancel();
    await expect(s.handle.result()).rejects.toThrow(WorkflowFailedError);
    expect((await s.handle.describe()).status.name).toBe('CANCELLED');
    await saveHistory(temporal.client, s.workflowId, 'rollout-cancelled-recorded');
    const r = await recorded('cancelled-1');
    expect(r.types.at(-1)).toBe('RolloutFinished');
    expect(r.events.at(-1)).toMatchObject({ status: 'aborted', reason: expect.stringMatching(/^the rollout's workflow was cancelled in Temporal/) });
    expect(r.summary.status).toBe('aborted');
  });
  it("a rollout terminated in Temporal runs no code again: the workers' sweep records its end, with who terminated it and why, and leaves running rollouts alone", { timeout: 180_000 }, async () => {
    const gated = (name: string, ids: string[]) => resolve({ name, payloads: [{ file: fixFile }], hosts: { ids }, waves: [{ name: 'canary', hosts: 1 }, { name: 'rest', hosts: '100%' }], gates: [{ after: 'canary', approval: true }] });
    const killed = await startRollout(temporal.client, temporal.taskQueue, await gated('terminated', ['host-0007', 'host-0001']), { requestedBy: alice, rolloutId: 'terminated-1' });
    const alive = await startRollout(temporal.client, temporal.taskQueue, await gated('alive', ['host-0000', 'host-0002']), { requestedBy: alice, rolloutId: 'alive-1' });
    for (const s of [killed, alive]) {
      for (let i = 0; (await s.handle.query(progressQuery)).status !== 'awaiting-approval'; i++) {
        if (i > 300) throw new Error('never reached its gate');
        await new Promise((r) => setTimeout(r, 200));
      }
    }
    await killed.handle.terminate('stuck canary, killed by hand');
    expect((await recorded('terminated-1')).summary.status).not.toBe('aborted');

    const store = new EventStore(db.pool);
    const ends = await recordEndedRollouts(temporal.client, store);
    expect(ends).toEqual([{ rolloutId: 'terminated-1', status: 'aborted', reason: expect.stringMatching(/^its workflow was terminated in Temporal by .*: "stuck canary, killed by hand", so it could not record its own end/) }]);
    const r = await recorded('terminated-1');
    expect(r.types.at(-1)).toBe('RolloutFinished');
    expect(r.events.at(-1)).toMatchObject({ status: 'aborted', actor: { kind: 'system', id: 'fleetpatch' } });
    expect(r.summary).toMatchObject({ status: 'aborted', finishReason: ends[0]!.reason });
    // Twice, or by two workers at once: recorded once.
    await Promise.all([recordEndedRollouts(temporal.client, store), recordEndedRollouts(temporal.client, store)]);
    expect((await recorded('terminated-1')).types.filter((t) => t === 'RolloutFinished')).toHaveLength(1);
    // The rollout that still runs is untouched and still steerable.
    expect((await recorded('alive-1')).types).not.toContain('RolloutFinished');
    expect((await alive.handle.query(progressQuery)).status).toBe('awaiting-approval');
    await alive.handle.terminate('test over');
  });
});
