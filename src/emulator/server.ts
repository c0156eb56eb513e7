/**
 * The fleet server: one node:http process serving up to 10,000 emulated hosts. It is a thin shell
 * over the pure state machine: it authenticates, asks the fault injector what happens to this
 * request, holds the real clock (performance.now) and the latency timers, and maps results to
 * JSON. Asynchronous actions need no timers at all: they complete when the next request to that
 * host observes that their time has passed (`settle`).
 *
 * Routes (every /hosts/:id/* route needs `Authorization: Bearer <that host's token>`):
 *   GET  /healthz
 *   GET  /hosts/:id/livepatch?idx=&nr=          LIST
 *   POST /hosts/:id/livepatch/:name             UPLOAD (application/octet-stream body)
 *   GET  /hosts/:id/livepatch/:name             GET
 *   POST /hosts/:id/livepatch/:name/action      ACTION {"cmd","timeoutNs"?,"nodeps"?}
 *   GET  /hosts/:id/functions                   the function table
 *   GET  /hosts/:id/functions/:fn               call a function
 *   GET  /hosts/:id/dump                        Xen's debug dump (text/plain)
 *   POST /hosts/:id/reboot                      {"downMs"?}
 *   GET|POST /admin/faults, GET /admin/stats    with the admin token
 */
import { randomBytes, timingSafeEqual } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { FleetpatchError, XenError } from '../errors.ts';
import type { Logger } from '../runtime/logger.ts';
import { FaultInjector, loadFaultsFile, parseFaults, type Faults, type FaultsInput, type FaultTarget, type RequestKind } from './faults.ts';
import { writeFleetFile, type FleetFile } from '../agent/fleet-file.ts';
import { bootHost, createFleet, newToken, type FleetMember } from './fleet.ts';
import { callFunction, functionTable } from './functions.ts';
import { transitions, type JournalEntry } from './journal.ts';
import type { HypervisorImage } from '../payload/image.ts';
import { DEFAULT_HOST_IMAGE, cachingChecker, hostImage, loadImageFile, payloadLibraryChecker } from './payload-adapter.ts';
import * as sm from './state-machine.ts';
import { callView, listView, payloadView, statusView, toJson } from './views.ts';
import { encodeError, type WireAction, type WireReboot, type WireUpload } from '../agent/contract.ts';

/** Xen refuses bigger payloads with EINVAL; we stop buffering a little above that. */
const MAX_UPLOAD_BYTES = 2 * 1024 * 1024;
/** Journal entries kept per host (the oldest go first). */
const JOURNAL_PER_HOST = 512;
const MAX_JSON_BYTES = 256 * 1024;
/** The longest a reboot may keep a host down (a day); every number the API takes is finite and bounded. */
export const MAX_DOWN_MS = 86_400_000;
/** LIST's idx and nr are uint32 in Xen's sysctl. */
const U32_MAX = 0xffff_ffff;

export interface FleetServerOptions {
  hosts: number;
  /**
   * Hypervisor images: the emulator's, the payload library's (readImage, defineImage,
   * DEFAULT_IMAGE), or paths of linked ELF images. Host i runs image i mod count. Default: the
   * built-in image.
   */
  images?: readonly (sm.HostImage | HypervisorImage | string)[];
  /** Seed of every fault draw (default 1). */
  seed?: number;
  /** A faults document, or the path of a faults file (YAML or JSON). */
  faults?: FaultsInput | string;
  /** Shortcuts that override the faults' fleet-wide values. */
  latencyMs?: number;
  actionLatencyMs?: number;
  actionDurationMs?: number;
  /** 0 (default): any free port. */
  port?: number;
  /** Address to listen on (default 127.0.0.1). */
  listen?: string;
  /** URL written into the fleet file (default http://127.0.0.1:<port>). */
  publicUrl?: string;
  /** Where to write the fleet file; default: a private temporary directory removed on close. */
  fleetFile?: string;
  logger?: Logger;
  /** Xen's upload checks; default: the payload library's (memoised). */
  checker?: sm.UploadChecker;
  /** Milliseconds; default performance.now. */
  clock?: () => number;
}

export interface FleetStats {
  hosts: number;
  images: number;
  requests: number;
  rssBytes: number;
  heapUsedBytes: number;
  uptimeMs: number;
  pid: number;
}

export interface RunningFleet {
  readonly url: string;
  readonly port: number;
  readonly fleet: FleetFile;
  /** Path of the fleet file written for this server. */
  readonly fleetFile: string;
  readonly adminToken: string;
  /** Replaces the fault set (counters start again). */
  setFaults(faults: FaultsInput): void;
  readonly faults: Faults;
  /** The current state of a host (for tests and the in-process demo); settled to now. */
  host(id: string): sm.Host | undefined;
  stats(): FleetStats;
  close(): Promise<void>;
}

interface ServedHost {
  readonly member: FleetMember;
  readonly target: FaultTarget;
  state: sm.Host;
}

type Route =
  | { kind: 'list' }
  | { kind: 'upload'; name: string }
  | { kind: 'get'; name: string }
  | { kind: 'action'; name: string }
  | { kind: 'functions' }
  | { kind: 'call'; fn: string }
  | { kind: 'dump' }
  | { kind: 'reboot' };

/** A refusal of the agent protocol: a catalogue code (its HTTP status comes from the catalogue) and the reason. */
function refuse(code: 'REQUEST_INVALID' | 'REQUEST_TOO_LARGE' | 'ROUTE_NOT_FOUND' | 'METHOD_NOT_ALLOWED' | 'HOST_UNAUTHORIZED' | 'HOST_FORBIDDEN', message: string): FleetpatchError {
  return new FleetpatchError(code, message);
}

function matchRoute(method: string, rest: readonly string[]): Route {
  const [a, b, c, ...more] = rest;
  const route = ((): { route: Route; method: string } | null => {
    if (a === 'livepatch' && b === undefined) return { route: { kind: 'list' }, method: 'GET' };
    if (a === 'livepatch' && b !== undefined && c === undefined) {
      return method === 'POST' ? { route: { kind: 'upload', name: b }, method: 'POST' } : { route: { kind: 'get', name: b }, method: 'GET' };
    }
    if (a === 'livepatch' && b !== undefined && c === 'action' && more.length === 0) return { route: { kind: 'action', name: b }, method: 'POST' };
    if (a === 'functions' && b === undefined) return { route: { kind: 'functions' }, method: 'GET' };
    if (a === 'functions' && b !== undefined && c === undefined) return { route: { kind: 'call', fn: b }, method: 'GET' };
    if (a === 'dump' && b === undefined) return { route: { kind: 'dump' }, method: 'GET' };
    if (a === 'reboot' && b === undefined) return { route: { kind: 'reboot' }, method: 'POST' };
    return null;
  })();
  if (!route) throw refuse('ROUTE_NOT_FOUND', `no such route: /hosts/:id/${rest.join('/')}`);
  if (route.method !== method) throw refuse('METHOD_NOT_ALLOWED', `${method} is not allowed here; use ${route.method}`);
  return route.route;
}

/** Buffers a request body up to `limit` bytes; beyond that, counts and discards the rest. */
async function readBody(req: http.IncomingMessage, limit: number): Promise<{ bytes: Buffer; truncated: boolean; size: number }> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    if (size + chunk.length <= limit) chunks.push(chunk);
    else if (size < limit) chunks.push(chunk.subarray(0, limit - size));
    size += chunk.length;
  }
  return { bytes: Buffer.concat(chunks), truncated: size > limit, size };
}

async function readJson(req: http.IncomingMessage): Promise<Record<string, unknown>> {
  const { bytes, truncated } = await readBody(req, MAX_JSON_BYTES);
  if (truncated) throw refuse('REQUEST_TOO_LARGE', `the JSON body is larger than ${MAX_JSON_BYTES} bytes`);
  if (bytes.length === 0) return {};
  let doc: unknown;
  try {
    doc = JSON.parse(bytes.toString('utf8'));
  } catch {
    throw refuse('REQUEST_INVALID', 'the body is not JSON');
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) throw refuse('REQUEST_INVALID', 'the body must be a JSON object');
  return doc as Record<string, unknown>;
}

function tokenMatches(presented: string, expected: string): boolean {
  const a = Buffer.from(presented);
  const b = Buffer.from(expected);
  return a.length === b.length && timingSafeEqual(a, b);
}

/** 401 without credentials, 403 with wrong ones; null when the bearer token is right. */
function authFailure(req: http.IncomingMessage, expected: string): FleetpatchError | null {
  const header = req.headers.authorization;
  if (!header) return refuse('HOST_UNAUTHORIZED', 'missing Authorization: Bearer <token>');
  const m = /^Bearer\s+(\S+)\s*$/i.exec(header);
  if (!m) return refuse('HOST_UNAUTHORIZED', 'the Authorization header is not a bearer token');
  if (!tokenMatches(m[1]!, expected)) return refuse('HOST_FORBIDDEN', 'the bearer token is not this host\'s');
  return null;
}

function send(res: http.ServerResponse, status: number, body: unknown): void {
  const text = toJson(body);
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

function sendText(res: http.ServerResponse, status: number, text: string): void {
  res.writeHead(status, { 'content-type': 'text/plain; charset=utf-8', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

function mergeShortcuts(faults: Faults, opts: FleetServerOptions): Faults {
  return {
    ...faults,
    ...(opts.latencyMs !== undefined ? { latencyMs: opts.latencyMs } : {}),
    ...(opts.actionLatencyMs !== undefined ? { actionLatencyMs: opts.actionLatencyMs } : {}),
    ...(opts.actionDurationMs !== undefined ? { actionDurationMs: opts.actionDurationMs } : {}),
  };
}

/** Two different images both called xen-syms get their build-id's first bytes appended. */
function distinctNames(images: sm.HostImage[]): sm.HostImage[] {
  const builds = new Map<string, Set<string>>();
  for (const i of images) builds.set(i.name, (builds.get(i.name) ?? new Set()).add(i.buildId));
  return images.map((i) => (builds.get(i.name)!.size > 1 ? { ...i, name: `${i.name}@${i.buildId.slice(0, 8)}` } : i));
}

/** Starts a fleet server in this process. */
export async function startFleetServer(opts: FleetServerOptions): Promise<RunningFleet> {
  const clock = opts.clock ?? (() => performance.now());
  const seed = opts.seed ?? 1;
  const log = opts.logger?.child({ component: 'fleet' });
  const images = distinctNames(
    await Promise.all((opts.images?.length ? opts.images : [DEFAULT_HOST_IMAGE]).map((i) => (typeof i === 'string' ? loadImageFile(i) : 'functionAt' in i ? i : hostImage(i)))),
  );
  const baseFaults = typeof opts.faults === 'string' ? await loadFaultsFile(opts.faults) : parseFaults(opts.faults ?? {});
  let injector = new FaultInjector(mergeShortcuts(baseFaults, opts), seed);
  const check = opts.checker ?? cachingChecker(payloadLibraryChecker);
  const members = createFleet({ hosts: opts.hosts, images });
  // Every emulator run boots its hosts afresh: a boot identity no earlier run had, so a reader
  // that knew the hosts before sees that their stacks were lost.
  const bootNonce = randomBytes(6).toString('hex');
  const hosts = new Map<string, ServedHost>(
    members.map((m) => [m.id, { member: m, target: { id: m.id, labels: m.labels, image: { name: m.image.name, buildId: m.image.buildId } }, state: bootHost(m, { seed: `${bootNonce}-${m.id}`, now: clock() }) }]),
  );
  const wallOffsetMs = Date.now() - clock();
  // The hypervisors' own account of what happened on each host (journal.ts), bounded per host.
  const journal = new Map<string, JournalEntry[]>();
  const note = (served: ServedHost, entry: Omit<JournalEntry, 'at' | 'boot'> & { boot?: string }) => {
    let list = journal.get(served.member.id);
    if (!list) journal.set(served.member.id, (list = []));
    list.push({ at: new Date().toISOString(), boot: sm.bootId(served.state), ...entry });
    if (list.length > JOURNAL_PER_HOST) list.splice(0, list.length - JOURNAL_PER_HOST);
  };
  const setState = (served: ServedHost, next: sm.Host) => {
    if (next !== served.state) {
      const changes = transitions(served.state, next);
      served.state = next;
      for (const c of changes) note(served, c);
    }
  };
  const adminToken = newToken();
  const unknownHostToken = newToken();
  const started = clock();
  let requests = 0;
  /** Requests a 'hang' fault holds open; destroyed on close. */
  const hung = new Set<http.ServerResponse>();

  const stats = (): FleetStats => {
    const mem = process.memoryUsage();
    return { hosts: hosts.size, images: images.length, requests, rssBytes: mem.rss, heapUsedBytes: mem.heapUsed, uptimeMs: Math.round(clock() - started), pid: process.pid };
  };

  /** The host is unreachable: the connection is reset, as by a machine that is not there. */
  const drop = (req: http.IncomingMessage): null => {
    req.socket.destroy();
    return null;
  };

  async function handleHost(req: http.IncomingMessage, res: http.ServerResponse, id: string, rest: readonly string[]): Promise<number | null> {
    const served = hosts.get(id);
    // Authenticate first: a host that does not exist is refused exactly like a wrong token (the
    // comparison still runs, against a token nobody has), so host ids cannot be enumerated.
    const denied = authFailure(req, served?.member.token ?? unknownHostToken);
    if (denied) throw denied;
    if (!served) throw refuse('HOST_FORBIDDEN', 'the bearer token is not this host\'s');
    // A crashed or rebooting host answers nothing.
    setState(served, sm.settle(served.state, clock()));
    if (sm.isDown(served.state, clock())) return drop(req);
    const route = matchRoute(req.method ?? 'GET', rest);

    const upload = route.kind === 'upload' ? await readBody(req, MAX_UPLOAD_BYTES) : null;
    const json = route.kind === 'action' || route.kind === 'reboot' ? await readJson(req) : null;

    const decision = injector.onRequest(served.target, route.kind as RequestKind);
    if (decision.unreachable === 'refuse') return drop(req);
    if (decision.unreachable === 'hang') {
      hung.add(res);
      res.once('close', () => hung.delete(res));
      return null;
    }
    if (decision.reboot) {
      setState(served, sm.reboot(served.state, { now: clock(), downMs: decision.reboot.downMs }));
      log?.info({ host: id, downMs: decision.reboot.downMs }, 'injected reboot');
      return drop(req);
    }
    if (decision.latencyMs > 0) await sleep(decision.latencyMs);

    const now = clock();
    setState(served, sm.settle(served.state, now));
    if (sm.isDown(served.state, now)) return drop(req);
    const host = served.state;

    const answer = <T>(o: sm.Outcome<T>, status: number, view: (v: T) => unknown): number => {
      setState(served, o.host);
      const check = o.ok ? (o.value as { dependencyCheck?: sm.DependencyCheck | null }).dependencyCheck : (o.error.details.dependencyCheck as sm.DependencyCheck | undefined);
      if (check) note(served, { kind: 'checked', name: check.payload, buildId: check.payloadBuildId, check });
      if (!o.ok) throw o.error;
      send(res, status, view(o.value));
      return status;
    };

    switch (route.kind) {
      case 'list': {
        const idx = intParam(req, 'idx', 0);
        const nr = intParam(req, 'nr', sm.LIVEPATCH_LIST_MAX);
        return answer(sm.list(host, { idx, nr }, now), 200, (page) => listView(served.state, page, idx, wallOffsetMs));
      }
      case 'get':
        return answer(sm.getStatus(host, route.name, now), 200, statusView);
      case 'upload': {
        if (upload!.truncated) {
          throw new XenError('EINVAL', `${route.name}: the payload is ${upload!.size} bytes; Xen accepts at most 2 MiB (${MAX_UPLOAD_BYTES})`, { payload: route.name, size: upload!.size });
        }
        return answer(sm.upload(host, { name: route.name, bytes: new Uint8Array(upload!.bytes) }, { now, check }), 201, (v): WireUpload => ({
          ...payloadView(v.payload),
          dependencyCheck: v.dependencyCheck,
        }));
      }
      case 'action': {
        const body = json!;
        const cmd = body.cmd;
        if (typeof cmd !== 'string') throw refuse('REQUEST_INVALID', 'the body needs "cmd": "apply" | "revert" | "replace" | "unload"');
        if (body.timeoutNs !== undefined && (typeof body.timeoutNs !== 'number' || !Number.isFinite(body.timeoutNs))) throw refuse('REQUEST_INVALID', '"timeoutNs" must be a finite number of nanoseconds');
        if (body.nodeps !== undefined && typeof body.nodeps !== 'boolean') throw refuse('REQUEST_INVALID', '"nodeps" must be true or false');
        const outcome = sm.action(
          host,
          { name: route.name, cmd, timeoutNs: body.timeoutNs as number | undefined, nodeps: body.nodeps as boolean | undefined },
          {
            now,
            effects: ({ payload, cmd: c, stack }) =>
              injector.actionEffects(served.target, decision.n, {
                payload: { name: payload.name, buildId: payload.facts.buildId },
                cmd: c,
                stack: stack.map((p) => ({ name: p.name, buildId: p.facts.buildId })),
              }),
          },
        );
        return answer(outcome, outcome.ok && outcome.value.scheduled ? 202 : 200, (v): WireAction => ({ rc: 0, scheduled: v.scheduled, dependencyCheck: v.dependencyCheck }));
      }
      case 'functions':
        send(res, 200, { host: id, functions: functionTable(host, now).map(callView) });
        return 200;
      case 'call':
        return answer(callFunction(host, route.fn, now), 200, callView);
      case 'dump':
        sendText(res, 200, sm.dump(host, now));
        return 200;
      case 'reboot': {
        const downMs = json!.downMs ?? 0;
        if (typeof downMs !== 'number' || !Number.isFinite(downMs) || downMs < 0 || downMs > MAX_DOWN_MS) {
          throw refuse('REQUEST_INVALID', `"downMs" must be a number of milliseconds from 0 to ${MAX_DOWN_MS} (a day)`);
        }
        setState(served, sm.reboot(host, { now, downMs }));
        const body: WireReboot = { rebooted: true, boots: served.state.boots };
        send(res, 200, body);
        return 200;
      }
    }
  }

  async function handleAdmin(req: http.IncomingMessage, res: http.ServerResponse, rest: readonly string[]): Promise<number> {
    const denied = authFailure(req, adminToken);
    if (denied) throw denied;
    const what = rest.join('/');
    if (what === 'faults' && req.method === 'GET') {
      send(res, 200, injector.faults);
      return 200;
    }
    if (what === 'faults' && (req.method === 'POST' || req.method === 'PUT')) {
      const doc = await readJson(req);
      const faults = parseFaults(doc, 'POST /admin/faults');
      injector = new FaultInjector(faults, seed);
      log?.info({ rules: faults.rules.length }, 'fault set replaced');
      send(res, 200, injector.faults);
      return 200;
    }
    if (what === 'journal' && req.method === 'GET') {
      const only = new URL(req.url ?? '/', 'http://fleet').searchParams.get('host');
      const ids = only ? [only] : [...hosts.keys()];
      send(res, 200, { hosts: Object.fromEntries(ids.map((h) => [h, journal.get(h) ?? []])) });
      return 200;
    }
    if (what === 'stats' && req.method === 'GET') {
      send(res, 200, stats());
      return 200;
    }
    throw refuse('ROUTE_NOT_FOUND', `no such admin route: ${req.method} /admin/${what}`);
  }

  function intParam(req: http.IncomingMessage, key: string, dflt: number): number {
    const raw = new URL(req.url ?? '/', 'http://fleet').searchParams.get(key);
    if (raw === null || raw === '') return dflt;
    if (!/^\d{1,10}$/.test(raw) || Number(raw) > U32_MAX) throw new XenError('EINVAL', `LIST ${key} must be an unsigned 32-bit integer (got "${raw.slice(0, 40)}")`);
    return Number(raw);
  }

  const server = http.createServer((req, res) => {
    requests++;
    const t0 = performance.now();
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    let segments: string[];
    const done = (status: number | null, extra: Record<string, unknown> = {}) =>
      log?.debug({ method: req.method, path: q === -1 ? url : url.slice(0, q), status, ms: +(performance.now() - t0).toFixed(2), ...extra }, 'request');
    try {
      segments = (q === -1 ? url : url.slice(0, q)).split('/').filter((s) => s !== '').map((s) => decodeURIComponent(s));
    } catch {
      send(res, 400, { error: 'REQUEST_INVALID', message: 'the path is not valid percent-encoding' });
      return done(400);
    }
    const work = (async (): Promise<number | null> => {
      if (segments.length === 1 && segments[0] === 'healthz') {
        send(res, 200, { ok: true, hosts: hosts.size });
        return 200;
      }
      if (segments[0] === 'admin') return handleAdmin(req, res, segments.slice(1));
      if (segments[0] === 'hosts' && segments[1] !== undefined) return handleHost(req, res, segments[1], segments.slice(2));
      throw refuse('ROUTE_NOT_FOUND', `no such route: ${req.method} ${url}`);
    })();
    work.then(
      (status) => done(status),
      (e: unknown) => {
        if (res.headersSent || res.destroyed) return done(null, { error: String(e) });
        const { status, body } = encodeError(e);
        if (status === 401) res.setHeader('www-authenticate', 'Bearer');
        if (status === 500) log?.error({ err: e instanceof Error ? e.stack : String(e) }, 'request failed');
        send(res, status, body);
        done(status, { error: body.error });
      },
    );
  });
  server.keepAliveTimeout = 65_000;
  server.headersTimeout = 66_000;

  const listen = opts.listen ?? '127.0.0.1';
  await new Promise<void>((resolve, reject) => {
    server.once('error', (e: NodeJS.ErrnoException) =>
      reject(
        e.code === 'EADDRINUSE'
          ? new FleetpatchError('ARGUMENT', `port ${opts.port} on ${listen} is already in use; pick another with --port (0 = any free port)`)
          : e,
      ),
    );
    server.listen(opts.port ?? 0, listen, () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  const url = (opts.publicUrl ?? `http://127.0.0.1:${port}`).replace(/\/+$/, '');

  const fleet: FleetFile = {
    url,
    adminToken,
    createdAt: new Date().toISOString(),
    seed,
    images: [...new Map(images.map((i) => [`${i.name}\0${i.buildId}`, { name: i.name, buildId: i.buildId }])).values()],
    hosts: members.map((m) => ({ id: m.id, token: m.token, labels: { ...m.labels }, buildId: m.image.buildId, image: m.image.name })),
  };
  let tempDir: string | null = null;
  let fleetFile = opts.fleetFile;
  if (!fleetFile) {
    tempDir = await mkdtemp(path.join(os.tmpdir(), 'fleetpatch-fleet-'));
    fleetFile = path.join(tempDir, 'fleet.json');
  }
  try {
    await writeFleetFile(fleetFile, fleet);
  } catch (e) {
    // A fleet nobody can find is no use: stop listening and say why, in one line.
    await new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    });
    if (tempDir) await rm(tempDir, { recursive: true, force: true });
    const err = e as NodeJS.ErrnoException;
    const why =
      err.code === 'EEXIST' || err.code === 'ENOTDIR'
        ? `${err.code}: ${path.dirname(fleetFile)} is not a directory`
        : err.code
          ? `${err.code} (${err.message.replace(/^[A-Z]+: /, '').split(',')[0]})`
          : err.message;
    throw new FleetpatchError('FLEET_FILE_INVALID', `cannot write the fleet file ${fleetFile}: ${why}`, { file: fleetFile, ...(err.code ? { errno: err.code } : {}) });
  }
  log?.info({ url, hosts: hosts.size, images: fleet.images.map((i) => i.name), fleetFile }, 'fleet server listening');

  let closed: Promise<void> | undefined;
  return {
    url,
    port,
    fleet,
    fleetFile,
    adminToken,
    get faults() {
      return injector.faults;
    },
    setFaults(f) {
      injector = new FaultInjector(parseFaults(f), seed);
    },
    host(id) {
      const s = hosts.get(id);
      if (!s) return undefined;
      s.state = sm.settle(s.state, clock());
      return s.state;
    },
    stats,
    close() {
      closed ??= (async () => {
        for (const res of hung) res.destroy();
        await new Promise<void>((resolve) => {
          server.close(() => resolve());
          server.closeAllConnections();
        });
        if (tempDir) await rm(tempDir, { recursive: true, force: true });
      })();
      return closed;
    },
  };
}
