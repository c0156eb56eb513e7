/**
 * Webhook targets through real rollouts: a notification counts as delivered only when the receiver
 * answered 2xx (a redirect is neither followed nor counted, a 4xx or 5xx is retried), and a worker
 * refuses to send what its own configuration refuses, even when the plan reached it from elsewhere
 * (another configuration, an older fleetpatch): a data: URL, the fleet server's /admin routes, a
 * URL with a password. The refusal is recorded as an attempt, sent nowhere, and no password shows
 * in the attempt or the Temporal failure.
 */
import http from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WorkflowFailedError } from '@temporalio/client';
import { hostImage, startFleetServer, type RunningFleet } from '../../src/emulator/index.ts';
import { readPlanFile, resolvePlanPayloads, startRollout } from '../../src/control/rollouts.ts';
import { selectDeliveries, type DeliveryRecord } from '../../src/events/sql/webhook-outbox.ts';
import { createTestDatabase, type TestDatabase } from '../support/database.ts';
import { startTestWorker, type TestTemporal } from '../support/temporal.ts';
import { IMAGE_A, startPlan, tempDir, writePayload, writePlan } from '../support/rollout.ts';

process.env.FLEETPATCH_WEBHOOK_SECRET = 'test-webhook-secret-targets';

async function listen(handler: http.RequestListener): Promise<{ server: http.Server; port: number }> {
  const server = http.createServer(handler);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return { server, port: (server.address() as { port: number }).port };
}

async function until<T>(what: string, fn: () => Promise<T | undefined>, ms = 120_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

describe('webhook targets', () => {
  let db: TestDatabase;
  let fleet: RunningFleet;
  let temporal: TestTemporal;
  const servers: http.Server[] = [];
  const alice = { kind: 'user' as const, id: 'alice' };

  beforeAll(async () => {
    db = await createTestDatabase();
    fleet = await startFleetServer({ hosts: 2, images: [hostImage(IMAGE_A)], seed: 5 });
    temporal = await startTestWorker({ pool: db.pool, fleetFile: fleet.fleetFile });
  });

  afterAll(async () => {
    for (const s of servers) s.close();
    await temporal?.close();
    await fleet?.close();
    await db?.drop();
  });

  it('counts a notification delivered only on a 2xx answer: a redirect, a 500 and a 404 are failed attempts', { timeout: 240_000 }, async () => {
    let redirectHits = 0;
    const elsewhere = await listen((_req, res) => {
      redirectHits++;
      res.writeHead(200).end();
    });
    servers.push(elsewhere.server);
    // The first three requests get a redirect, a 500 and a 404; every later one a 200.
    const answers = [302, 500, 404];
    const requests: { type: string; status: number }[] = [];
    const receiver = await listen((req, res) => {
      let body = '';
      req.on('data', (c) => (body += c));
      req.on('end', () => {
        const status = answers.shift() ?? 200;
        requests.push({ type: (JSON.parse(body) as { type: string }).type, status });
        if (status === 302) res.writeHead(302, { location: `http://127.0.0.1:${elsewhere.port}/stolen` }).end();
        else res.writeHead(status).end();
      });
    });
    servers.push(receiver.server);

    const dir = await tempDir('hook-targets');
    const fix = await writePayload(dir, 'fix', { funcs: [{ target: 'xen_extra_version', returns: '-fix' }] }, IMAGE_A);
    const s = await startPlan(
      { client: temporal.client, taskQueue: temporal.taskQueue, pool: db.pool, dir, actor: alice },
      { name: 'answers', payloads: [{ file: fix.file }], waves: [{ name: 'all', hosts: '100%' }], notify: { webhook: `http://127.0.0.1:${receiver.port}/hook` } },
      'answers-1',
    );
    expect((await s.handle.result()).status).toBe('succeeded');

    const deliveries = await until('every notification delivered', async () => {
      const d = await selectDeliveries(db.pool, 'answers-1');
      return d.length > 0 && d.at(-1)!.eventType === 'RolloutFinished' && d.every((x) => x.deliveredAt !== null) ? d : undefined;
    });
    const first = deliveries[0]!;
    expect(first.eventType).toBe('RolloutStarted');
    expect(first.attempts.map((a) => [a.httpStatus, a.error === null])).toEqual([
      [null, false],
      [500, false],
      [404, false],
      [200, true],
    ]);
    expect(first.attempts[0]!.error).toMatch(/redirect/);
    for (const d of deliveries.slice(1)) expect(d.attempts.map((a) => a.httpStatus)).toEqual([200]);
    // Every request the receiver got is one recorded attempt; the redirect went nowhere.
    expect(requests).toHaveLength(deliveries.reduce((n, d) => n + d.attempts.length, 0));
    expect(requests.filter((r) => r.status === 200).map((r) => r.type)).toEqual(deliveries.map((d) => d.eventType));
    expect(redirectHits).toBe(0);
  });

  it("refuses at send time what the worker's configuration refuses, sends nothing and shows no password", { timeout: 300_000 }, async () => {
    let hits = 0;
    const receiver = await listen((_req, res) => {
      hits++;
      res.writeHead(200).end();
    });
    servers.push(receiver.server);
    const dir = await tempDir('hook-refused');
    const fix = await writePayload(dir, 'fix', { funcs: [{ target: 'xen_extra_version', returns: '-fix' }] }, IMAGE_A);
    const { plan, file } = await readPlanFile(await writePlan(dir, { name: 'refused', payloads: [{ file: fix.file }], waves: [{ name: 'all', hosts: '100%' }] }));
    const resolved = await resolvePlanPayloads(plan, dir, { pool: db.pool, actor: alice, store: true, planFile: file });
    const cases = [
      { id: 'refused-data', webhook: 'data:application/json,{}', why: /must be an http:\/\/ or https:\/\/ URL, not data:/ },
      { id: 'refused-admin', webhook: `${fleet.url}/admin/faults`, why: /the fleet server's, with its \/admin routes/ },
      { id: 'refused-password', webhook: `http://fp:hunter2@127.0.0.1:${receiver.port}/hook`, why: /must not carry a user name or password/ },
    ];
    for (const c of cases) {
      // As a plan validated under another configuration would arrive: past this process's checks.
      const s = await startRollout(temporal.client, temporal.taskQueue, { ...resolved, notifyWebhook: c.webhook }, { requestedBy: alice, rolloutId: c.id });
      expect((await s.handle.result()).status).toBe('succeeded');
      const failure = await temporal.client.workflow
        .getHandle(`webhooks-${c.id}`)
        .result()
        .then(
          () => null,
          (e: unknown) => e,
        );
      expect(failure).toBeInstanceOf(WorkflowFailedError);
      const activityFailure = (failure as WorkflowFailedError).cause as Error & { cause?: Error & { type?: string; nonRetryable?: boolean } };
      expect(activityFailure.cause?.type).toBe('PLAN_INVALID');
      expect(activityFailure.cause?.message).toMatch(c.why);
      const deliveries: DeliveryRecord[] = await selectDeliveries(db.pool, c.id);
      expect(deliveries.length).toBeGreaterThan(0);
      expect(deliveries.every((d) => d.deliveredAt === null)).toBe(true);
      const attempts = deliveries.flatMap((d) => d.attempts);
      expect(attempts.length).toBeGreaterThan(0);
      for (const a of attempts) {
        expect(a.httpStatus).toBeNull();
        expect(a.error).toMatch(/^refused: notify\.webhook /);
        expect(a.error).toMatch(c.why);
      }
      expect(JSON.stringify(attempts) + JSON.stringify(activityFailure.cause?.message)).not.toContain('hunter2');
    }
    expect(hits).toBe(0);
  });
});
