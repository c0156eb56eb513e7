/**
 * Steering answers within seconds, and a command whose caller was told it failed is never applied
 * later: with the worker stopped (Temporal still lists it as a poller for minutes), `approve`
 * answers NO_WORKER with nothing changed; when a worker comes back, the rollout refuses that
 * request (its deadline passed) and nothing is recorded for it. Once the worker's last poll is
 * old, NO_WORKER comes at once, without sending anything.
 */
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { WorkflowUpdateFailedError } from '@temporalio/client';
import { createActivities } from '../../activities/index.ts';
import { createActivityDeps } from '../../src/app/activity-deps.ts';
import { steerRollout } from '../../src/control/steer.ts';
import { taskQueueWorkers } from '../../src/control/workers.ts';
import type { Started } from '../../src/control/rollouts.ts';
import { hostImage, startFleetServer, type RunningFleet } from '../../src/emulator/index.ts';
import { FleetpatchError } from '../../src/errors.ts';
import { EventStore } from '../../src/events/store.ts';
import { rolloutStream } from '../../src/events/streams.ts';
import type { RolloutProgress } from '../../src/rollout/progress.ts';
import { createLogger } from '../../src/runtime/logger.ts';
import { startWorker, type RunningWorker } from '../../src/runtime/worker.ts';
import { approveUpdate, progressQuery } from '../../workflows/messages.ts';
import { createTestDatabase, type TestDatabase } from '../support/database.ts';
import { startTestWorker, type TestTemporal } from '../support/temporal.ts';
import { IMAGE_A, startPlan, tempDir, writePayload } from '../support/rollout.ts';

const alice = { kind: 'user' as const, id: 'alice' };
const bob = { kind: 'user' as const, id: 'bob' };

async function failure(p: Promise<unknown>): Promise<FleetpatchError> {
  try {
    await p;
  } catch (e) {
    expect(e).toBeInstanceOf(FleetpatchError);
    return e as FleetpatchError;
  }
  throw new Error('the command was applied');
}

describe('steering when the worker has stopped', () => {
  let db: TestDatabase;
  let fleet: RunningFleet;
  let temporal: TestTemporal;
  const extra: RunningWorker[] = [];

  /** Another worker on the same task queue: the stopped one "coming back". */
  const workerOnQueue = async (): Promise<RunningWorker> => {
    const logger = createLogger('error', { pretty: false, name: 'test' });
    const w = await startWorker({
      address: inject('temporalAddress'),
      namespace: inject('temporalNamespace'),
      taskQueue: temporal.taskQueue,
      logger,
      activities: createActivities(createActivityDeps({ pool: db.pool, fleetFile: fleet.fleetFile, logger })),
      workflowBundlePath: inject('workflowBundlePath'),
    });
    extra.push(w);
    return w;
  };

  beforeAll(async () => {
    db = await createTestDatabase();
    fleet = await startFleetServer({ hosts: 2, images: [hostImage(IMAGE_A)], seed: 23 });
    temporal = await startTestWorker({ pool: db.pool, fleetFile: fleet.fleetFile });
  });

  afterAll(async () => {
    for (const w of extra) await w.shutdown();
    await temporal?.close();
    await fleet?.close();
    await db?.drop();
  });

  const until = async (s: Started, predicate: (p: RolloutProgress) => boolean): Promise<RolloutProgress> => {
    const deadline = Date.now() + 60_000;
    for (;;) {
      const p = await s.handle.query(progressQuery);
      if (predicate(p)) return p;
      if (Date.now() > deadline) throw new Error(`timed out; rollout is ${p.status}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  };
  const approvals = async (id: string) => (await new EventStore(db.pool).readStream(rolloutStream(id))).filter((e) => e.event.type === 'ApprovalGiven').map((e) => e.event);

  it('answers NO_WORKER with nothing changed, and the request is refused when a worker comes back', { timeout: 300_000 }, async () => {
    const dir = await tempDir('steering');
    const fix = await writePayload(dir, 'fix', { funcs: [{ target: 'xen_extra_version', returns: '-fix' }] }, IMAGE_A);
    const s = await startPlan(
      { client: temporal.client, taskQueue: temporal.taskQueue, pool: db.pool, dir, actor: alice },
      { name: 'gated', payloads: [{ file: fix.file }], hosts: { ids: ['host-0000', 'host-0001'] }, waves: [{ name: 'canary', hosts: 1 }, { name: 'rest', hosts: '100%' }], gates: [{ after: 'canary', approval: true }] },
      'steer-gated-1',
    );
    await until(s, (p) => p.status === 'awaiting-approval');

    // With a worker: refused in words, and a request whose deadline passed is refused by the rollout.
    const refused = await failure(steerRollout(temporal.client, s.rolloutId, 'resume', { by: bob, reason: 'go' }));
    expect(refused.code).toBe('ROLLOUT_STATE');
    expect(refused.message).toContain('cannot resume a rollout that is awaiting-approval, not paused');
    const stale = s.handle.executeUpdate(approveUpdate, { args: [{ by: bob, reason: 'sent long ago', notAfter: new Date(Date.now() - 1000).toISOString() }] });
    await expect(stale).rejects.toThrow(WorkflowUpdateFailedError);
    expect(((await stale.catch((e: WorkflowUpdateFailedError) => e)) as WorkflowUpdateFailedError).cause?.message).toMatch(/^the request expired at .*; nothing was changed$/);

    // The worker stops; Temporal still lists it as a poller.
    await temporal.worker.shutdown();
    expect((await taskQueueWorkers(temporal.client, temporal.taskQueue)).live).toBe(1);
    const notTaken = await failure(steerRollout(temporal.client, s.rolloutId, 'approve', { by: bob, reason: 'canary is fine' }));
    expect(notTaken.code).toBe('NO_WORKER');
    expect(notTaken.message).toMatch(/^no worker took the approve of rollout steer-gated-1 within \d+ s .*nothing was changed/);
    const updateId = notTaken.details.updateId as string;
    expect(updateId).toBeTruthy();
    expect(await approvals(s.rolloutId)).toEqual([]);

    // A worker comes back: Temporal hands it the request, and the rollout refuses it.
    const back = await workerOnQueue();
    const late = await s.handle
      .getUpdateHandle(updateId)
      .result()
      .then(
        () => 'applied',
        (e: unknown) => (e instanceof WorkflowUpdateFailedError ? (e.cause?.message ?? '') : String(e)),
      );
    expect(late).toMatch(/^the request expired at /);
    expect((await s.handle.query(progressQuery)).status).toBe('awaiting-approval');
    expect(await approvals(s.rolloutId)).toEqual([]);

    // Stopped again and left until its last poll is old: NO_WORKER at once, naming how old.
    await back.shutdown();
    const stoppedAt = Date.now();
    while ((await taskQueueWorkers(temporal.client, temporal.taskQueue)).live > 0) {
      if (Date.now() - stoppedAt > 180_000) throw new Error('the stopped worker still counts as live after 3 minutes');
      await new Promise((r) => setTimeout(r, 2000));
    }
    const none = await failure(steerRollout(temporal.client, s.rolloutId, 'approve', { by: bob, reason: 'canary is fine' }));
    expect(none.code).toBe('NO_WORKER');
    expect(none.message).toMatch(/^no worker polls task queue "test-[0-9a-f]+" \(the last poll was \d+ s ago\), so rollout steer-gated-1 cannot take the approve now; .*\(nothing was changed\)$/);
    expect(none.details.updateId).toBeUndefined();

    // With a worker again, the approval is applied once, and only the one that was applied is recorded.
    await workerOnQueue();
    const applied = await steerRollout(temporal.client, s.rolloutId, 'approve', { by: bob, reason: 'canary healthy, approved with a worker' });
    expect(applied.decisions.map((d) => d.reason)).toEqual(['canary healthy, approved with a worker']);
    expect((await s.handle.result()).status).toBe('succeeded');
    expect((await approvals(s.rolloutId)).map((e) => (e as { reason: string }).reason)).toEqual(['canary healthy, approved with a worker']);
  });
});
