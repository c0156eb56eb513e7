/**
 * The plan schema's extreme accepted values, through a real rollout (real worker, real Temporal,
 * real PostgreSQL, an emulated fleet): the longest bake, the largest concurrency, host counts and
 * budgets, the longest names, verify texts and host ids. No workflow task may fail on anything
 * the plan let through: the rollout bakes with a valid `bakingUntil`, answers status, and can be
 * aborted; and a plan naming the most and longest unknown host ids ends in a recorded reason
 * instead of a stuck workflow.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hostImage, startFleetServer, type RunningFleet } from '../../src/emulator/index.ts';
import type { Started } from '../../src/control/rollouts.ts';
import { EventStore } from '../../src/events/store.ts';
import { rolloutStream } from '../../src/events/streams.ts';
import { PLAN_LIMITS, type PlanInput } from '../../src/rollout/plan.ts';
import type { RolloutProgress } from '../../src/rollout/progress.ts';
import { abortUpdate, progressQuery } from '../../workflows/messages.ts';
import { createTestDatabase, type TestDatabase } from '../support/database.ts';
import { startTestWorker, type TestTemporal } from '../support/temporal.ts';
import { IMAGE_A, startPlan, tempDir, writePayload, type BuiltPayload, untilProgress } from '../support/rollout.ts';

const ops = { kind: 'user' as const, id: 'o'.repeat(200) };
const EXPECT = 'x'.repeat(PLAN_LIMITS.verifyExpectLength);

const until = (s: Started, ok: (p: RolloutProgress) => boolean, timeoutMs?: number) => untilProgress(s, ok, timeoutMs === undefined ? { timeoutMs: 60_000 } : { ...{ timeoutMs: 60_000 }, timeoutMs });

describe('a rollout with the extreme values the plan schema accepts', () => {
  let db: TestDatabase;
  let fleet: RunningFleet;
  let temporal: TestTemporal;
  let dir: string;
  let fix: BuiltPayload;

  beforeAll(async () => {
    db = await createTestDatabase();
    fleet = await startFleetServer({ hosts: 4, images: [hostImage(IMAGE_A)], seed: 11 });
    temporal = await startTestWorker({ pool: db.pool, fleetFile: fleet.fleetFile });
    dir = await tempDir('extremes');
    // The longest result verify may expect, returned by the patched function.
    fix = await writePayload(dir, 'fix', { funcs: [{ target: 'xen_extra_version', returns: EXPECT }] }, IMAGE_A);
  });

  afterAll(async () => {
    await temporal?.close();
    await fleet?.close();
    await db?.drop();
  });

  const start = (plan: PlanInput, rolloutId: string): Promise<Started> =>
    startPlan({ client: temporal.client, taskQueue: temporal.taskQueue, pool: db.pool, dir, actor: ops }, plan, rolloutId);

  it('bakes for the longest bake with a valid bakingUntil, answers, and aborts', { timeout: 180_000 }, async () => {
    const wave = (c: string) => c.repeat(63);
    const s = await start(
      {
        name: 'e'.repeat(63),
        description: 'd'.repeat(PLAN_LIMITS.descriptionLength),
        payloads: [{ file: fix.file, name: 'f'.repeat(PLAN_LIMITS.payloadNameBytes) }],
        hosts: { labels: { region: 'eu-west' } },
        waves: [
          { name: wave('a'), hosts: 1, concurrency: PLAN_LIMITS.maxConcurrency },
          { name: wave('b'), hosts: PLAN_LIMITS.maxWaveHosts, groupBy: 'r'.repeat(PLAN_LIMITS.labelLength) },
          { name: wave('c'), hosts: '100%' },
        ],
        concurrency: PLAN_LIMITS.maxConcurrency,
        budget: { perWave: PLAN_LIMITS.maxBudgetCount, total: '100%' },
        bake: '30d',
        verify: { call: 'xen_extra_version', expect: EXPECT },
        onFailure: 'pause',
      },
      'extremes-1',
    );
    const baking = await until(s, (p) => p.status === 'baking');
    expect(baking.waves[0]).toMatchObject({ patched: 1, failed: 0 });
    const until30d = Date.parse(baking.bakingUntil!);
    expect(until30d - Date.now()).toBeGreaterThan(PLAN_LIMITS.maxBakeMs - 3_600_000);
    // The workflow keeps answering while it bakes.
    await new Promise((r) => setTimeout(r, 1000));
    expect((await s.handle.query(progressQuery)).status).toBe('baking');

    // The longest reason `fleetpatch rollout abort` takes.
    await s.handle.executeUpdate(abortUpdate, { args: [{ by: ops, reason: 'r'.repeat(1000) }] });
    const done = await s.handle.result();
    expect(done.status).toBe('aborted');
    const events = (await new EventStore(db.pool).readStream(rolloutStream('extremes-1'))).map((e) => e.event);
    expect(events).toContainEqual(expect.objectContaining({ type: 'RolloutFinished', status: 'aborted' }));
    expect(events.find((e) => e.type === 'RolloutAborted')).toMatchObject({ actor: ops });
  });

  it('a bake beyond what a workflow can honour never starts a rollout (it used to fail every workflow task after wave 1)', async () => {
    const plan: PlanInput = { name: 'forever', payloads: [{ file: fix.file, name: 'f'.repeat(PLAN_LIMITS.payloadNameBytes) }], waves: [{ name: 'a', hosts: 1 }, { name: 'b', hosts: '100%' }], bake: '99999999999d' };
    await expect(start(plan, 'extremes-forever')).rejects.toMatchObject({ code: 'PLAN_INVALID', message: expect.stringMatching(/bake: "99999999999d" is longer than the longest bake, 30d/) });
    await expect(temporal.client.workflow.getHandle('rollout-extremes-forever').describe()).rejects.toThrow(/not found/i);
  });

  it('the most and longest unknown host ids end the rollout with a recorded reason, not a stuck workflow', { timeout: 120_000 }, async () => {
    const ids = Array.from({ length: PLAN_LIMITS.maxHostIds }, (_, i) => `${String(i).padStart(6, '0')}${'h'.repeat(PLAN_LIMITS.hostIdLength - 6)}`);
    const s = await start(
      {
        name: 'unknown-hosts',
        payloads: [{ file: fix.file, name: 'f'.repeat(PLAN_LIMITS.payloadNameBytes) }],
        hosts: { ids: ['host-0000', ...ids.slice(1)] },
        waves: [{ name: 'all', hosts: '100%' }],
      },
      'extremes-2',
    );
    const done = await s.handle.result();
    expect(done.status).toBe('failed');
    expect(done.stopReason).toMatch(/the plan names hosts the fleet does not have/);
    const events = (await new EventStore(db.pool).readStream(rolloutStream('extremes-2'))).map((e) => e.event);
    expect(events).toContainEqual(expect.objectContaining({ type: 'RolloutFinished', status: 'failed' }));
    expect(events.some((e) => e.type === 'HostPatchFinished')).toBe(false);
  });
});
