/**
 * The fleet server: one node:http process serving up to 10,000 emulated hosts. It is a thin shell
 * over pure parts: it authenticates, reads bodies, asks the fault injector what happens to this
 * request, holds the real clock (performance.now), the latency timers and the journal; what a
 * request is (requests.ts) and what it does to a host (dispatch.ts, over the state machine) are
 * decided without HTTP. Asynchronous actions need no timers at all: they complete when the next request to that
 * host observes that their time has passed (`settle`).
 *
 * Routes (every /hosts/:id/* route needs `Authorization: Bearer <that host's token>`):
 *   GET  /healthz
 *   GET  /hosts/:id/livepatch?idx=&nr=          LIST
 *   POST /hosts/:id/livepatch/:name             UPLOAD (application/octet-stream body)
 *   GET  /hosts/:id/livepatch/:name             GET
 *   POST /hosts/:id/livepatch/:name/action      ACTION {"cmd","timeoutNs"?,"nodeps"?,"waitMs"?}
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
import { FleetpatchError } from '../errors.ts';
import type { Logger } from '../runtime/logger.ts';
import { FaultInjector, loadFaultsFile, parseFaults, type Faults, type FaultsInput, type FaultTarget, type RequestKind } from './faults.ts';
import { writeFleetFile, type FleetFile } from '../agent/fleet-file.ts';
import { bootHost, createFleet, newToken, type FleetMember } from './fleet.ts';
import { transitions, type JournalEntry } from './journal.ts';
import type { HypervisorImage } from '../payload/image.ts';
import { DEFAULT_HOST_IMAGE, cachingChecker, hostImage, loadImageFile, payloadLibraryChecker } from './payload-adapter.ts';
import * as sm from './state-machine.ts';
import { statusView, toJson } from './views.ts';
import { NDJSON, encodeError, type WireAction, type WireActionDone, type WireStatus } from '../agent/contract.ts';
import { dispatch } from './dispatch.ts';
import { MAX_JSON_BYTES, MAX_UPLOAD_BYTES, bodyOf, jsonObject, matchRoute, parseRequest, refuse, type Body } from '../agent/requests.ts';

/** Journal entries kept per host (the oldest go first). */
const JOURNAL_PER_HOST = 512;
export { MAX_DOWN_MS } from '../agent/contract.ts';

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

/** Buffers a request body up to `limit` bytes; beyond that, counts and discards the rest. */
async function readBody(req: http.IncomingMessage, limit: number): Promise<Body> {
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
  return jsonObject(await readBody(req, MAX_JSON_BYTES));
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
    const reads = bodyOf(route);
    const body = reads === 'none' ? null : await readBody(req, reads === 'bytes' ? MAX_UPLOAD_BYTES : MAX_JSON_BYTES);

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
    const request = parseRequest(route, new URL(req.url ?? '/', 'http://fleet').searchParams, body);
    const out = dispatch(id, served.state, request, {
      now,
      check,
      wallOffsetMs,
      effects: ({ payload, cmd, stack }) =>
        injector.actionEffects(served.target, decision.n, {
          payload: { name: payload.name, buildId: payload.facts.buildId },
          cmd,
          stack: stack.map((p) => ({ name: p.name, buildId: p.facts.buildId })),
        }),
    });
    setState(served, out.host);
    if (out.check) note(served, { kind: 'checked', name: out.check.payload, buildId: out.check.payloadBuildId, check: out.check });
    if (out.refusal) throw out.refusal;
    const { status, json, text } = out.answer!;
    if (request.kind === 'action' && request.waitMs && (json as WireAction).scheduled) {
      // The scheduling result (and the hypervisor's check) goes out at once; the status follows.
      res.writeHead(status, { 'content-type': `${NDJSON}; charset=utf-8` });
      res.write(`${toJson(json)}\n`);
      const after = await awaitWork(served, request.name, request.waitMs);
      if (after === 'down') return drop(req);
      if (!res.destroyed) res.end(`${toJson({ status: after } satisfies WireActionDone)}\n`);
      return status;
    }
    if (text !== undefined) sendText(res, status, text);
    else send(res, status, json);
    return status;
  }

  /**
   * The agent's side of an ACTION's `waitMs`: it waits on the host for the scheduled work, as
   * `xen-livepatch apply` polls its status, and reads the payload's status as GET would when the
   * work is done or the wait is over. A host that crashed meanwhile answers nothing: its agent went
   * down with it.
   */
  async function awaitWork(served: ServedHost, name: string, waitMs: number): Promise<WireStatus | null | 'down'> {
    const until = clock() + waitMs;
    // An injected clock may stand still: the wait also ends when that much real time has passed.
    const realUntil = performance.now() + waitMs;
    for (;;) {
      const now = clock();
      setState(served, sm.settle(served.state, now));
      if (sm.isDown(served.state, now)) return 'down';
      const pending = served.state.pending;
      if (!pending || pending.name !== name || now >= until || performance.now() >= realUntil) break;
      await sleep(Math.max(1, Math.min(pending.completesAt, until) - now));
    }
    const o = sm.getStatus(served.state, name, clock());
    return o.ok ? statusView(o.value) : null;
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
