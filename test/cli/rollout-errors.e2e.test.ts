/**
 * `fleetpatch rollout` against a real Temporal server when the rollout is not there, has ended,
 * or no worker runs it: one line on stderr from the catalogue, exit 1, no stack trace, and no
 * waiting for Temporal's own timeouts (NO_WORKER comes only from looking for a worker before
 * asking the rollout: a query or an update nobody answers would end otherwise, if ever).
 * `status` without a worker still shows what the event store recorded. The commands run in this
 * process (test/cli/support/run-cli.ts); test/cli/rollout-cli.e2e.test.ts runs them as processes.
 */
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { hostImage, startFleetServer, type RunningFleet } from '../../src/emulator/index.ts';
import { readPlanFile, resolvePlanPayloads, startRollout } from '../../src/control/rollouts.ts';
import { EventStore } from '../../src/events/store.ts';
import { eventIdFromKey } from '../../src/events/event-id.ts';
import { createTestDatabase, type TestDatabase } from '../support/database.ts';
import { startTestWorker, type TestTemporal } from '../support/temporal.ts';
import { IMAGE_A, startPlan, tempDir, writePayload, writePlan, type BuiltPayload } from '../support/rollout.ts';
import { runCli } from './support/run-cli.ts';

const ops = { kind: 'user' as const, id: 'ops' };

describe('fleetpatch rollout when there is nothing (or nobody) to answer', () => {
  let db: TestDatabase;
  let fleet: RunningFleet;
  let temporal: TestTemporal;
  let dir: string;
  let fix: BuiltPayload;
  let env: Record<string, string>;

  function fleetpatch(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
    return runCli(args, env);
  }

  function oneLine(r: { stderr: string; stdout: string }, pattern: RegExp): void {
    const lines = r.stderr.split('\n').filter((l) => l.trim());
    expect(lines, r.stderr).toHaveLength(1);
    expect(lines[0]).toMatch(pattern);
    expect(r.stderr + r.stdout).not.toMatch(/\n\s+at .+:\d+:\d+/);
  }

  beforeAll(async () => {
    db = await createTestDatabase();
    fleet = await startFleetServer({ hosts: 2, images: [hostImage(IMAGE_A)], seed: 19 });
    temporal = await startTestWorker({ pool: db.pool, fleetFile: fleet.fleetFile });
    dir = await tempDir('rollout-errors');
    fix = await writePayload(dir, 'fix', { funcs: [{ target: 'xen_extra_version', returns: '-fix' }] }, IMAGE_A);
    env = {
      TEMPORAL_ADDRESS: inject('temporalAddress'),
      TEMPORAL_NAMESPACE: inject('temporalNamespace'),
      TEMPORAL_TASK_QUEUE: temporal.taskQueue,
      DATABASE_URL: db.url,
      FLEETPATCH_FLEET_FILE: fleet.fleetFile,
      FLEETPATCH_DATA_DIR: await tempDir('rollout-errors-data'),
      LOG_LEVEL: 'error',
    };
  });

  afterAll(async () => {
    await temporal?.close();
    await fleet?.close();
    await db?.drop();
  });

  it('pause|resume|abort|approve|status|watch of an unknown rollout: ROLLOUT_NOT_FOUND', { timeout: 300_000 }, async () => {
    const results = await Promise.all(
      (['pause', 'resume', 'abort', 'approve', 'status', 'watch'] as const).map((sub) => fleetpatch(['rollout', sub, 'no-such-rollout', '--reason', 'why'])),
    );
    for (const r of results) {
      expect(r.code, r.stderr).toBe(1);
      oneLine(r, /^fleetpatch: ROLLOUT_NOT_FOUND: no rollout no-such-rollout \(workflow rollout-no-such-rollout\)/);
    }
  });

  it('steering a rollout that has ended: ROLLOUT_STATE, saying it ended', { timeout: 300_000 }, async () => {
    const s = await startPlan({ client: temporal.client, taskQueue: temporal.taskQueue, pool: db.pool, dir, actor: ops }, { name: 'done', payloads: [{ file: fix.file }], hosts: { ids: ['host-0000'] }, waves: [{ name: 'all', hosts: '100%' }] }, 'ended-1');
    expect((await s.handle.result()).status).toBe('succeeded');
    for (const sub of ['pause', 'resume', 'abort', 'approve'] as const) {
      const r = await fleetpatch(['rollout', sub, 'ended-1', '--reason', 'why']);
      expect(r.code, r.stderr).toBe(1);
      oneLine(r, new RegExp(`^fleetpatch: ROLLOUT_STATE: rollout ended-1 has already ended \\(completed\\); there is nothing to ${sub}`));
    }
    // status of an ended rollout still works
    const status = await fleetpatch(['rollout', 'status', 'ended-1']);
    expect(status.code, status.stderr).toBe(0);
    expect(status.stdout).toMatch(/rollout ended-1 \(done\): succeeded/);
  });

  it('status with no worker polling: says so at once, shows what the event store recorded, exits 1; steering says so too', { timeout: 300_000 }, async () => {
    // A rollout on a task queue no worker polls, whose start the event store did record.
    const { plan, dir: d, file } = await readPlanFile(await writePlan(dir, { name: 'orphan', payloads: [{ file: fix.file }], hosts: { ids: ['host-0001'] }, waves: [{ name: 'all', hosts: '100%' }] }));
    const resolved = await resolvePlanPayloads(plan, d, { pool: db.pool, actor: ops, store: true, planFile: file });
    const queue = `nobody-${randomBytes(4).toString('hex')}`;
    await startRollout(temporal.client, queue, resolved, { requestedBy: ops, rolloutId: 'orphan-1' });
    await new EventStore(db.pool).append('rollout-orphan-1', [
      {
        eventId: eventIdFromKey('orphan-1/started'),
        event: { type: 'RolloutStarted', schemaVersion: 1, occurredAt: new Date().toISOString(), actor: ops, rolloutId: 'orphan-1', planName: 'orphan', mode: 'apply', payloads: resolved.payloads, waves: [{ name: 'all' }] },
      },
    ]);

    const status = await fleetpatch(['rollout', 'status', 'orphan-1']);
    expect(status.code).toBe(1);
    oneLine(status, new RegExp(`^fleetpatch: NO_WORKER: no worker polls task queue "${queue}", so the running rollout cannot answer; .*what the event store recorded is shown instead`));
    expect(status.stdout).toMatch(/from the event store/);
    expect(status.stdout).toMatch(/Rollout orphan-1: "orphan" \(apply\)/);

    const json = await fleetpatch(['rollout', 'status', 'orphan-1', '--json']);
    expect(json.code).toBe(1);
    expect(JSON.parse(json.stdout)).toMatchObject({ ok: false, error: { code: 'NO_WORKER' }, recorded: { rolloutId: 'orphan-1', planName: 'orphan' } });

    const pause = await fleetpatch(['rollout', 'pause', 'orphan-1', '--reason', 'why']);
    expect(pause.code).toBe(1);
    oneLine(pause, new RegExp(`^fleetpatch: NO_WORKER: no worker polls task queue "${queue}", so rollout orphan-1 cannot take the pause now`));
    await temporal.client.workflow.getHandle('rollout-orphan-1').terminate('test done');
  });
});
