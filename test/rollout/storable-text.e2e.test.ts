/**
 * Real rollouts (worker, Temporal, PostgreSQL, an emulated fleet) with unusual text in everything
 * they record: a payload name, a verify result, the reason and actor of the start and of an
 * approval, in emoji, combining marks, right-to-left marks and control characters, at the
 * longest the edges take. The plan validates, the rollout reaches `succeeded`, and every event
 * reads back from the store with that text whole. Text PostgreSQL cannot store never starts a
 * rollout: the plan is refused naming the field, before any workflow exists.
 * The property over every field and many strings is test/rollout/storable-text.int.test.ts.
 */
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hostImage, startFleetServer, type RunningFleet } from '../../src/emulator/index.ts';
import { readPlanFile, resolvePlanPayloads, startRollout, type Started } from '../../src/control/rollouts.ts';
import { unstorable } from '../../src/domain/text.ts';
import type { Actor } from '../../src/events/catalogue.ts';
import { EventStore } from '../../src/events/store.ts';
import { hostStream, rolloutStream } from '../../src/events/streams.ts';
import type { PlanInput } from '../../src/rollout/plan.ts';
import type { RolloutProgress } from '../../src/rollout/progress.ts';
import { approveUpdate } from '../../workflows/messages.ts';
import { createTestDatabase, type TestDatabase } from '../support/database.ts';
import { startTestWorker, type TestTemporal } from '../support/temporal.ts';
import { IMAGE_A, liveStacks, tempDir, writePayload, type BuiltPayload, untilProgress } from '../support/rollout.ts';

/** What the patched function returns and verify expects: every kind of unusual text but NUL. */
const EXPECT = 'שלום 🩹 e\u0301 \u202eevil\u202c \u0001\u001f\u007f\t 中𝕏 👩‍👩‍👧';
const PAYLOAD_NAME = 'fix-🩹-עברית-e\u0301\u202e'; // 34 bytes: Xen takes up to 127
const STARTER: Actor = { kind: 'user', id: `אליס 🩹 \u202e${'e\u0301'.repeat(80)}` };
const APPROVER: Actor = { kind: 'user', id: 'بوب\u0001\u200d👩‍👩‍👧'.padEnd(200, 'ı') };
const START_REASON = `XSA-999 🩹 ${'שלום e\u0301 '.repeat(100)}`.slice(0, 1000);
const APPROVE_REASON = 'canary \u202ehealthy\u202c ✅\n\ton two hosts';

const until = (s: Started, ok: (p: RolloutProgress) => boolean, timeoutMs?: number) => untilProgress(s, ok, timeoutMs === undefined ? { timeoutMs: 120_000 } : { ...{ timeoutMs: 120_000 }, timeoutMs });

describe('rollouts with unusual text in everything they record', () => {
  let db: TestDatabase;
  let fleet: RunningFleet;
  let temporal: TestTemporal;
  let dir: string;
  let fix: BuiltPayload;

  beforeAll(async () => {
    db = await createTestDatabase();
    fleet = await startFleetServer({ hosts: 3, images: [hostImage(IMAGE_A)], seed: 21 });
    temporal = await startTestWorker({ pool: db.pool, fleetFile: fleet.fleetFile });
    dir = await tempDir('storable');
    fix = await writePayload(dir, 'fix', { funcs: [{ target: 'xen_extra_version', returns: EXPECT }] }, IMAGE_A);
  }, 300_000);

  afterAll(async () => {
    await temporal?.close();
    await fleet?.close();
    await db?.drop();
  });

  async function start(plan: PlanInput, rolloutId: string, reason: string): Promise<Started> {
    // JSON (a plan file may be YAML or JSON): it writes every character, a lone surrogate too, as an escape.
    const planFile = path.join(dir, `${rolloutId}.json`);
    await writeFile(planFile, JSON.stringify(plan));
    const { plan: p, dir: planDir, file } = await readPlanFile(planFile);
    const resolved = await resolvePlanPayloads(p, planDir, { pool: db.pool, actor: STARTER, store: true, planFile: file });
    return startRollout(temporal.client, temporal.taskQueue, resolved, { requestedBy: STARTER, reason, rolloutId });
  }

  it('validates, succeeds, and every event reads back with its text whole', { timeout: 300_000 }, async () => {
    for (const t of [EXPECT, PAYLOAD_NAME, STARTER.id, APPROVER.id, START_REASON, APPROVE_REASON]) expect(unstorable(t)).toBeUndefined();
    const s = await start(
      {
        name: 'unusual',
        description: `${EXPECT} ${'\u202e'.repeat(10)}`.padEnd(2000, '…'),
        payloads: [{ file: fix.file, name: PAYLOAD_NAME }],
        hosts: { ids: ['host-0000', 'host-0001'] },
        waves: [
          { name: 'canary', hosts: 1 },
          { name: 'all', hosts: '100%' },
        ],
        gates: [{ after: 'canary', approval: true }],
        verify: { call: 'xen_extra_version', expect: EXPECT },
      },
      'unusual-1',
      START_REASON,
    );
    await until(s, (p) => p.status === 'awaiting-approval');
    await s.handle.executeUpdate(approveUpdate, { args: [{ by: APPROVER, reason: APPROVE_REASON, wave: 'canary' }] });
    const done = await s.handle.result();
    expect(done.status).toBe('succeeded');
    expect(done.waves.map((w) => w.patched)).toEqual([1, 1]);

    const store = new EventStore(db.pool);
    const rollout = (await store.readStream(rolloutStream('unusual-1'))).map((e) => e.event);
    expect(rollout.find((e) => e.type === 'RolloutStarted')).toMatchObject({ actor: STARTER, reason: START_REASON, payloads: [{ name: PAYLOAD_NAME, buildId: fix.buildId }] });
    expect(rollout.find((e) => e.type === 'ApprovalGiven')).toMatchObject({ actor: APPROVER, wave: 'canary', reason: APPROVE_REASON });
    expect(rollout.at(-1)).toMatchObject({ type: 'RolloutFinished', status: 'succeeded' });
    for (const hostId of ['host-0000', 'host-0001']) {
      const host = (await store.readStream(hostStream(hostId))).map((e) => e.event);
      expect(host.find((e) => e.type === 'PayloadApplied')).toMatchObject({ payload: { name: PAYLOAD_NAME, buildId: fix.buildId } });
      expect(host.find((e) => e.type === 'HealthChecked')).toMatchObject({ outcome: 'healthy', check: { call: 'xen_extra_version', expect: EXPECT }, observed: EXPECT });
    }
    // Every event of the store reads back through the catalogue.
    expect((await store.readAll(0, 10_000)).length).toBeGreaterThan(rollout.length);
    // And the hypervisors run the payload under its name, as the events say.
    const live = await liveStacks(fleet.fleetFile);
    expect([live.get('host-0000'), live.get('host-0001'), live.get('host-0002')]).toEqual([[PAYLOAD_NAME], [PAYLOAD_NAME], []]);
  });

  it('text PostgreSQL cannot store never starts a rollout: the plan is refused naming the field', { timeout: 120_000 }, async () => {
    const cases: [Partial<PlanInput>, RegExp][] = [
      [{ description: 'bad\u0000reason' }, /description: contains a NUL character \(\\u0000\) at position 3, which cannot be stored/],
      [{ hosts: { ids: ['host-0007', 'x\u0000y'] } }, /hosts\.ids\[1\]: contains a NUL character \(\\u0000\) at position 1/],
      [{ verify: { call: 'xen_extra_version', expect: 'a\uD800' } }, /verify\.expect: contains a lone UTF-16 surrogate \(\\ud800\) at position 1/],
    ];
    for (const [plan, field] of cases) {
      const e = await start({ name: 'unstorable', payloads: [{ file: fix.file }], waves: [{ name: 'all', hosts: '100%' }], ...plan }, 'unstorable-1', 'should not start').catch((x: unknown) => x);
      expect(e).toMatchObject({ code: 'PLAN_INVALID', message: expect.stringMatching(field) });
    }
    await expect(temporal.client.workflow.getHandle('rollout-unstorable-1').describe()).rejects.toThrow(/not found/i);
    expect(await new EventStore(db.pool).streamVersion(rolloutStream('unstorable-1'))).toBe(0);
  });
});
