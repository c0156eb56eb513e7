/**
 * Webhooks, durably: a receiver that is down for a minute while a rollout runs (and finishes)
 * still gets every notification, once up, in the order the events happened, each signed with
 * HMAC-SHA256, every failed attempt recorded. The same rollout shows a gate that needs someone
 * other than who started it: the workflow refuses the starter's own approval.
 */
import { createHmac } from 'node:crypto';
import http from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WorkflowUpdateFailedError } from '@temporalio/client';
import { hostImage, startFleetServer, type RunningFleet } from '../../src/emulator/index.ts';
import { selectDeliveries } from '../../src/events/sql/webhook-outbox.ts';
import { approveUpdate, progressQuery } from '../../workflows/messages.ts';
import { createTestDatabase, type TestDatabase } from '../support/database.ts';
import { startTestWorker, type TestTemporal } from '../support/temporal.ts';
import { IMAGE_A, startPlan, tempDir, writePayload } from '../support/rollout.ts';

const SECRET = 'test-webhook-secret';
process.env.FLEETPATCH_WEBHOOK_SECRET = SECRET;
const DOWN_MS = Number(process.env.FLEETPATCH_WEBHOOK_DOWN_MS ?? 60_000);

interface Received {
  type: string;
  sequence: number;
  id: string;
  attempt: string;
  signatureOk: boolean;
  at: number;
}

async function freePort(): Promise<number> {
  const s = http.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()));
  const port = (s.address() as { port: number }).port;
  await new Promise((r) => s.close(r));
  return port;
}

describe('webhooks', () => {
  let db: TestDatabase;
  let fleet: RunningFleet;
  let temporal: TestTemporal;
  let receiver: http.Server | undefined;

  beforeAll(async () => {
    db = await createTestDatabase();
    fleet = await startFleetServer({ hosts: 4, images: [hostImage(IMAGE_A)], seed: 11 });
    temporal = await startTestWorker({ pool: db.pool, fleetFile: fleet.fleetFile });
  });

  afterAll(async () => {
    receiver?.close();
    await temporal?.close();
    await fleet?.close();
    await db?.drop();
  });

  it(`a receiver down for ${DOWN_MS / 1000} s gets every notification, in order, signed; the gate needs a different approver`, { timeout: DOWN_MS + 180_000 }, async () => {
    const port = await freePort();
    const dir = await tempDir('webhooks');
    const fix = await writePayload(dir, 'fix', { funcs: [{ target: 'xen_extra_version', returns: '-fix' }] }, IMAGE_A);
    const alice = { kind: 'user' as const, id: 'alice' };
    const started = Date.now();
    const s = await startPlan(
      { client: temporal.client, taskQueue: temporal.taskQueue, pool: db.pool, dir, actor: alice },
      {
        name: 'hooked',
        payloads: [{ file: fix.file }],
        waves: [{ name: 'canary', hosts: 1 }, { name: 'rest', hosts: '100%' }],
        gates: [{ after: 'canary', approval: true, requireDifferentApprover: true }],
        notify: { webhook: `http://127.0.0.1:${port}/hook` },
      },
      'hooked-1',
    );

    // The gate: alice started it, so alice may not approve it; bob may.
    for (;;) {
      const p = await s.handle.query(progressQuery);
      if (p.status === 'awaiting-approval') break;
      await new Promise((r) => setTimeout(r, 100));
    }
    const refused = await s.handle.executeUpdate(approveUpdate, { args: [{ by: alice, reason: 'lgtm' }] }).then(
      () => null,
      (e: unknown) => e,
    );
    expect(refused).toBeInstanceOf(WorkflowUpdateFailedError);
    expect(((refused as WorkflowUpdateFailedError).cause as Error).message).toContain('needs approval by someone other than alice');
    await s.handle.executeUpdate(approveUpdate, { args: [{ by: { kind: 'user', id: 'bob' }, reason: 'canary healthy' }] });
    const done = await s.handle.result();
    expect(done.status).toBe('succeeded');
    // The rollout did not wait for the receiver: it ended while nothing had been delivered yet.
    expect((await selectDeliveries(db.pool, 'hooked-1')).filter((d) => d.deliveredAt !== null)).toEqual([]);

    // Meanwhile every attempt failed and was recorded.
    let before = await selectDeliveries(db.pool, 'hooked-1');
    for (let i = 0; i < 100 && !(before[0]?.attempts.length ?? 0); i++) {
      await new Promise((r) => setTimeout(r, 100));
      before = await selectDeliveries(db.pool, 'hooked-1');
    }
    expect(before.length).toBeGreaterThanOrEqual(6);
    expect(before.every((d) => d.deliveredAt === null)).toBe(true);
    expect(before[0]!.attempts.length).toBeGreaterThanOrEqual(1);
    expect(before[0]!.attempts[0]!.error).toMatch(/ECONNREFUSED|fetch failed/);

    // The receiver comes up a minute after the rollout started.
    await new Promise((r) => setTimeout(r, Math.max(0, started + DOWN_MS - Date.now())));
    const received: Received[] = [];
    receiver = http.createServer((req, res) => {
      let body = '';
      req.on('data', (c) => (body += c));
      req.on('end', () => {
        const sig = String(req.headers['x-fleetpatch-signature']);
        const [, t, v1] = /^t=(\d+),v1=([0-9a-f]{64})$/.exec(sig) ?? [];
        const expected = t ? createHmac('sha256', SECRET).update(`${t}.${body}`).digest('hex') : '';
        const json = JSON.parse(body) as { type: string; sequence: number; id: string };
        received.push({ type: json.type, sequence: json.sequence, id: String(req.headers['x-fleetpatch-delivery']), attempt: String(req.headers['x-fleetpatch-attempt']), signatureOk: v1 === expected, at: Date.now() });
        res.writeHead(204).end();
      });
    });
    await new Promise<void>((r) => receiver!.listen(port, '127.0.0.1', () => r()));

    const deadline = Date.now() + 90_000;
    while (!received.some((r) => r.type === 'RolloutFinished') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 250));
    const types = received.map((r) => r.type);
    expect(types).toEqual(['RolloutStarted', 'WaveStarted', 'WaveFinished', 'ApprovalRequested', 'ApprovalGiven', 'WaveStarted', 'WaveFinished', 'RolloutFinished']);
    expect(received.map((r) => r.sequence)).toEqual([...received.map((r) => r.sequence)].sort((a, b) => a - b));
    expect(new Set(received.map((r) => r.id)).size).toBe(received.length);
    expect(received.every((r) => r.signatureOk)).toBe(true);
    expect(Number(received[0]!.attempt)).toBeGreaterThan(1);

    const after = await selectDeliveries(db.pool, 'hooked-1');
    expect(after.every((d) => d.deliveredAt !== null)).toBe(true);
    for (const d of after) {
      expect(d.attempts.at(-1)!.httpStatus).toBe(204);
      expect(d.attempts.slice(0, -1).every((a) => a.error !== null)).toBe(true);
    }
  });
});
