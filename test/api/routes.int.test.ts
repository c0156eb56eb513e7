/**
 * The API's routes against a real PostgreSQL and Temporal server: every route x every role (no
 * token, viewer, operator, admin), tokens hashed and revocable, and every kind of bad input
 * answered with a 4xx JSON error from the catalogue naming the field, never a stack trace.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Client, Connection } from '@temporalio/client';
import { inject } from 'vitest';
import { apiContextFrom, type ApiContext } from '../../src/app/api-context.ts';
import { buildApi, type ApiServer } from '../../src/api/server.ts';
import { EventStore } from '../../src/events/store.ts';
import { createLogger } from '../../src/runtime/logger.ts';
import { createTestDatabase, type TestDatabase } from '../support/database.ts';

const ROLES = ['viewer', 'operator', 'admin'] as const;
const RANK = { public: -1, viewer: 0, operator: 1, admin: 2 } as const;
const SAMPLE: Record<string, string> = { id: 'no-such-rollout', hostId: 'host-0000', buildId: 'abcd', name: 'nobody' };

describe('HTTP API: routes, roles and bad input', () => {
  let db: TestDatabase;
  let connection: Connection;
  let ctx: ApiContext;
  let api: ApiServer;
  const tokens: Record<string, string> = {};

  beforeAll(async () => {
    db = await createTestDatabase();
    connection = await Connection.connect({ address: inject('temporalAddress') });
    const client = new Client({ connection, namespace: inject('temporalNamespace') });
    ctx = apiContextFrom({ pool: db.pool, logger: createLogger('silent'), client, taskQueue: 'api-routes-no-worker', namespace: inject('temporalNamespace'), fleetFile: '/nonexistent/fleet.json', trustedKeys: async () => [] });
    api = await buildApi(ctx);
    for (const role of ROLES) tokens[role] = (await ctx.tokens.create(`${role}-bot`, role, { kind: 'user', id: 'test' })).token;
  });

  afterAll(async () => {
    await api?.app.close();
    await connection?.close();
    await db?.drop();
  });

  const call = (method: string, url: string, opts: { token?: string; body?: unknown; headers?: Record<string, string>; payload?: string } = {}) =>
    api.app.inject({
      method: method as 'GET',
      url,
      headers: { ...(opts.token ? { authorization: `Bearer ${opts.token}` } : {}), ...(opts.body !== undefined ? { 'content-type': 'application/json' } : {}), ...opts.headers },
      ...(opts.body !== undefined ? { payload: JSON.stringify(opts.body) } : opts.payload !== undefined ? { payload: opts.payload } : {}),
    });

  it('names a role for every route, and documents every API route in /openapi.json', async () => {
    expect(api.routes.length).toBeGreaterThan(25);
    for (const r of api.routes) expect(['public', ...ROLES], `${r.method} ${r.url}`).toContain(r.role);
    const doc = (await call('GET', '/openapi.json')).json() as { paths: Record<string, Record<string, { 'x-role'?: string }>> };
    for (const r of api.routes.filter((x) => x.url.startsWith('/api/') || x.url === '/metrics')) {
      const path = r.url.replace(/:(\w+)/g, '{$1}');
      expect(doc.paths[path]?.[r.method.toLowerCase()], `${r.method} ${path} in the OpenAPI document`).toBeDefined();
      expect(doc.paths[path]![r.method.toLowerCase()]!['x-role']).toBe(r.role);
    }
  });

  it('every route x every role: no token is 401, a lesser role 403 (a viewer is refused every write), an allowed role gets past the door', async () => {
    const matrix: string[] = [];
    for (const r of api.routes) {
      if (r.role === 'public') continue;
      const url = r.url.replace(/:(\w+)/g, (_m, p: string) => SAMPLE[p] ?? 'x');
      const anon = await call(r.method, url, r.method === 'GET' ? {} : { body: {} });
      expect(anon.statusCode, `${r.method} ${url} without a token`).toBe(401);
      expect(anon.json()).toMatchObject({ code: 'AUTH_REQUIRED' });
      const forged = await call(r.method, url, { token: `fp_${'A'.repeat(43)}` });
      expect(forged.statusCode).toBe(401);
      for (const role of ROLES) {
        // The live stream never ends; its door is checked with a real connection below.
        if (r.url === '/api/stream' && RANK[role] >= RANK[r.role]) continue;
        const res = await call(r.method, url, { token: tokens[role]!, ...(r.method === 'GET' ? {} : { body: {} }) });
        matrix.push(`${r.method} ${r.url} ${role} ${res.statusCode}`);
        if (RANK[role] < RANK[r.role as keyof typeof RANK]) {
          expect(res.statusCode, `${r.method} ${url} as ${role}`).toBe(403);
          expect(res.json()).toMatchObject({ code: 'FORBIDDEN', retryable: false });
        } else {
          expect([401, 403], `${r.method} ${url} as ${role}: ${res.body}`).not.toContain(res.statusCode);
        }
        expect(res.body).not.toMatch(/\n\s+at /);
        if (role === 'viewer' && r.method !== 'GET') expect(res.statusCode, `viewer ${r.method} ${r.url}`).toBe(403);
      }
    }
    expect(matrix.length).toBeGreaterThan(60);
  });

  it('the live stream needs a token and answers a viewer with server-sent events', async () => {
    const server = await buildApi(ctx);
    await server.app.listen({ host: '127.0.0.1', port: 0 });
    try {
      const base = `http://127.0.0.1:${(server.app.server.address() as { port: number }).port}`;
      expect((await fetch(`${base}/api/stream`)).status).toBe(401);
      const controller = new AbortController();
      const r = await fetch(`${base}/api/stream`, { headers: { authorization: `Bearer ${tokens.viewer}` }, signal: controller.signal });
      expect(r.status).toBe(200);
      expect(r.headers.get('content-type')).toContain('text/event-stream');
      const reader = r.body!.getReader();
      const first = new TextDecoder().decode((await reader.read()).value);
      expect(first).toMatch(/^event: snapshot\ndata: \{/);
      controller.abort();
    } finally {
      await server.app.close();
    }
  });

  it('refuses malformed bodies, unknown fields, oversize bodies and wrong content types with 4xx JSON naming the field', async () => {
    const op = tokens.operator!;
    const malformed = await call('POST', '/api/rollouts/x/pause', { token: op, payload: '{"reason": ', headers: { 'content-type': 'application/json' } });
    expect(malformed.statusCode).toBe(400);
    expect(malformed.json()).toMatchObject({ code: 'BODY_INVALID', field: 'body' });

    const unknown = await call('POST', '/api/rollouts/x/pause', { token: op, body: { reason: 'why', force: true } });
    expect(unknown.statusCode).toBe(400);
    expect(unknown.json()).toMatchObject({ code: 'BODY_INVALID', field: 'body.force' });

    const missing = await call('POST', '/api/rollouts/x/pause', { token: op, body: {} });
    expect(missing.json()).toMatchObject({ code: 'BODY_INVALID', field: 'body.reason' });

    const blank = await call('POST', '/api/rollouts/x/abort', { token: op, body: { reason: '   ' } });
    expect(blank.json()).toMatchObject({ code: 'BODY_INVALID', field: 'body.reason' });

    const badParam = await call('POST', '/api/rollouts/..%2F..%2Fetc/pause', { token: op, body: { reason: 'x' } });
    expect(badParam.statusCode).toBe(400);
    expect(badParam.json().field).toBe('params.id');

    const plan = await call('POST', '/api/rollouts', { token: op, body: { plan: { name: 'p', payloads: [{ buildId: 'zz' }], waves: [{ name: 'w', hosts: '120%' }], colour: 'red' } } });
    expect(plan.statusCode).toBe(400);
    const fields = (plan.json() as { issues: { field: string }[] }).issues.map((i) => i.field);
    expect(fields).toEqual(expect.arrayContaining(['body.plan.payloads[0].buildId', 'body.plan.waves[0].hosts', 'body.plan.colour']));

    const fileRef = await call('POST', '/api/rollouts', { token: op, body: { plan: { name: 'p', payloads: [{ file: 'fix.livepatch' }], waves: [{ name: 'w', hosts: '100%' }] } } });
    expect(fileRef.statusCode).toBe(400);
    expect(fileRef.json()).toMatchObject({ code: 'PLAN_INVALID', field: 'body.plan.payloads[0].file' });

    const big = await call('POST', '/api/rollouts/x/pause', { token: op, body: { reason: 'x'.repeat(2 * 1024 * 1024) } });
    expect(big.statusCode).toBe(413);
    expect(big.json()).toMatchObject({ code: 'BODY_TOO_LARGE', field: 'body' });

    const text = await call('POST', '/api/rollouts/x/pause', { token: op, payload: 'reason=x', headers: { 'content-type': 'text/plain' } });
    expect(text.statusCode).toBe(415);
    expect(text.json()).toMatchObject({ code: 'MEDIA_TYPE_UNSUPPORTED', field: 'content-type' });

    const form = await call('POST', '/api/tokens', { token: tokens.admin!, payload: 'name=x', headers: { 'content-type': 'application/x-www-form-urlencoded' } });
    expect(form.statusCode).toBe(415);

    const proto = await call('POST', '/api/rollouts/x/pause', { token: op, payload: '{"reason":"x","__proto__":{"admin":true}}', headers: { 'content-type': 'application/json' } });
    expect(proto.statusCode).toBe(400);

    const query = await call('GET', '/api/audit/checks?outcome=maybe&colour=red', { token: tokens.viewer! });
    expect(query.statusCode).toBe(400);
    expect((query.json() as { issues: { field: string }[] }).issues.map((i) => i.field)).toEqual(expect.arrayContaining(['querystring.outcome', 'querystring.colour']));

    const nowhere = await call('GET', '/api/nowhere', { token: tokens.viewer! });
    expect(nowhere.statusCode).toBe(404);
    expect(nowhere.json()).toMatchObject({ code: 'ROUTE_NOT_FOUND' });

    for (const r of [malformed, unknown, plan, big, text, proto, query, nowhere]) {
      expect(r.headers['content-type']).toContain('application/json');
      expect(r.body).not.toMatch(/\n\s+at |node_modules|\.ts:\d+/);
    }
  });

  it('answers with the catalogue: an unknown rollout is 404 ROLLOUT_NOT_FOUND, steering it too', async () => {
    const status = await call('GET', '/api/rollouts/no-such-rollout', { token: tokens.viewer! });
    expect(status.statusCode).toBe(404);
    expect(status.json()).toMatchObject({ code: 'ROLLOUT_NOT_FOUND', retryable: false });
    const pause = await call('POST', '/api/rollouts/no-such-rollout/pause', { token: tokens.operator!, body: { reason: 'x' } });
    expect(pause.statusCode).toBe(404);
    const payload = await call('GET', '/api/payloads/abcd', { token: tokens.viewer! });
    expect(payload.statusCode).toBe(404);
    expect(payload.json()).toMatchObject({ code: 'PAYLOAD_NOT_FOUND' });
  });

  it('uploads a payload as Xen would check it: a refusal carries the errno', async () => {
    const junk = await call('POST', '/api/payloads', { token: tokens.admin!, body: { name: 'junk', bytes: Buffer.from('not an elf').toString('base64') } });
    expect(junk.statusCode).toBeGreaterThanOrEqual(400);
    expect(junk.statusCode).toBeLessThan(500);
    const body = junk.json() as { code: string; errno?: number };
    expect(body.code).toMatch(/^(ELF_MALFORMED|EINVAL|ENOEXEC)$/);
    if (body.code === 'EINVAL') expect(body.errno).toBe(22);
  });

  it('keeps only hashes of tokens, records who made and revoked them, and a revoked token stops working at once', async () => {
    const made = await call('POST', '/api/tokens', { token: tokens.admin!, body: { name: 'ci-bot', role: 'viewer' } });
    expect(made.statusCode).toBe(201);
    const { token, fingerprint } = made.json() as { token: string; fingerprint: string };
    expect(token).toMatch(/^fp_[A-Za-z0-9_-]{43}$/);
    const stored = await db.pool.query<{ token_sha256: Buffer }>("SELECT token_sha256 FROM api_tokens WHERE name = 'ci-bot'");
    expect(stored.rows[0]!.token_sha256.toString('hex').startsWith(fingerprint)).toBe(true);
    const dump = JSON.stringify((await db.pool.query('SELECT * FROM api_tokens')).rows) + JSON.stringify((await db.pool.query('SELECT data FROM events')).rows);
    expect(dump).not.toContain(token);
    expect((await call('GET', '/api/whoami', { token })).json()).toMatchObject({ name: 'ci-bot', role: 'viewer' });
    expect((await call('POST', '/api/tokens', { token: tokens.admin!, body: { name: 'ci-bot', role: 'admin' } })).json()).toMatchObject({ code: 'TOKEN_EXISTS' });

    expect((await call('POST', '/api/tokens/ci-bot/revoke', { token: tokens.admin!, body: { reason: 'rotated' } })).statusCode).toBe(200);
    expect((await call('GET', '/api/whoami', { token })).statusCode).toBe(401);
    const listed = (await call('GET', '/api/tokens', { token: tokens.admin! })).json() as { name: string; status: string; problem: string | null }[];
    expect(listed.find((t) => t.name === 'ci-bot')).toMatchObject({ status: 'revoked', problem: null });
    expect(listed.find((t) => t.name === 'admin-bot')).toMatchObject({ status: 'live' });
    // A token whose access stream is gone is shown unusable, with why.
    await ctx.tokens.create('doomed-bot', 'viewer', { kind: 'user', id: 'test' });
    await db.pool.query("ALTER TABLE events DISABLE TRIGGER USER");
    await db.pool.query("DELETE FROM events WHERE stream_id = 'access-doomed-bot'");
    await db.pool.query("DELETE FROM streams WHERE stream_id = 'access-doomed-bot'");
    await db.pool.query("ALTER TABLE events ENABLE TRIGGER USER");
    const after = (await call('GET', '/api/tokens', { token: tokens.admin! })).json() as { name: string; status: string; problem: string | null }[];
    expect(after.find((t) => t.name === 'doomed-bot')).toMatchObject({ status: 'unusable', problem: expect.stringContaining('access-doomed-bot') });
    const events = (await new EventStore(db.pool).readStream('access-ci-bot')).map((e) => [e.event.type, e.event.actor.id]);
    expect(events).toEqual([
      ['TokenCreated', 'admin-bot'],
      ['TokenRevoked', 'admin-bot'],
    ]);
  });

  it('serves the dashboard without a token, with a strict content security policy', async () => {
    const page = await call('GET', '/');
    expect(page.statusCode).toBe(200);
    expect(page.headers['content-type']).toContain('text/html');
    expect(page.headers['content-security-policy']).toContain("default-src 'none'");
    expect((await call('GET', '/dashboard.js')).statusCode).toBe(200);
    expect((await call('GET', '/api/health')).json()).toEqual({ ok: true });
  });
});
