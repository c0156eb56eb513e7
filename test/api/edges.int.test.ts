/**
 * The API's edges against a real server listening on a port (raw sockets and fetch, not inject):
 * text PostgreSQL cannot store is refused naming the field; a revoked token's open live stream
 * closes; endless, slow and misplaced bodies are cut off, a slow answer too; malformed URLs and
 * bytes that are not HTTP get the catalogue's JSON, as every other refusal; and a closing API says
 * so in the catalogue's words.
 */
import { once } from 'node:events';
import net from 'node:net';
import { readFile } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Client, Connection } from '@temporalio/client';
import { inject } from 'vitest';
import { TokenStore } from '../../src/access/tokens.ts';
import { apiContextFrom, type ApiContext } from '../../src/app/api-context.ts';
import { ApiErrorSchema } from '../../src/api/errors.ts';
import { buildApi, startApi } from '../../src/api/server.ts';
import { workflowIdOf } from '../../src/control/rollouts.ts';
import { EventStore } from '../../src/events/store.ts';
import { createPool } from '../../src/runtime/database.ts';
import { createLogger } from '../../src/runtime/logger.ts';
import { createTestDatabase, type TestDatabase } from '../support/database.ts';
import { IMAGE_A, tempDir, writePayload } from '../support/rollout.ts';
import { TEST_SIGNING_KEY } from '../support/signing.ts';

const by = { kind: 'user' as const, id: 'test' };

interface Answer {
  status: number;
  headers: Record<string, string>;
  body: Record<string, unknown>;
}

function parseAnswer(text: string): Answer | undefined {
  const end = text.indexOf('\r\n\r\n');
  if (end < 0) return undefined;
  const [statusLine, ...lines] = text.slice(0, end).split('\r\n');
  const headers = Object.fromEntries(lines.map((l) => [l.slice(0, l.indexOf(':')).toLowerCase(), l.slice(l.indexOf(':') + 1).trim()]));
  const length = Number(headers['content-length'] ?? 0);
  const raw = text.slice(end + 4, end + 4 + length);
  return { status: Number(statusLine!.split(' ')[1]), headers, body: raw ? (JSON.parse(raw) as Record<string, unknown>) : {} };
}

/**
 * One request over a raw socket: the head as given, then no body, an endless one (64 KiB chunks
 * as fast as the socket takes them) or a trickle (a byte every 200 ms). Resolves when the server
 * closes the connection, or after `limitMs` with `closed: false`. `trickle-headers` sends a header
 * line every 200 ms instead.
 */
function rawRequest(port: number, head: string, body: 'none' | 'endless' | 'trickle' | 'trickle-headers' = 'none', limitMs = 20_000): Promise<{ text: string; answer: Answer | undefined; closed: boolean; localPort: number }> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    let text = '';
    let done = false;
    let localPort = 0;
    const frame = Buffer.concat([Buffer.from('10000\r\n'), Buffer.alloc(65536), Buffer.from('\r\n')]);
    const finish = (closed: boolean) => {
      if (done) return;
      done = true;
      clearInterval(trickle);
      clearTimeout(limit);
      socket.destroy();
      resolve({ text, answer: parseAnswer(text), closed, localPort });
    };
    const pump = () => {
      while (!done && !socket.destroyed) if (!socket.write(frame)) return void socket.once('drain', pump);
    };
    socket.on('data', (d) => (text += d.toString('latin1')));
    // The server drops a connection whose body it stopped reading: the client's writes then fail.
    socket.on('error', () => undefined);
    socket.on('close', () => finish(true));
    const limit = setTimeout(() => finish(false), limitMs);
    const trickle = setInterval(() => {
      if (socket.destroyed) return;
      if (body === 'trickle') socket.write('1\r\n \r\n');
      if (body === 'trickle-headers') socket.write('x-slow: 1\r\n');
    }, 200);
    socket.on('connect', () => {
      localPort = socket.localPort!;
      socket.write(head);
      if (body === 'endless') pump();
    });
  });
}

/** A live stream read as the dashboard reads it: events in order, the end when the server ends it. */
class LiveStream {
  readonly events: { event: string; data: unknown }[] = [];
  readonly ended: Promise<void>;
  private wake: () => void = () => undefined;

  private constructor(private readonly response: Response) {
    this.ended = this.read();
  }

  static async open(base: string, token: string): Promise<LiveStream> {
    const r = await fetch(`${base}/api/stream`, { headers: { authorization: `Bearer ${token}`, accept: 'text/event-stream' } });
    expect(r.status).toBe(200);
    return new LiveStream(r);
  }

  private async read(): Promise<void> {
    const reader = this.response.body!.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = '';
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let at;
        while ((at = buffer.indexOf('\n\n')) >= 0) {
          const chunk = buffer.slice(0, at);
          buffer = buffer.slice(at + 2);
          const event = /^event: (.*)$/m.exec(chunk)?.[1];
          const data = /^data: (.*)$/m.exec(chunk)?.[1];
          if (event && data) this.events.push({ event, data: JSON.parse(data) });
        }
        this.wake();
      }
    } finally {
      this.wake();
    }
  }

  /** The first event of that name (and matching), waiting for it up to `timeoutMs`. */
  async next(event: string, match: (data: unknown) => boolean = () => true, timeoutMs = 30_000): Promise<unknown> {
    const deadline = Date.now() + timeoutMs;
    let ended = false;
    void this.ended.then(() => (ended = true));
    for (;;) {
      const found = this.events.find((e) => e.event === event && match(e.data));
      if (found) return found.data;
      if (ended) throw new Error(`the stream ended without a "${event}" event (it had: ${this.events.map((e) => e.event).join(', ')})`);
      if (Date.now() > deadline) throw new Error(`no "${event}" event within ${timeoutMs} ms (it had: ${this.events.map((e) => e.event).join(', ')})`);
      await new Promise<void>((r) => {
        this.wake = r;
        setTimeout(r, 200);
      });
    }
  }

  async cancel(): Promise<void> {
    await this.response.body!.cancel().catch(() => undefined);
  }
}

/** Every catalogue answer has this shape and nothing of fastify's own. */
function expectCatalogue(body: Record<string, unknown>, code: string, field?: string): void {
  expect(ApiErrorSchema.strict().safeParse(body).success, JSON.stringify(body)).toBe(true);
  expect(body).toMatchObject({ code, ...(field ? { field } : {}) });
  expect(body).not.toHaveProperty('statusCode');
  expect(body).not.toHaveProperty('error');
}

describe('HTTP API at its edges, on a real port', () => {
  let db: TestDatabase;
  let connection: Connection;
  let ctx: ApiContext;
  let api: Awaited<ReturnType<typeof startApi>>;
  let port: number;
  const tokens: Record<string, string> = {};
  /** Bytes each of the API's sockets read, by the client's port, once the socket closed. */
  const bytesRead = new Map<number, number>();

  beforeAll(async () => {
    db = await createTestDatabase();
    connection = await Connection.connect({ address: inject('temporalAddress') });
    const client = new Client({ connection, namespace: inject('temporalNamespace') });
    ctx = apiContextFrom({ pool: db.pool, logger: createLogger('silent'), client, taskQueue: 'api-edges-no-worker', namespace: inject('temporalNamespace'), fleetFile: '/nonexistent/fleet.json', trustedKeys: async () => [TEST_SIGNING_KEY] });
    // Short limits on arrival, so that cutting off a slow request is seen in seconds.
    api = await startApi(ctx, { host: '127.0.0.1', port: 0 }, { pollMs: 200, limits: { headersMs: 3000, requestMs: 3000 } });
    port = Number(new URL(api.url).port);
    api.app.server.on('connection', (s: net.Socket) => {
      const remote = s.remotePort!;
      s.on('close', () => bytesRead.set(remote, s.bytesRead));
    });
    for (const role of ['viewer', 'operator', 'admin'] as const) tokens[role] = (await ctx.tokens.create(`${role}-edge`, role, by)).token;
  });

  afterAll(async () => {
    await api?.close();
    await connection?.close();
    await db?.drop();
  });

  const get = (path: string, token?: string) => fetch(`${api.url}${path}`, { headers: token ? { authorization: `Bearer ${token}` } : {} });
  const post = (path: string, token: string, body: string) => fetch(`${api.url}${path}`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body });

  /** The bytes the API read on the connection a raw request used (its socket has closed). */
  const serverRead = async (localPort: number) => {
    await expect.poll(() => bytesRead.has(localPort), { timeout: 10_000 }).toBe(true);
    return bytesRead.get(localPort)!;
  };

  describe('text that cannot be stored', () => {
    it('is refused in path and query parameters with 400 naming the field, where it was a 500', async () => {
      const cases: [string, string][] = [
        ['/api/hosts/a%00b', 'params.hostId'],
        ['/api/audit/timeline?host=%00', 'querystring.host'],
        ['/api/audit/stack?host=%00', 'querystring.host'],
        ['/api/audit/checks?host=%00', 'querystring.host'],
        ['/api/audit/events?stream=%00', 'querystring.stream'],
        ['/api/audit/replay?host=%00', 'querystring.host'],
        ['/api/audit/events?stream=host-a&stream=b%00', 'querystring.stream[1]'],
      ];
      for (const [path, field] of cases) {
        const r = await get(path, tokens.viewer);
        const body = (await r.json()) as Record<string, unknown>;
        expect(r.status, `${path}: ${JSON.stringify(body)}`).toBe(400);
        expectCatalogue(body, 'BODY_INVALID', field);
        expect(body.reason).toContain('NUL');
      }
    });

    it('is refused in bodies, keys included, also a lone surrogate, naming the field', async () => {
      const replay = await post('/api/audit/replay', tokens.operator!, '{"host":"a\\u0000b"}');
      expect(replay.status).toBe(400);
      expectCatalogue((await replay.json()) as Record<string, unknown>, 'BODY_INVALID', 'body.host');

      const lone = await post('/api/rollouts/x/pause', tokens.operator!, '{"reason":"half \\ud800 a pair"}');
      expect(lone.status).toBe(400);
      const loneBody = (await lone.json()) as Record<string, unknown>;
      expectCatalogue(loneBody, 'BODY_INVALID', 'body.reason');
      expect(loneBody.reason).toContain('surrogate');

      const key = await post('/api/rollouts/plan', tokens.operator!, '{"plan":{"name":"p","hosts":{"labels":{"rack\\u0000":"a"}}}}');
      expect(key.status).toBe(400);
      const keyBody = (await key.json()) as Record<string, unknown>;
      // The field's name is written with the NUL escaped, so the answer itself holds none.
      expectCatalogue(keyBody, 'BODY_INVALID', 'body.plan.hosts.labels.rack\\u0000');
      expect(`${String(keyBody.field)}${String(keyBody.reason)}`).not.toContain('\0');
    });

    it('refuses a rollout whose reason holds a NUL, which was answered 201 and broke later; nothing is started', async () => {
      const dir = await tempDir('api-edges');
      const fix = await writePayload(dir, 'fix', { funcs: [{ target: 'xen_extra_version', returns: '-fix' }] }, IMAGE_A);
      const signature = JSON.parse(await readFile(`${fix.file}.sig`, 'utf8')) as Record<string, string>;
      const upload = await post(
        '/api/payloads',
        tokens.admin!,
        JSON.stringify({ name: 'fix', bytes: (await readFile(fix.file)).toString('base64'), signature: { algorithm: signature.algorithm, keyId: signature.keyId, signature: signature.signature, ...(signature.sha256 ? { sha256: signature.sha256 } : {}) } }),
      );
      expect(upload.status, await upload.clone().text()).toBe(201);
      const plan = { name: 'nul-reason', payloads: [{ buildId: fix.buildId }], waves: [{ name: 'all', hosts: '100%' }] };
      const r = await post('/api/rollouts', tokens.operator!, JSON.stringify({ plan, id: 'nul-reason', reason: 'bad\u0000reason' }));
      expect(r.status).toBe(400);
      expectCatalogue((await r.json()) as Record<string, unknown>, 'BODY_INVALID', 'body.reason');
      await expect(ctx.temporal.client.workflow.getHandle(workflowIdOf('nul-reason')).describe()).rejects.toMatchObject({ name: 'WorkflowNotFoundError' });
    });

    it('lets text that can be stored through: emoji, accents, right-to-left', async () => {
      for (const id of ['h\u{1F600}', 'hôte-é', '\u05D0\u05D1']) {
        const r = await get(`/api/hosts/${encodeURIComponent(id)}`, tokens.viewer);
        expect(r.status, id).toBe(200);
        expect(((await r.json()) as { replayed: { hostId: string } }).replayed.hostId).toBe(id);
      }
    });
  });

  describe('a revoked token', () => {
    it("closes its open live stream within seconds when revoked from another process; other streams go on", async () => {
      const eve = (await ctx.tokens.create('eve', 'viewer', by)).token;
      const eveStream = await LiveStream.open(api.url, eve);
      const vicStream = await LiveStream.open(api.url, tokens.viewer!);
      await eveStream.next('snapshot');
      await vicStream.next('snapshot');

      // As `fleetpatch tokens revoke` does it: its own connection to the store, no word to the API.
      const cliPool = createPool(db.url, { max: 1, applicationName: 'fleetpatch-cli' });
      try {
        await new TokenStore(new EventStore(cliPool)).revoke('eve', by, 'left the team');
      } finally {
        await cliPool.end();
      }

      const closed = await eveStream.next('closed');
      expectCatalogue(closed as Record<string, unknown>, 'AUTH_REQUIRED');
      expect((closed as { reason: string }).reason).toContain('revoked');
      await eveStream.ended;
      // The other viewer's stream is told of the revocation as an event and stays open.
      await vicStream.next('events', (lines) => (lines as { type: string }[]).some((l) => l.type === 'TokenRevoked'));
      expect(vicStream.events.some((e) => e.event === 'closed')).toBe(false);
      expect((await get('/api/stream', eve)).status).toBe(401);
      await vicStream.cancel();
    });

    it("closes only the revoked token's stream when its name already carries a new token", async () => {
      // Without a poller: the view reads the store when a stream opens, so the order is the test's.
      const server = await buildApi(ctx);
      await server.app.listen({ host: '127.0.0.1', port: 0 });
      try {
        const base = `http://127.0.0.1:${(server.app.server.address() as net.AddressInfo).port}`;
        const first = await LiveStream.open(base, (await ctx.tokens.create('fay', 'viewer', by)).token);
        await first.next('snapshot');
        await ctx.tokens.revoke('fay', by);
        const second = await LiveStream.open(base, (await ctx.tokens.create('fay', 'viewer', by)).token);
        await second.next('snapshot');
        expectCatalogue((await first.next('closed')) as Record<string, unknown>, 'AUTH_REQUIRED');
        await first.ended;
        await server.view.poll();
        expect(server.streams.size).toBe(1);
        expect(second.events.some((e) => e.event === 'closed')).toBe(false);
        await second.cancel();
      } finally {
        await server.app.close();
      }
    });
  });

  describe('bodies and time', () => {
    it('refuses a GET with an endless body, without a token, and stops reading it', async () => {
      const r = await rawRequest(port, 'GET /api/health HTTP/1.1\r\nHost: api\r\nTransfer-Encoding: chunked\r\n\r\n', 'endless');
      expect(r.closed, 'the connection is dropped').toBe(true);
      expect(r.answer?.status, r.text.slice(0, 300)).toBe(400);
      expectCatalogue(r.answer!.body, 'BODY_INVALID', 'body');
      expect(await serverRead(r.localPort)).toBeLessThan(16 * 1024 * 1024);
    });

    it('answers an endless body without a token 401, on an unknown route 404, with a token 413, and reads no further', async () => {
      const head = (path: string, headers: string) => `POST ${path} HTTP/1.1\r\nHost: api\r\nTransfer-Encoding: chunked\r\n${headers}\r\n`;
      for (const [path, headers, status, code] of [
        ['/api/rollouts/x/pause', 'Content-Type: application/json\r\n', 401, 'AUTH_REQUIRED'],
        ['/api/nowhere', '', 404, 'ROUTE_NOT_FOUND'],
        ['/api/rollouts/x/pause', `Content-Type: application/json\r\nAuthorization: Bearer ${tokens.operator}\r\n`, 413, 'BODY_TOO_LARGE'],
      ] as const) {
        const r = await rawRequest(port, head(path, headers), 'endless');
        expect(r.closed, `${path} ${status}: the connection is dropped`).toBe(true);
        expect(r.answer?.status, r.text.slice(0, 300)).toBe(status);
        expectCatalogue(r.answer!.body, code);
        expect(await serverRead(r.localPort)).toBeLessThan(16 * 1024 * 1024);
      }
    });

    it('cuts off a body, or headers, that arrive too slowly: 408 REQUEST_TIMEOUT in the catalogue\'s words', async () => {
      const slowBody = await rawRequest(port, `POST /api/rollouts/x/pause HTTP/1.1\r\nHost: api\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nAuthorization: Bearer ${tokens.operator}\r\n\r\n`, 'trickle');
      expect(slowBody.closed).toBe(true);
      expect(slowBody.answer?.status, slowBody.text.slice(0, 300)).toBe(408);
      expectCatalogue(slowBody.answer!.body, 'REQUEST_TIMEOUT');
      expect(slowBody.answer!.body.retryable).toBe(true);

      // Headers that never end.
      const slowHeaders = await rawRequest(port, 'GET /api/health HTTP/1.1\r\nHost: api\r\n', 'trickle-headers');
      expect(slowHeaders.closed).toBe(true);
      expect(slowHeaders.answer?.status, slowHeaders.text.slice(0, 300)).toBe(408);
      expectCatalogue(slowHeaders.answer!.body, 'REQUEST_TIMEOUT');
    });

    it('answers 503 RESPONSE_TIMEOUT when a route cannot answer in time', async () => {
      const server = await buildApi(ctx, { limits: { answerMs: 1000 } });
      await server.app.listen({ host: '127.0.0.1', port: 0 });
      // The events table locked: the route's read waits for it.
      const locker = await db.pool.connect();
      try {
        await locker.query('BEGIN');
        await locker.query('LOCK TABLE events IN ACCESS EXCLUSIVE MODE');
        const r = await fetch(`http://127.0.0.1:${(server.app.server.address() as net.AddressInfo).port}/api/audit/events`, { headers: { authorization: `Bearer ${tokens.viewer}` }, signal: AbortSignal.timeout(30_000) });
        expect(r.status).toBe(503);
        const body = (await r.json()) as Record<string, unknown>;
        expectCatalogue(body, 'RESPONSE_TIMEOUT');
        expect(body.retryable).toBe(true);
      } finally {
        await locker.query('ROLLBACK');
        locker.release();
        await server.app.close();
      }
    });
  });

  describe("the framework's own refusals", () => {
    it('answers malformed URLs with the catalogue, naming the URL', async () => {
      for (const path of ['/api/hosts/%ZZ', '/api/rollouts/%C0%AF', '/api/nowhere/%E0%A4']) {
        const r = await rawRequest(port, `GET ${path} HTTP/1.1\r\nHost: api\r\nConnection: close\r\n\r\n`);
        expect(r.answer?.status, `${path}: ${r.text}`).toBe(400);
        expect(r.answer!.headers['content-type']).toContain('application/json');
        expect(r.answer!.headers['x-content-type-options']).toBe('nosniff');
        expectCatalogue(r.answer!.body, 'BODY_INVALID', 'url');
        expect(r.answer!.body.reason).toContain(path);
      }
    });

    it('checks the token before the length of a parameter, which its schema then names; an absurd segment is refused as a URL', async () => {
      const long = `/api/hosts/${'h'.repeat(400)}`;
      const anonymous = await rawRequest(port, `GET ${long} HTTP/1.1\r\nHost: api\r\nConnection: close\r\n\r\n`);
      expect(anonymous.answer?.status).toBe(401);
      expectCatalogue(anonymous.answer!.body, 'AUTH_REQUIRED');
      const viewer = await get(long, tokens.viewer);
      expect(viewer.status).toBe(400);
      expectCatalogue((await viewer.json()) as Record<string, unknown>, 'BODY_INVALID', 'params.hostId');

      const absurd = await rawRequest(port, `GET /api/hosts/${'h'.repeat(3000)} HTTP/1.1\r\nHost: api\r\nConnection: close\r\n\r\n`);
      expect(absurd.answer?.status).toBe(400);
      expectCatalogue(absurd.answer!.body, 'BODY_INVALID', 'url');
    });

    it('answers bytes that are not HTTP, and headers too large, with the catalogue', async () => {
      const garbage = await rawRequest(port, 'HELLO THERE\r\n\r\n');
      expect(garbage.closed).toBe(true);
      expect(garbage.answer?.status, garbage.text).toBe(400);
      expectCatalogue(garbage.answer!.body, 'BODY_INVALID', 'request');

      const huge = await rawRequest(port, `GET /api/health HTTP/1.1\r\nHost: api\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`);
      expect(huge.answer?.status, huge.text.slice(0, 300)).toBe(400);
      expectCatalogue(huge.answer!.body, 'BODY_INVALID', 'headers');
    });
  });

  it('ends open streams and answers what still arrives with 503 SHUTTING_DOWN when it closes', async () => {
    const server = await startApi(ctx, { host: '127.0.0.1', port: 0 }, { pollMs: 200 });
    const stream = await LiveStream.open(server.url, tokens.viewer!);
    await stream.next('snapshot');
    // A request whose headers are still arriving as the API starts to close (a connection in the middle of a request is not idle, so it is not closed under it).
    const accepted = once(server.app.server, 'connection') as Promise<[net.Socket]>;
    const late = net.connect(Number(new URL(server.url).port), '127.0.0.1');
    await once(late, 'connect');
    late.write('GET /api/health HTTP/1.1\r\nHost: api\r\n');
    let text = '';
    late.on('data', (d) => (text += d));
    late.on('error', () => undefined);
    const [serverSide] = await accepted;
    await expect.poll(() => serverSide.bytesRead, { timeout: 10_000 }).toBeGreaterThan(0);

    const closing = server.close();
    expectCatalogue((await stream.next('closed')) as Record<string, unknown>, 'SHUTTING_DOWN');
    await stream.ended;
    await expect.poll(() => server.app.server.listening, { timeout: 10_000 }).toBe(false);
    late.write('\r\n');
    await expect.poll(() => parseAnswer(text) !== undefined, { timeout: 10_000 }).toBe(true);
    const answer = parseAnswer(text)!;
    expect(answer.status).toBe(503);
    expectCatalogue(answer.body, 'SHUTTING_DOWN');
    await closing;
    late.destroy();
  });
});
