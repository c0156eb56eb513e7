import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WorkflowUpdateFailedError } from '@temporalio/client';
import { hostImage, startFleetServer, type RunningFleet } from '../../src/emulator/index.ts';
import type { Started } from '../../src/control/rollouts.ts';
import { EventStore } from '../../src/events/store.ts';
import { rolloutStream } from '../../src/events/streams.ts';
import { abortUpdate, approveUpdate, pauseUpdate, progressQuery, resumeUpdate } from '../../workflows/messages.ts';
import type { PlanInput } from '../../src/rollout/plan.ts';
import type { RolloutProgress } from '../../src/rollout/progress.ts';
import { createTestDatabase, type TestDatabase } from '../support/database.ts';
import { startTestWorker, type TestTemporal } from '../support/temporal.ts';
import { saveHistory } from '../support/histories.ts';
import { IMAGE_A, liveStacks, startPlan, tempDir, writePayload, writePlan, type BuiltPayload, untilProgress } from '../support/rollout.ts';

const alice = { kind: 'user' as const, id: 'alice' };
const bob = { kind: 'user' as const, id: 'bob' };

const until = (s: Started, ok: (p: RolloutProgress) => boolean, timeoutMs?: number) => untilProgress(s, ok, timeoutMs === undefined ? { timeoutMs: 30_000, pollMs: 100 } : { ...{ timeoutMs: 30_000, pollMs: 100 }, timeoutMs });

async function refusal(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (e) {
    expect(e).toBeInstanceOf(WorkflowUpdateFailedError);
    return ((e as WorkflowUpdateFailedError).cause as Error).message;
  }
  throw new Error('the update was accepted');
}

describe('steering a rollout: approval gates, pause, resume, abort', () => {
  let db: TestDatabase;
  let fleet: RunningFleet;
  let temporal: TestTemporal;
  let dir: string;
  let fix: BuiltPayload;

  beforeAll(async () => {
    db = await createTestDatabase();
    // Every action stays pending for 600 ms: slow enough to steer the rollout mid-wave (the live
    // view refreshes twice a second).
    fleet = await startFleetServer({ hosts: 12, images: [hostImage(IMAGE_A)], seed: 3, actionDurationMs: 600 });
    temporal = await startTestWorker({ pool: db.pool, fleetFile: fleet.fleetFile });
    dir = await tempDir('controls');
    fix = await writePayload(dir, 'fix', { funcs: [{ target: 'xen_extra_version', returns: '-fix' }] }, IMAGE_A);
  });

  afterAll(async () => {
    await temporal?.close();
    await fleet?.close();
    await db?.drop();
  });

  const start = (plan: PlanInput, rolloutId: string): Promise<Started> =>
    startPlan({ client: temporal.client, taskQueue: temporal.taskQueue, pool: db.pool, dir, actor: alice }, plan, rolloutId);

  it('holds after the canary until someone approves, and records who and why', async () => {
    const s = await start(
      { name: 'gated', payloads: [{ file: fix.file }], hosts: { ids: ['host-0000', 'host-0001', 'host-0002', 'host-0003'] }, waves: [{ name: 'canary', hosts: 1 }, { name: 'rest', hosts: '100%' }], gates: [{ after: 'canary', approval: true }], concurrency: 4 },
      'gated-1',
    );
    const held = await until(s, (p) => p.status === 'awaiting-approval');
    expect(held.awaitingApprovalAfter).toBe('canary');
    expect(held.waves.map((w) => w.done)).toEqual([1, 0]);
    // Still held a while later: nothing moves without the approval.
    await new Promise((r) => setTimeout(r, 1000));
    expect((await s.handle.query(progressQuery)).waves[1]!.done).toBe(0);

    expect(await refusal(s.handle.executeUpdate(approveUpdate, { args: [{ by: bob, reason: 'looks fine', wave: 'rest' }] }))).toContain('the pending gate is after wave "canary", not "rest"');
    expect(await refusal(s.handle.executeUpdate(approveUpdate, { args: [{ by: bob, reason: '  ' }] }))).toContain('a reason is required');
    await s.handle.executeUpdate(approveUpdate, { args: [{ by: bob, reason: 'canary healthy for 1 s', wave: 'canary' }] });
    const done = await s.handle.result();
    expect(done.status).toBe('succeeded');
    await saveHistory(temporal.client, 'rollout-gated-1', 'rollout-approval-gate');
    expect(done.decisions).toEqual([expect.objectContaining({ action: 'approved', by: bob, reason: 'canary healthy for 1 s', wave: 'canary' })]);
    const approval = (await new EventStore(db.pool).readStream(rolloutStream('gated-1'))).find((e) => e.event.type === 'ApprovalGiven')!;
    expect(approval.event).toMatchObject({ actor: bob, wave: 'canary', reason: 'canary healthy for 1 s' });
  });

  it('pauses mid-wave (hosts in flight finish, no new host starts) and resumes to the end', async () => {
    const s = await start({ name: 'paused', payloads: [{ file: fix.file }], hosts: { ids: ['host-0004', 'host-0005', 'host-0006', 'host-0007'] }, waves: [{ name: 'all', hosts: '100%' }], concurrency: 1 }, 'paused-1');
    await until(s, (p) => p.waves[0]!.done >= 1);
    expect(await refusal(s.handle.executeUpdate(resumeUpdate, { args: [{ by: alice, reason: 'go' }] }))).toContain('not paused');
    await s.handle.executeUpdate(pauseUpdate, { args: [{ by: alice, reason: 'investigating an alert' }] });
    const atPause = await until(s, (p) => p.status === 'paused');
    await new Promise((r) => setTimeout(r, 1500));
    const later = await s.handle.query(progressQuery);
    expect(later.status).toBe('paused');
    // At most the one host that was in flight when the pause came finished meanwhile.
    expect(later.waves[0]!.done - atPause.waves[0]!.done).toBeLessThanOrEqual(1);
    expect(later.waves[0]!.done).toBeLessThan(4);
    expect(await refusal(s.handle.executeUpdate(pauseUpdate, { args: [{ by: alice, reason: 'again' }] }))).toContain('cannot pause a rollout that is paused');

    await s.handle.executeUpdate(resumeUpdate, { args: [{ by: bob, reason: 'alert was unrelated' }] });
    const done = await s.handle.result();
    expect(done.status).toBe('succeeded');
    expect(done.waves[0]!.patched).toBe(4);
    await saveHistory(temporal.client, 'rollout-paused-1', 'rollout-pause-resume');
    expect(done.decisions.map((d) => [d.action, d.by.id, d.reason])).toEqual([
      ['paused', 'alice', 'investigating an alert'],
      ['resumed', 'bob', 'alert was unrelated'],
    ]);
    const types = (await new EventStore(db.pool).readStream(rolloutStream('paused-1'))).map((e) => e.event.type);
    expect(types).toEqual(expect.arrayContaining(['RolloutPaused', 'RolloutResumed']));
  });

  it('aborts: stops scheduling, leaves untouched hosts alone, records who and why; and refuses to be steered afterwards', async () => {
    const ids = ['host-0008', 'host-0009', 'host-0010', 'host-0011'];
    const s = await start({ name: 'aborted', payloads: [{ file: fix.file }], hosts: { ids }, waves: [{ name: 'all', hosts: '100%' }], concurrency: 1 }, 'aborted-1');
    await until(s, (p) => p.waves[0]!.done >= 1);
    await s.handle.executeUpdate(abortUpdate, { args: [{ by: bob, reason: 'wrong maintenance window' }] });
    const done = await s.handle.result();
    expect(done.status).toBe('aborted');
    expect(done.stopReason).toBe('aborted by bob: wrong maintenance window');
    await saveHistory(temporal.client, 'rollout-aborted-1', 'rollout-aborted');
    const patched = done.waves[0]!.patched;
    expect(patched).toBeGreaterThanOrEqual(1);
    expect(patched).toBeLessThan(4);
    const stacks = await liveStacks(fleet.fleetFile);
    expect(ids.filter((id) => stacks.get(id)!.length > 0)).toHaveLength(patched);
    const events = (await new EventStore(db.pool).readStream(rolloutStream('aborted-1'))).map((e) => e.event);
    expect(events.find((e) => e.type === 'RolloutAborted')).toMatchObject({ actor: bob, reason: 'wrong maintenance window' });
    expect(events.at(-1)).toMatchObject({ type: 'RolloutFinished', status: 'aborted' });
    await expect(s.handle.executeUpdate(resumeUpdate, { args: [{ by: alice, reason: 'undo' }] })).rejects.toThrow();
  });

  it('aborts with rollback: reverts what it patched', async () => {
    const ids = ['host-0000', 'host-0001', 'host-0002', 'host-0003'];
    // These four already run `fix` from the gated rollout; a second payload goes on top.
    const more = await writePayload(dir, 'more', { depends: fix.buildId, funcs: [{ target: 'xen_changeset', returns: 'more' }] }, IMAGE_A);
    const s = await start({ name: 'more', payloads: [{ file: more.file }], hosts: { ids }, waves: [{ name: 'all', hosts: '100%' }], concurrency: 1 }, 'more-1');
    await until(s, (p) => p.waves[0]!.done >= 2);
    await s.handle.executeUpdate(abortUpdate, { args: [{ by: alice, reason: 'changed my mind', rollback: true }] });
    const done = await s.handle.result();
    expect(done.status).toBe('aborted');
    expect(done.rollback).toMatchObject({ status: 'finished', failed: 0 });
    await saveHistory(temporal.client, 'rollout-more-1', 'rollout-abort-rollback');
    expect(done.rollback!.rolledBack).toBe(done.waves[0]!.patched);
    for (const id of ids) expect((await liveStacks(fleet.fleetFile)).get(id)).toEqual(['fix']);
  });
});
