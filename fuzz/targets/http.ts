/**
 * Fuzz target: the emulated hypervisor's HTTP API (src/hypervisor/server.ts startFleetServer; its
 * routes are in docs/hypervisor.md), spoken to over raw TCP so that nothing between the fuzzer and
 * the server tidies a request up.
 *
 * Inputs are requests: a method (the usual ones, lower case, made up), a path built from the
 * documented routes with hostile segments (unknown and over-long host ids, payload names of 0, 127
 * and 128 bytes, %00, %2F, bad percent-encoding, "..", absolute-form URLs, queries with idx/nr at
 * and past 2^32), a credential (none, the host's, another host's, the admin's, malformed, 10 KiB,
 * two of them), a body (ACTION and reboot JSON with numbers at the edges, faults documents, random
 * JSON, text that is not JSON, real and mutated payloads, random bytes, 2 MiB + 1 and 3 MiB) and a
 * framing (a right Content-Length, chunked, none, one too short, one too long, both).
 * Credentials are symbolic in the corpus (tokens are random per server).
 *
 * Oracles, per request:
 *   - the server answers (or resets the connection, only for a host that is down) within the
 *     per-operation limit, and answers /healthz afterwards (checked every 2 s and after every
 *     request that ends in a reset);
 *   - never 500 (and the server logs no error, which it does for every 500, even one whose client
 *     had gone); the status is one the catalogue (src/errors.ts) gives, or a route's documented
 *     success (200, 201, 202); Node's own parser may refuse a malformed request (400/431/505, no body);
 *   - every answer is JSON (GET /dump: text), an error is { error: <a catalogue code>, message },
 *     a Xen refusal also { rc: -errno, errno, code }, with the catalogue's status for that code
 *     (REQUEST_INVALID 400/404/405/413, HOST_UNAUTHORIZED 401/403); a success has its route's shape;
 *   - without the right token, nothing but 401/403 (host routes: that host's token; /admin: the
 *     admin token), and no answer ever contains a token.
 * Hosts that a request rebooted are brought back up by moving the server's clock past the longest
 * reboot; a faults document the fuzzer posted is replaced by the empty one after its case.
 */
import net from 'node:net';
import fc from 'fast-check';
import { FLEETPATCH_CATALOGUE, XEN_CATALOGUE, XEN_ERRNO, type XenErrnoName } from '../../src/errors.ts';
import { MAX_DOWN_MS, startFleetServer, type RunningFleet } from '../../src/emulator/server.ts';
import * as sm from '../../src/emulator/state-machine.ts';
import { DEFAULT_IMAGE, buildPayload, parsePayload } from '../../src/payload/index.ts';
import { createLogger } from '../../src/runtime/logger.ts';
import { OracleViolation, SlowCase, cpuMs, limits, type FuzzTarget } from '../lib.ts';

type Auth = 'none' | 'host' | 'otherHost' | 'admin' | 'hostForAdmin' | 'empty' | 'basic' | 'lowercase' | 'garbage' | 'long' | 'two' | 'tab';
type Framing = 'length' | 'chunked' | 'none' | 'short' | 'long' | 'abort' | 'both' | 'badLength';

export interface HttpCase {
  readonly method: string;
  readonly path: string;
  readonly auth: Auth;
  readonly contentType: string | null;
  readonly framing: Framing;
  /** Base64 in the corpus. */
  readonly body: Uint8Array;
  readonly headers: readonly (readonly [string, string])[];
  /** Requests sent first, through the same oracles (corpus files: the state a finding needed). */
  readonly before?: readonly HttpCase[];
}

// ---- generators -------------------------------------------------------------------------------

const HOSTS = 3;
const knownHosts = ['host-0000', 'host-0001', 'host-0002'];
const hostIds = ['host-9999', 'host-00000', '', 'HOST-0000', 'host%2D0000', '%zz', '%00', '..', '.', 'x'.repeat(300), 'host-0000%00', '%E2%82', '🙂'];
const names = ['hello', 'minor', 'fz', 'xen_hello_world', '', 'a'.repeat(127), 'a'.repeat(128), '%00', 'a%00b', '%2F', '..', '%E9', 'caf%C3%A9', 'name with space', 'x'.repeat(4000)];
const functions = ['xen_extra_version', 'xen_minor_version', 'xen_major_version', 'nope', '', '%00', 'x'.repeat(300)];
const queries = ['', '?', '?idx=0&nr=1', '?idx=1&nr=0', '?idx=-1', '?nr=99999999999', '?idx=4294967295', '?idx=4294967296', '?idx=1e3', '?idx=&nr=', '?idx=%zz', '?idx=0&idx=1', '?nr=1024', '?nr=1025', '#frag', '?x=' + 'y'.repeat(2000)];

const segment = fc.oneof(fc.constantFrom('livepatch', 'functions', 'dump', 'reboot', 'action', 'admin', 'faults', 'stats', 'healthz', 'hosts', ''), fc.stringMatching(/^[a-z%0-9._-]{1,12}$/));

const path: fc.Arbitrary<string> = fc.oneof(
  { weight: 2, arbitrary: fc.constantFrom('/healthz', '/healthz/', '//healthz', '/', '/hosts', '/hosts/', '/admin', '/admin/faults', '/admin/stats', '/admin/other', '/admin/faults/x', '*', 'http://127.0.0.1/healthz', 'healthz', '/%zz', '/\u0000') },
  {
    weight: 10,
    arbitrary: fc
      .tuple(
        fc.oneof({ weight: 6, arbitrary: fc.constantFrom(...knownHosts) }, { weight: 1, arbitrary: fc.constantFrom(...hostIds) }),
        fc.oneof(
          fc.constant('/livepatch'),
          fc.constantFrom(...names).map((n) => `/livepatch/${n}`),
          fc.constantFrom(...names).map((n) => `/livepatch/${n}/action`),
          fc.constant('/functions'),
          fc.constantFrom(...functions).map((f) => `/functions/${f}`),
          fc.constant('/dump'),
          fc.constant('/reboot'),
          fc.array(segment, { minLength: 1, maxLength: 4 }).map((s) => `/${s.join('/')}`),
        ),
        fc.constantFrom(...queries),
        fc.constantFrom('', '', '', '/', '//'),
      )
      .map(([id, rest, q, trail]) => `/hosts/${id}${rest}${trail}${q}`),
  },
);

const method = fc.oneof(
  { weight: 10, arbitrary: fc.constantFrom('GET', 'POST') },
  { weight: 2, arbitrary: fc.constantFrom('PUT', 'DELETE', 'HEAD', 'OPTIONS', 'PATCH') },
  { weight: 1, arbitrary: fc.oneof(fc.constantFrom('get', 'TRACE', 'CONNECT', 'PRI'), fc.stringMatching(/^[A-Z]{1,12}$/)) },
);

const auth = fc.oneof(
  { weight: 10, arbitrary: fc.constant('host' as const) },
  { weight: 2, arbitrary: fc.constant('admin' as const) },
  { weight: 4, arbitrary: fc.constantFrom<Auth>('none', 'otherHost', 'hostForAdmin', 'empty', 'basic', 'lowercase', 'garbage', 'long', 'two', 'tab') },
);

/** JSON numbers as text: 1e400 parses to Infinity, -0, fractions, strings, huge integers. */
const numberText = fc.constantFrom('0', '-0', '1', '-1', '0.5', '30000000', '4294967295', '4294967296', '1e400', '-1e400', '1e12', '86400000', '86400001', '"5"', 'null', 'true', '[]', '{}', '9007199254740993');

const faultRule = fc.record(
  {
    kind: fc.constantFrom('latency', 'actionDuration', 'actionTimeout', 'applyFailure', 'revertFailure', 'verifyFailure', 'crashDuringApply', 'reboot', 'unreachable', 'bogus'),
    ms: numberText,
    downMs: numberText,
    probability: fc.constantFrom('0', '0.5', '1', '1.5', '-1', '1e400'),
    hosts: fc.constantFrom('["host-0000"]', '[]', '"host-0000"', '[1]'),
    errno: fc.constantFrom('"ENOMEM"', '"EBOGUS"', '22'),
    mode: fc.constantFrom('"refuse"', '"hang"', '"x"'),
    times: numberText,
  },
  { requiredKeys: ['kind'] },
).map((r) => `{${Object.entries(r).map(([k, v]) => `"${k}": ${k === 'kind' ? `"${v}"` : v}`).join(', ')}}`);

const hello = buildPayload({ name: 'hello', funcs: [{ target: 'xen_extra_version', returns: 'Hello World' }], writableData: 8, modinfo: ['LIVEPATCH_RULEZ'] }, { image: DEFAULT_IMAGE });
const minor = buildPayload({ name: 'minor', funcs: [{ target: 'xen_minor_version', returns: 20 }] }, { image: DEFAULT_IMAGE });
const onHello = buildPayload({ name: 'bye', funcs: [{ target: 'xen_extra_version', returns: 'Bye' }], depends: parsePayload(hello).buildIdHex }, { image: DEFAULT_IMAGE });

const enc = new TextEncoder();
const body: fc.Arbitrary<Uint8Array> = fc.oneof(
  { weight: 3, arbitrary: fc.constant(new Uint8Array(0)) },
  {
    weight: 4,
    arbitrary: fc
      .record({ cmd: fc.constantFrom('"apply"', '"revert"', '"replace"', '"unload"', '"APPLY"', '""', '1', 'null', '"bogus"'), timeoutNs: numberText, nodeps: fc.constantFrom('true', 'false', '"yes"', '0') }, { requiredKeys: [] })
      .map((r) => enc.encode(`{${Object.entries(r).map(([k, v]) => `"${k}": ${v}`).join(', ')}}`)),
  },
  { weight: 2, arbitrary: numberText.map((n) => enc.encode(`{"downMs": ${n}}`)) },
  {
    weight: 2,
    arbitrary: fc
      .record({ seed: numberText, latencyMs: numberText, actionDurationMs: numberText, rules: fc.array(faultRule, { maxLength: 3 }) }, { requiredKeys: [] })
      .map((d) => enc.encode(`{${Object.entries(d).map(([k, v]) => `"${k}": ${Array.isArray(v) ? `[${v.join(', ')}]` : v}`).join(', ')}}`)),
  },
  { weight: 2, arbitrary: fc.json({ maxDepth: 3 }).map((j) => enc.encode(j)) },
  { weight: 1, arbitrary: fc.constantFrom('{', '{"cmd": "apply",}', '[1,2]', '"x"', 'null', '{"__proto__": {"cmd": "apply"}}', '{"cmd": "apply", "cmd": "revert"}', '\ufeff{"cmd":"apply"}', `{"a": ${'['.repeat(10000)}${']'.repeat(10000)}}`).map((t) => enc.encode(t)) },
  { weight: 4, arbitrary: fc.constantFrom(hello, minor, onHello) },
  {
    weight: 3,
    arbitrary: fc.tuple(fc.constantFrom(hello, minor, onHello), fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 8 })).map(([p, muts]) => {
      const b = p.slice();
      for (const [at, v] of muts) b[at % b.length] = v;
      return b;
    }),
  },
  { weight: 1, arbitrary: fc.uint8Array({ maxLength: 512 }) },
  { weight: 1, arbitrary: fc.constantFrom(2 * 1024 * 1024, 2 * 1024 * 1024 + 1, 256 * 1024 + 1, 3 * 1024 * 1024).map((n) => new Uint8Array(n)) },
);

const header: fc.Arbitrary<readonly [string, string]> = fc.oneof(
  fc.constantFrom<readonly [string, string]>(['Expect', '100-continue'], ['Accept', '*/*'], ['X-Forwarded-For', '127.0.0.1'], ['Transfer-Encoding', 'gzip'], ['Content-Encoding', 'gzip'], ['Host', ''], ['Connection', 'keep-alive'], ['Authorization', 'Bearer x']),
  fc.tuple(fc.stringMatching(/^[A-Za-z-]{1,20}$/), fc.stringMatching(/^[ -~]{0,40}$/)),
);

const httpCase: fc.Arbitrary<HttpCase> = fc.record({
  method,
  path,
  auth,
  contentType: fc.constantFrom('application/json', 'application/octet-stream', null, 'text/plain', 'application/json; charset=latin1', 'multipart/form-data; boundary=x'),
  framing: fc.oneof({ weight: 12, arbitrary: fc.constant('length' as const) }, { weight: 1, arbitrary: fc.constantFrom<Framing>('chunked', 'none', 'short', 'long', 'abort', 'both', 'badLength') }),
  body,
  headers: fc.oneof({ weight: 8, arbitrary: fc.constant([]) }, { weight: 1, arbitrary: fc.array(header, { minLength: 1, maxLength: 2 }) }),
});

// ---- the raw client ---------------------------------------------------------------------------

interface Answer {
  /** null: the connection closed (or was reset) without an answer. */
  status: number | null;
  headers: Record<string, string>;
  body: Buffer;
  raw: Buffer;
}

/** endAfterWrite: 'end' half-closes once the request is written, 'reset' then resets the connection. */
function send(port: number, request: Buffer, endAfterWrite: false | 'end' | 'reset', timeoutMs: number): Promise<Answer | 'timeout'> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    const socket = net.connect({ port, host: '127.0.0.1' });
    let settled = false;
    const finish = (a: Answer | 'timeout') => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      resolve(a);
    };
    const timer = setTimeout(() => finish('timeout'), timeoutMs);
    socket.on('connect', () => {
      socket.write(request, () => {
        if (endAfterWrite === 'end') socket.end();
        // A client that goes away in the middle of its body: the server must not count it a 500.
        else if (endAfterWrite === 'reset') setTimeout(() => socket.resetAndDestroy(), 5);
      });
    });
    socket.on('data', (d: Buffer) => chunks.push(d));
    socket.on('error', () => finish(parseAnswer(Buffer.concat(chunks))));
    socket.on('close', () => finish(parseAnswer(Buffer.concat(chunks))));
  });
}

function parseAnswer(all: Buffer): Answer {
  // Interim answers (100 Continue for "Expect: 100-continue") come before the real one.
  let raw = all;
  while (/^HTTP\/1\.[01] 1\d\d /.test(raw.subarray(0, 16).toString('latin1')) && raw.indexOf('\r\n\r\n') !== -1) raw = raw.subarray(raw.indexOf('\r\n\r\n') + 4);
  const end = raw.indexOf('\r\n\r\n');
  if (end === -1) return { status: null, headers: {}, body: Buffer.alloc(0), raw };
  const head = raw.subarray(0, end).toString('latin1').split('\r\n');
  const m = /^HTTP\/1\.[01] (\d{3})/.exec(head[0] ?? '');
  const headers: Record<string, string> = {};
  for (const line of head.slice(1)) {
    const i = line.indexOf(':');
    if (i > 0) headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
  }
  let rest = raw.subarray(end + 4);
  if (headers['content-length'] !== undefined) rest = rest.subarray(0, Number(headers['content-length']));
  else if (/chunked/i.test(headers['transfer-encoding'] ?? '')) rest = dechunk(rest);
  return { status: m ? Number(m[1]) : null, headers, body: rest, raw };
}

function dechunk(b: Buffer): Buffer {
  const out: Buffer[] = [];
  let at = 0;
  for (;;) {
    const eol = b.indexOf('\r\n', at);
    if (eol === -1) break;
    const n = parseInt(b.subarray(at, eol).toString('latin1'), 16);
    if (!Number.isFinite(n) || n === 0) break;
    out.push(b.subarray(eol + 2, eol + 2 + n));
    at = eol + 2 + n + 2;
  }
  return Buffer.concat(out);
}

// ---- oracles ----------------------------------------------------------------------------------

const CODES = new Set([...Object.keys(FLEETPATCH_CATALOGUE), ...Object.keys(XEN_CATALOGUE)]);
const catalogueStatus = (code: string): number | undefined =>
  (FLEETPATCH_CATALOGUE as Record<string, { httpStatus: number }>)[code]?.httpStatus ?? (XEN_CATALOGUE as Record<string, { httpStatus: number }>)[code]?.httpStatus;
/** Codes the server answers with more than one status (docs/hypervisor.md). */
const STATUSES_OF: Record<string, readonly number[]> = { REQUEST_INVALID: [400, 404, 405, 413], HOST_UNAUTHORIZED: [401, 403] };
const MAX_BODY = 3 * 1024 * 1024 + 1;

let fleet: RunningFleet | null = null;
const serverErrors: string[] = [];
let skewMs = 0;
const figures: Record<string, number> = { requests: 0, healthChecks: 0, resets: 0, nodeRefusals: 0, clockMoves: 0 };

function tokenFor(c: HttpCase, hostInPath: string | null): string | null {
  const f = fleet!;
  const hosts = f.fleet.hosts;
  const own = hosts.find((h) => h.id === hostInPath) ?? hosts[0]!;
  const other = hosts.find((h) => h.id !== own.id)!;
  switch (c.auth) {
    case 'none':
      return null;
    case 'host':
      return `Bearer ${own.token}`;
    case 'otherHost':
      return `Bearer ${other.token}`;
    case 'admin':
      return `Bearer ${f.adminToken}`;
    case 'hostForAdmin':
      return `Bearer ${hosts[0]!.token}`;
    case 'empty':
      return 'Bearer ';
    case 'basic':
      return `Basic ${Buffer.from(`x:${own.token}`).toString('base64')}`;
    case 'lowercase':
      return `bearer ${own.token}`;
    case 'garbage':
      return 'Bearer not-a-token';
    case 'long':
      return `Bearer ${'A'.repeat(10_000)}`;
    case 'two':
      return `Bearer ${own.token} ${other.token}`;
    case 'tab':
      return `Bearer\t${own.token}`;
  }
}

/** The request's path segments, decoded as the server decodes them (null: not valid percent-encoding). */
function segmentsOf(p: string): string[] | null {
  // The server splits at '?' only: a '#' (which no client sends) is part of the path.
  const q = p.indexOf('?');
  const pathOnly = q === -1 ? p : p.slice(0, q);
  try {
    return pathOnly.split('/').filter((s) => s !== '').map((s) => decodeURIComponent(s));
  } catch {
    return null;
  }
}

function build(c: HttpCase, authorization: string | null): { request: Buffer; endAfterWrite: false | 'end' | 'reset' } {
  const lines = [`${c.method} ${c.path} HTTP/1.1`, 'Host: 127.0.0.1', 'Connection: close'];
  if (authorization !== null) lines.push(`Authorization: ${authorization}`);
  if (c.auth === 'two' && authorization !== null) lines.push(`Authorization: ${authorization}`);
  if (c.contentType) lines.push(`Content-Type: ${c.contentType}`);
  for (const [k, v] of c.headers) lines.push(`${k}: ${v}`);
  const n = c.body.length;
  let payload: Buffer = Buffer.from(c.body);
  let endAfterWrite: false | 'end' | 'reset' = false;
  switch (c.framing) {
    case 'length':
      if (n > 0 || c.method === 'POST') lines.push(`Content-Length: ${n}`);
      break;
    case 'chunked':
      lines.push('Transfer-Encoding: chunked');
      payload = Buffer.concat([Buffer.from(`${n.toString(16)}\r\n`), payload, Buffer.from(n > 0 ? '\r\n0\r\n\r\n' : '\r\n')]);
      break;
    case 'none':
      break;
    case 'short':
      lines.push(`Content-Length: ${Math.max(0, n - 1)}`);
      break;
    case 'long':
      lines.push(`Content-Length: ${n + 10}`);
      endAfterWrite = 'end';
      break;
    case 'abort':
      lines.push(`Content-Length: ${n + 10}`);
      endAfterWrite = 'reset';
      break;
    case 'both':
      lines.push(`Content-Length: ${n}`, 'Transfer-Encoding: chunked');
      break;
    case 'badLength':
      lines.push(`Content-Length: ${n}x`);
      break;
  }
  return { request: Buffer.concat([Buffer.from(`${lines.join('\r\n')}\r\n\r\n`, 'latin1'), payload]), endAfterWrite };
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** The documented success shapes (docs/hypervisor.md), by route: the fields a client relies on. */
function checkSuccess(route: string, status: number, doc: unknown): void {
  const need = (cond: boolean, what: string) => {
    if (!cond) throw new OracleViolation(`${route} answered ${status} with a body that is not its documented shape: ${what}: ${JSON.stringify(doc).slice(0, 300)}`);
  };
  need(isRecord(doc), 'not an object');
  const d = doc as Record<string, unknown>;
  switch (route) {
    case 'healthz':
      return need(d.ok === true && typeof d.hosts === 'number', '{ ok, hosts }');
    case 'list':
      return need(Array.isArray(d.entries) && typeof d.version === 'number' && typeof d.total === 'number' && Array.isArray(d.appliedStack), '{ entries, version, total, appliedStack }');
    case 'upload':
      return need(status === 201 && typeof d.name === 'string' && d.state === 'CHECKED' && typeof d.buildId === 'string' && 'dependencyCheck' in d, '201 { name, state: CHECKED, buildId, dependencyCheck }');
    case 'get':
      return need(typeof d.name === 'string' && (d.state === 'CHECKED' || d.state === 'APPLIED') && typeof d.rc === 'number', '{ name, state, rc }');
    case 'action':
      return need(d.rc === 0 && typeof d.scheduled === 'boolean' && (status === 202) === d.scheduled, '{ rc: 0, scheduled } with 202 when scheduled');
    case 'functions':
      return need(Array.isArray(d.functions), '{ host, functions }');
    case 'call':
      return need(typeof d.function === 'string' && ['string', 'integer', 'undefined'].includes(d.kind as string), '{ function, result, kind }');
    case 'reboot':
      return need(d.rebooted === true && typeof d.boots === 'number', '{ rebooted, boots }');
    case 'faults':
      return need(Array.isArray(d.rules), 'a fault set');
    case 'stats':
      return need(typeof d.rssBytes === 'number' && typeof d.requests === 'number', '{ hosts, requests, rssBytes, ... }');
  }
}

/** Which documented route a path is (for the success shapes), from its decoded segments. */
function routeOf(method: string, segs: readonly string[]): string {
  const [a, b, c, d, e] = segs;
  if (a === 'healthz' && b === undefined) return 'healthz';
  if (a === 'admin') return b === 'faults' ? 'faults' : b === 'stats' ? 'stats' : 'admin?';
  if (a !== 'hosts' || b === undefined) return '?';
  if (c === 'livepatch' && d === undefined) return 'list';
  if (c === 'livepatch' && e === undefined) return method === 'POST' ? 'upload' : 'get';
  if (c === 'livepatch' && e === 'action') return 'action';
  if (c === 'functions') return d === undefined ? 'functions' : 'call';
  if (c === 'dump') return 'dump';
  if (c === 'reboot') return 'reboot';
  return '?';
}

async function healthz(): Promise<void> {
  figures.healthChecks!++;
  const a = await send(fleet!.port, Buffer.from('GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'), false, limits.operationMs * 10);
  if (a === 'timeout' || a.status !== 200) throw new OracleViolation(`GET /healthz does not answer 200 any more (${a === 'timeout' ? 'no answer' : a.status})`);
}

/** Hosts a request rebooted come back once the server's clock passes the longest reboot. */
function wakeHosts(): void {
  const f = fleet!;
  const down = f.fleet.hosts.some((h) => {
    const s = f.host(h.id);
    return s !== undefined && sm.isDown(s, performance.now() + skewMs);
  });
  if (down) {
    skewMs += MAX_DOWN_MS + 1;
    figures.clockMoves!++;
  }
}

async function runOne(c: HttpCase): Promise<string> {
  const f = fleet!;
  figures.requests!++;
  const segs = segmentsOf(c.path);
  const hostInPath = segs && segs[0] === 'hosts' ? (segs[1] ?? null) : null;
  const authorization = tokenFor(c, hostInPath);
  const { request, endAfterWrite } = build(c, authorization);
  const served = hostInPath !== null ? f.host(hostInPath) : undefined;
  const wasDown = served !== undefined && sm.isDown(served, performance.now() + skewMs);
  const limit = limits.operationMs + (limits.msPerKiB * request.length) / 1024;
  const t0 = cpuMs();
  // The wall-clock wait is generous (a loaded machine); the hang oracle is the CPU spent.
  const a = await send(f.port, request, endAfterWrite, limit * 10 + 5000);
  // The server sees a reset a moment after the client makes it.
  if (endAfterWrite === 'reset') await new Promise((r) => setTimeout(r, 20));
  const ms = cpuMs() - t0;
  const touchedFaults = segs?.[0] === 'admin';
  try {
    if (a === 'timeout' || ms > limit) throw new SlowCase(ms, `${c.method} ${c.path.slice(0, 80)}`);
    const text = a.raw.toString('latin1');
    for (const h of f.fleet.hosts) if (text.includes(h.token)) throw new OracleViolation(`an answer contains ${h.id}'s token`);
    if (text.includes(f.adminToken)) throw new OracleViolation('an answer contains the admin token');

    if (a.status === null) {
      // Dropped: a host that is down (or that this very request rebooted), or a request cut short.
      figures.resets!++;
      await healthz();
      const nowDown = served !== undefined && sm.isDown(f.host(hostInPath!)!, performance.now() + skewMs);
      if (wasDown || nowDown || endAfterWrite || c.framing !== 'length') return 'connection reset';
      // Node closes CONNECT (and Upgrade) requests itself when nobody listens for them.
      if (c.method === 'CONNECT' || c.headers.some(([k]) => /^upgrade$/i.test(k))) return 'closed by Node (CONNECT)';
      throw new OracleViolation(`the connection closed without an answer (${c.method} ${c.path.slice(0, 80)}, host up)`);
    }
    const status = a.status;
    if (status === 500) throw new OracleViolation(`500: ${a.body.toString('utf8').slice(0, 300)}`);
    const ctype = a.headers['content-type'] ?? '';
    if (a.body.length === 0 && [400, 413, 431, 505].includes(status) && !ctype) {
      // Node's own HTTP parser refused the request before the server saw it.
      figures.nodeRefusals!++;
      return `Node's HTTP parser refused it (${status})`;
    }
    if (a.body.length > MAX_BODY) throw new OracleViolation(`an answer of ${a.body.length} bytes`);
    const route = segs ? routeOf(c.method, segs) : '?';
    if (c.method === 'HEAD') return `HEAD ${status}`;
    if (route === 'dump' && status === 200) {
      if (!ctype.startsWith('text/plain')) throw new OracleViolation(`GET /dump answered ${ctype}`);
      return 'accepted';
    }
    if (!ctype.startsWith('application/json')) throw new OracleViolation(`${status} answered with content-type "${ctype}", not JSON: ${a.body.toString('utf8').slice(0, 200)}`);
    let doc: unknown;
    try {
      doc = JSON.parse(a.body.toString('utf8'));
    } catch {
      throw new OracleViolation(`${status} answered with a body that is not JSON: ${a.body.toString('utf8').slice(0, 200)}`);
    }

    // Authorization: a host route needs that host's token, /admin the admin token, as one
    // bearer credential (the scheme's case and the blanks around the token do not matter).
    const presented = authorization === null ? undefined : /^Bearer\s+(\S+)\s*$/i.exec(authorization.trim())?.[1];
    const expected = segs?.[0] === 'admin' ? f.adminToken : f.fleet.hosts.find((h) => h.id === hostInPath)?.token;
    const guarded = (segs?.[0] === 'hosts' && segs.length > 1) || segs?.[0] === 'admin';
    if (guarded && (presented === undefined || presented !== expected) && status !== 401 && status !== 403) {
      throw new OracleViolation(`${c.method} ${c.path.slice(0, 80)} with credential "${c.auth}" answered ${status}, not 401/403`);
    }

    if (status >= 200 && status < 300) {
      if (![200, 201, 202].includes(status)) throw new OracleViolation(`an undocumented success status ${status}`);
      checkSuccess(route, status, doc);
      return 'accepted';
    }
    if (!isRecord(doc) || typeof doc.error !== 'string' || typeof doc.message !== 'string' || !doc.message) {
      throw new OracleViolation(`${status}: an error that is not { error, message }: ${JSON.stringify(doc).slice(0, 200)}`);
    }
    const code = doc.error;
    if (!CODES.has(code)) throw new OracleViolation(`${status}: "${code}" is not a catalogue code`);
    const allowed = STATUSES_OF[code] ?? [catalogueStatus(code)!];
    if (!allowed.includes(status)) throw new OracleViolation(`${code} answered with ${status}, the catalogue says ${allowed.join('/')}`);
    if (code in XEN_ERRNO) {
      const errno = XEN_ERRNO[code as XenErrnoName];
      if (doc.rc !== -errno || doc.code !== errno || doc.errno !== code) throw new OracleViolation(`a Xen refusal whose rc/code/errno disagree: ${JSON.stringify(doc).slice(0, 200)}`);
    }
    return `refused ${code}`;
  } finally {
    if (touchedFaults) f.setFaults({});
    wakeHosts();
    // Let the server finish with the request (it may log after the client is gone).
    await new Promise((r) => setImmediate(r));
    const errors = serverErrors.splice(0).filter((l) => /"level":(50|60)/.test(l));
    // eslint-disable-next-line no-unsafe-finally
    if (errors.length > 0) throw new OracleViolation(`the server logged an error (a 500): ${errors[0]!.slice(0, 600)}`);
  }
}

export const httpTarget: FuzzTarget<HttpCase> = {
  name: 'http',
  extension: '.json',

  async setup(seed) {
    // The server's own log: an error line is a 500 somewhere, even one no client saw (its
    // connection gone before the answer).
    const logger = createLogger('warn', { pretty: false, destination: { write: (line: string) => void serverErrors.push(line) } });
    fleet = await startFleetServer({ hosts: HOSTS, seed, port: 0, actionDurationMs: 5, clock: () => performance.now() + skewMs, logger });
  },

  arbitrary: () => httpCase,

  async run(c) {
    for (const b of c.before ?? []) await runOne(b);
    return runOne(c);
  },

  async check() {
    await healthz();
    const rss = process.memoryUsage.rss();
    figures.maxRssBytes = Math.max(figures.maxRssBytes ?? 0, rss);
  },

  encode: (c) => new TextEncoder().encode(JSON.stringify(c, (_k, v: unknown) => (v instanceof Uint8Array ? Buffer.from(v).toString('base64') : v), 1)),
  decode: (bytes) => {
    type Stored = Omit<HttpCase, 'body' | 'before'> & { body: string; before?: Stored[] };
    const revive = ({ before, body, ...rest }: Stored): HttpCase => ({ ...rest, body: new Uint8Array(Buffer.from(body, 'base64')), ...(before ? { before: before.map(revive) } : {}) });
    return revive(JSON.parse(new TextDecoder().decode(bytes)) as Stored);
  },
  figures: () => ({ ...figures }),
  async teardown() {
    await fleet?.close();
    fleet = null;
  },
};
