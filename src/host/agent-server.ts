/**
 * `fleetpatch agent`: the dom0 agent of ONE host, serving the agent contract
 * (src/agent/contract.ts, the routes of docs/hypervisor.md under /hosts/<its id>/) from Xen's own
 * tools, so HostAgent and the rollouts talk to it exactly as to an emulated host.
 *
 * A thin shell: requests are read as the emulator reads them (src/agent/requests.ts); the state
 * is the tools' (xen-livepatch list, xl info) reconciled with what the agent learned from the
 * payloads it parsed (agent-state.ts, kept by agent-store.ts); uploads pass the host's own gate
 * first (upload-gate.ts); every request, tool run, refusal and answer goes into the host's
 * journal (host-journal.ts), fsynced before the answer. Transport: HTTPS with mutual TLS (the
 * client must present a worker's certificate of the fleet CA, agent-tls.ts), or plain HTTP on
 * loopback with a bearer token, for development.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { timingSafeEqual } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import type { TLSSocket } from 'node:tls';
import { setTimeout as sleep } from 'node:timers/promises';
import { FleetpatchError, XenError, isFleetpatchError } from '../errors.ts';
import {
  ACTION_CMDS, NDJSON, SIGNATURE_HEADER, encodeError,
  type ActionCmd, type HostDependencyCheck, type WireAction, type WireActionDone, type WireCall, type WireList, type WireStatus, type WireUpload,
} from '../agent/contract.ts';
import { MAX_JSON_BYTES, MAX_UPLOAD_BYTES, matchRoute, parseRequest, refuse, bodyOf, type Body } from '../agent/requests.ts';
import type { PublicKey } from '../payload/signing.ts';
import type { Logger } from '../runtime/logger.ts';
import { peerRole } from '../pki/names.ts';
import { unstorable } from '../domain/text.ts';
import {
  afterAction, dependencyCheckFor, dependencyMismatchReason, forBoot, listPage, listVersion, parseDump, pendingOf, reconcile, xenDependsCheck,
  type AgentState, type DumpFacts, type Reconciled,
} from './agent-state.ts';
import { loadState, saveState } from './agent-store.ts';
import { HostJournal, boundedOutput } from './host-journal.ts';
import { gateUpload, readTrustedKeys } from './upload-gate.ts';
import { refusalError, type ListedPayload } from './xen-livepatch-output.ts';
import { XenTools, type XenToolsOptions, type ToolRunRecord } from './xen-tools.ts';

/** Functions whose result Xen tells through `xl info`: what a rollout's verify step can ask a real host. */
export const XL_INFO_FUNCTIONS: Readonly<Record<string, { field: string; kind: 'string' | 'integer' }>> = {
  xen_extra_version: { field: 'xen_extra', kind: 'string' },
  xen_major_version: { field: 'xen_major', kind: 'integer' },
  xen_minor_version: { field: 'xen_minor', kind: 'integer' },
  xen_changeset: { field: 'xen_changeset', kind: 'string' },
};

/** How often a waited ACTION reads the list while the work runs (each read runs xen-livepatch list). */
const WAIT_POLL_MS = 100;
const U32_MAX = 0xffff_ffff;

export interface AgentFiles {
  /** <dir>: the journal, state/, trusted-keys.json, tls/. */
  dir: string;
  /** Default /proc/sys/kernel/random/boot_id. */
  bootIdFile?: string;
  /** Default /proc/stat (its btime line). */
  statFile?: string;
}

export interface AgentOptions extends AgentFiles {
  hostId: string;
  /** Address and port to listen on; port 0: any free one. */
  host: string;
  port: number;
  tools: XenToolsOptions;
  /** Mutual TLS (the default), or null with `token` for plain HTTP on loopback. */
  tls: { key: string | Buffer; cert: string | Buffer; ca: string | Buffer } | null;
  token?: string;
  logger?: Logger;
}

export interface RunningAgent {
  readonly url: string;
  readonly port: number;
  readonly hostId: string;
  readonly trustedKeys: readonly string[];
  readonly journalFile: string;
  close(): Promise<void>;
}

export const trustedKeysFile = (dir: string) => path.join(dir, 'trusted-keys.json');

async function readBootId(file: string): Promise<string> {
  const id = (await readFile(file, 'utf8')).trim();
  if (!/^[0-9a-fA-F-]{8,64}$/.test(id)) throw new FleetpatchError('HOST_TOOL_OUTPUT', `${file} does not hold a boot id (a UUID): ${JSON.stringify(id.slice(0, 60))}`, { file });
  return id;
}

async function readBootTime(file: string): Promise<string> {
  const m = /^btime (\d{1,12})$/m.exec(await readFile(file, 'utf8'));
  if (!m) throw new FleetpatchError('HOST_TOOL_OUTPUT', `${file} has no "btime <seconds>" line to tell when the host booted`, { file });
  return new Date(Number(m[1]) * 1000).toISOString();
}

async function loadTrusted(dir: string): Promise<PublicKey[]> {
  const file = trustedKeysFile(dir);
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    throw new FleetpatchError('KEY_INVALID', `cannot read this host's trusted keys ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}; without them the agent refuses every payload`, { file });
  }
  return readTrustedKeys(text, file);
}

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

function send(res: http.ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

function isLoopback(host: string): boolean {
  return host === '127.0.0.1' || host === '::1' || host === 'localhost' || /^127\.\d+\.\d+\.\d+$/.test(host);
}

/** Who sent the request, from the transport: the worker's certificate name, or the bearer token's holder. */
function identify(req: http.IncomingMessage, token: string | undefined): string {
  if (token === undefined) {
    const socket = req.socket as TLSSocket;
    const cert = socket.getPeerX509Certificate?.();
    if (!cert) throw new FleetpatchError('HOST_UNAUTHORIZED', 'no client certificate: this agent talks only to fleetpatch workers over mutual TLS');
    if (!socket.authorized) {
      throw new FleetpatchError('HOST_UNAUTHORIZED', `the client certificate (${cert.subject.replace(/\n/g, ', ')}) is not one of this fleet's: ${socket.authorizationError ?? 'it does not chain to tls/ca.pem'}`);
    }
    const role = peerRole(cert);
    if (role?.kind !== 'worker') {
      throw new FleetpatchError('HOST_FORBIDDEN', `the client certificate is ${role ? `host ${role.id}'s` : 'not a fleet worker\'s (no fleetpatch://worker/<name> URI)'}: only a worker may drive this host`);
    }
    return `worker:${role.name}`;
  }
  const header = req.headers.authorization;
  if (!header) throw refuse('HOST_UNAUTHORIZED', 'missing Authorization: Bearer <token>');
  const m = /^Bearer\s+(\S+)\s*$/i.exec(header);
  if (!m) throw refuse('HOST_UNAUTHORIZED', 'the Authorization header is not a bearer token');
  const a = Buffer.from(m[1]!);
  const b = Buffer.from(token);
  if (a.length !== b.length || !timingSafeEqual(a, b)) throw refuse('HOST_FORBIDDEN', "the bearer token is not this host's");
  return 'bearer';
}

export async function startAgent(opts: AgentOptions): Promise<RunningAgent> {
  const log = opts.logger?.child({ component: 'agent', host: opts.hostId });
  const bootIdFile = opts.bootIdFile ?? '/proc/sys/kernel/random/boot_id';
  const statFile = opts.statFile ?? '/proc/stat';
  const stateDir = path.join(opts.dir, 'state');
  if (opts.tls === null) {
    if (!opts.token) throw new FleetpatchError('USAGE', 'agent: plain HTTP needs a bearer token');
    if (!isLoopback(opts.host)) throw new FleetpatchError('USAGE', `agent: --insecure-http listens on loopback only (127.0.0.1 or ::1), not ${opts.host}: anyone on the network could drive Xen`);
  }
  const trusted = await loadTrusted(opts.dir);
  const journal = await HostJournal.open(path.join(opts.dir, 'journal.jsonl'));
  const requestId = new AsyncLocalStorage<number>();
  const onRun = async (r: ToolRunRecord) => {
    const err = r.error ? (isFleetpatchError(r.error) ? `${r.error.code}: ${r.error.message}` : String(r.error)) : undefined;
    const details = isFleetpatchError(r.error) ? (r.error.details as { stdout?: string; stderr?: string }) : {};
    await journal.append({
      kind: 'tool',
      at: new Date().toISOString(),
      req: requestId.getStore() ?? 0,
      argv: [r.file, ...r.args],
      exitCode: r.run?.exitCode ?? null,
      ...(err ? { error: err } : {}),
      stdout: boundedOutput(r.run?.stdout ?? details.stdout ?? ''),
      stderr: boundedOutput(r.run?.stderr ?? details.stderr ?? ''),
      ms: Math.round(r.ms * 10) / 10,
    });
  };
  const xen = new XenTools({ ...opts.tools, onRun });

  let bootId = await readBootId(bootIdFile);
  let bootAt = await readBootTime(statFile);
  let state: AgentState = forBoot(await loadState(stateDir, bootId), bootId);
  let hypervisor: { bootId: string; buildId: string } | null = null;
  let saving: Promise<void> = Promise.resolve();
  /** Counts every change of the learned state: a list read across one is read again (readHost). */
  let generation = 0;
  const persist = (next: AgentState): Promise<void> => {
    state = next;
    generation++;
    // Saves run one after another, each writing the state as it is by then: the last one wins.
    const run = saving.then(() => saveState(stateDir, state));
    saving = run.catch(() => undefined);
    return run;
  };
  await persist(state);
  let running: { name: string; cmd: ActionCmd } | null = null;
  let dumpCache: { key: string; facts: Map<string, DumpFacts> } | null = null;

  /** The boot the host is in; after a reboot, what was learned is dropped. */
  async function currentBoot(): Promise<void> {
    const id = await readBootId(bootIdFile);
    if (id === bootId) return;
    bootId = id;
    bootAt = await readBootTime(statFile);
    hypervisor = null;
    dumpCache = null;
    log?.warn({ bootId: id }, 'the host rebooted: every payload is gone, and what the agent learned is dropped');
    await persist(forBoot(state, id));
  }

  async function hypervisorBuildId(): Promise<string> {
    if (hypervisor?.bootId !== bootId) hypervisor = { bootId, buildId: await xen.buildId() };
    return hypervisor.buildId;
  }

  /** Xen's dump, for payloads the agent did not upload; best effort (their build-ids are then unknown). */
  async function dumpFacts(rows: readonly ListedPayload[]): Promise<Map<string, DumpFacts>> {
    const strangers = rows.filter((r) => !state.payloads.some((p) => p.name === r.name)).map((r) => r.name);
    if (strangers.length === 0) return new Map();
    const key = `${bootId}\0${rows.map((r) => r.name).join('\0')}`;
    if (dumpCache?.key === key) return dumpCache.facts;
    let facts = new Map<string, DumpFacts>();
    try {
      facts = parseDump((await xen.dump()).join('\n'));
    } catch (e) {
      log?.warn({ err: String(e), payloads: strangers }, 'payloads the agent did not upload, and Xen\'s debug dump could not be read: their build-ids are reported unknown');
    }
    dumpCache = { key, facts };
    return facts;
  }

  async function readHost(): Promise<{ rows: ListedPayload[]; host: Reconciled; hvBuildId: string }> {
    for (let attempt = 0; ; attempt++) {
      await currentBoot();
      const seen = generation;
      const [listed, hvBuildId] = await Promise.all([xen.list(), hypervisorBuildId()]);
      if (!listed.ok) throw refusalError(listed);
      const dump = await dumpFacts(listed.payloads);
      // An upload that ended while the list was read is in the state but not in that list: it
      // must not be forgotten as gone. Read again; the third time, answer without forgetting.
      if (generation !== seen && attempt < 2) continue;
      const host = reconcile(state, listed.payloads, dump);
      if (generation === seen && JSON.stringify(host.state) !== JSON.stringify(state)) await persist(host.state);
      return { rows: listed.payloads, host, hvBuildId };
    }
  }

  function statusOf(rows: readonly ListedPayload[], name: string): WireStatus | null {
    const r = rows.find((x) => x.name === name);
    return r ? { name: r.name, state: r.state, rc: r.rc, reason: r.reason } : null;
  }

  async function list(idx: number, nr: number): Promise<WireList> {
    const { rows, host, hvBuildId } = await readHost();
    const page = listPage(host.entries, idx, nr);
    return {
      host: opts.hostId,
      hypervisor: { image: 'xen', buildId: hvBuildId },
      version: listVersion(rows.map((r) => r.name)),
      total: page.total,
      remaining: page.remaining,
      idx,
      entries: page.entries,
      appliedStack: host.appliedStack,
      pending: pendingOf(running, rows, state),
      boots: state.boots,
      boot: { id: bootId, at: bootAt },
    };
  }

  async function upload(name: string, body: Body, signature: string | undefined): Promise<WireUpload> {
    // Every check of the gate runs before any tool: a refused payload leaves nothing on the host.
    // The keys are read again for every upload, so a key removed from the file is trusted no more.
    const learned = gateUpload({ name, bytes: body.bytes, size: body.size, signature, trusted: await loadTrusted(opts.dir), now: new Date() });
    await currentBoot();
    const hvBuildId = await hypervisorBuildId();
    const check = xenDependsCheck(learned, hvBuildId);
    const outcome = await xen.upload(name, body.bytes);
    if (!outcome.ok) {
      const e = refusalError(outcome, { payload: name, ...(check ? { dependencyCheck: check } : {}) });
      if (e instanceof XenError && e.errnoName === 'EINVAL' && check?.outcome === 'mismatch') {
        throw new XenError('EINVAL', `${name}: build-id mismatch: it was built for hypervisor ${check.expected}, this one is ${check.found}`, { ...e.details });
      }
      throw e;
    }
    await persist({ ...state, payloads: [...state.payloads.filter((p) => p.name !== name), learned] });
    return {
      name, state: 'CHECKED', rc: 0, reason: null, buildId: learned.buildId, depends: learned.depends, xenDepends: learned.xenDepends,
      metadata: [...learned.metadata], reverted: false, safeToReapply: learned.safeToReapply, functions: [...learned.functions], facts: 'uploaded', dependencyCheck: check,
    };
  }

  /**
   * The ACTION, and when the tool saw its end, the payload's status after it (so a waited ACTION
   * need not read the list again): `completed` is the state the action leads to with rc 0, failed
   * work is the list's row.
   */
  async function action(name: string, cmdText: string, timeoutNs: number | undefined, nodeps: boolean): Promise<{ answer: WireAction; status: number; after?: WireStatus }> {
    if (!(ACTION_CMDS as readonly string[]).includes(cmdText)) throw new XenError('EOPNOTSUPP', `${JSON.stringify(cmdText.slice(0, 40))} is not an action (apply, revert, replace, unload)`, { payload: name });
    const cmd = cmdText as ActionCmd;
    if (timeoutNs !== undefined && !(Number.isInteger(timeoutNs) && timeoutNs >= 0 && timeoutNs <= U32_MAX)) {
      throw new XenError('EINVAL', `the action timeout must be a uint32 of nanoseconds (got ${timeoutNs})`, { payload: name });
    }
    const before = await readHost();
    const entry = before.host.entries.find((e) => e.name === name);
    const check = entry && (cmd === 'apply' || cmd === 'replace') ? dependencyCheckFor(entry, cmd, before.host.appliedStack, before.hvBuildId, nodeps) : null;
    running = { name, cmd };
    let outcome;
    try {
      outcome = await xen.action(cmd, name, { nodeps });
    } finally {
      running = null;
    }
    const scheduled = (after?: WireStatus): { answer: WireAction; status: number; after?: WireStatus } => ({ answer: { rc: 0, scheduled: true, dependencyCheck: check }, status: 202, ...(after ? { after } : {}) });
    if (outcome.ok) {
      if (outcome.done === 'completed') await persist(afterAction(state, cmd, name));
      if (cmd !== 'unload' && outcome.done === 'completed') return scheduled({ name, state: cmd === 'revert' ? 'CHECKED' : 'APPLIED', rc: 0, reason: null });
      return { answer: { rc: 0, scheduled: false, dependencyCheck: check }, status: 200 };
    }
    const details = { payload: name, hostId: opts.hostId, ...(check ? { dependencyCheck: check } : {}) };
    if (outcome.phase === 'not-completed') {
      // Scheduled, and still running when the tool looked again: GET (the list) shows when it ends.
      await persist({ ...state, payloads: state.payloads.map((p) => (p.name === name ? { ...p, lastCmd: cmd } : p)) });
      return scheduled();
    }
    if (outcome.phase === 'in-progress') throw new XenError('EBUSY', `${name}: its previous action has not finished (rc -EAGAIN); Xen takes one action at a time`, details);
    if (outcome.phase === 'action' && outcome.errno !== null) {
      // The same lines say the hypercall refused, or the work it scheduled failed: the list tells
      // (a refusal leaves rc as it was, failed work sets it to -errno).
      const after = (await readHost()).rows.find((r) => r.name === name);
      const rcBefore = before.rows.find((r) => r.name === name)?.rc;
      if (after && after.rc === -outcome.errno && rcBefore !== after.rc) return scheduled({ name, state: after.state, rc: after.rc, reason: after.reason });
      if (check?.outcome === 'mismatch' && outcome.errnoName === 'EINVAL') throw new XenError('EINVAL', dependencyMismatchReason(check), details);
    }
    throw refusalError(outcome, details);
  }

  /** The list, read again until the payload's work is done (rc no longer -EAGAIN) or the wait is over. */
  async function awaitWork(name: string, waitMs: number): Promise<WireStatus | null> {
    const until = performance.now() + waitMs;
    for (;;) {
      const { rows } = await readHost();
      const status = statusOf(rows, name);
      if (!status || status.rc !== -11 || performance.now() + WAIT_POLL_MS > until) return status;
      await sleep(WAIT_POLL_MS);
    }
  }

  async function call(fn: string, stack?: Reconciled): Promise<WireCall> {
    const host = stack ?? (await readHost()).host;
    const provider = [...host.appliedStack].reverse().find((s) => host.entries.find((e) => e.name === s.name)?.functions.includes(fn));
    const providedBy = provider ? { name: provider.name, buildId: provider.buildId } : null;
    const source = XL_INFO_FUNCTIONS[fn];
    if (!source) {
      return {
        function: fn, result: null, kind: 'undefined', providedBy,
        why: `a real host tells what a function returns only through xl info (${Object.keys(XL_INFO_FUNCTIONS).join(', ')}); ${fn} is not one of them`,
      };
    }
    const value = await xen.info(source.field);
    if (source.kind === 'integer') {
      if (!/^\d{1,15}$/.test(value)) return { function: fn, result: null, kind: 'undefined', providedBy, why: `xl info ${source.field} printed ${JSON.stringify(value.slice(0, 40))}, not a number` };
      return { function: fn, result: Number(value), kind: 'integer', providedBy };
    }
    return { function: fn, result: value, kind: 'string', providedBy };
  }

  async function dumpText(): Promise<string> {
    const lines = await xen.dump();
    const start = lines.map((l) => l.replace(/^(\(XEN\) )?(\[[^\]]*\] )?/, '')).lastIndexOf("'x' pressed - Dumping all livepatch patches");
    return `${(start === -1 ? lines : lines.slice(start)).join('\n')}\n`;
  }

  let nextRequest = 0;
  async function handle(req: http.IncomingMessage, res: http.ServerResponse, n: number): Promise<void> {
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    const pathPart = q === -1 ? url : url.slice(0, q);
    let segments: string[];
    try {
      segments = pathPart.split('/').filter((s) => s !== '').map((s) => decodeURIComponent(s));
    } catch {
      throw refuse('REQUEST_INVALID', 'the path is not valid percent-encoding');
    }
    // A name, a host id or a function is text that is journalled and answered back: text that
    // cannot be stored (a NUL, a lone surrogate) is refused here, naming where it is.
    for (const [i, seg] of segments.entries()) {
      const problem = unstorable(seg);
      if (problem) throw refuse('REQUEST_INVALID', `path segment ${i + 1} ${problem}`);
    }
    if (segments.length === 1 && segments[0] === 'healthz' && req.method === 'GET') {
      send(res, 200, { ok: true, hosts: 1 });
      return;
    }
    // Who asks comes first, and goes into the journal with the request, refused or not.
    let who = 'unknown';
    let denied: unknown = null;
    try {
      who = identify(req, opts.tls === null ? opts.token : undefined);
    } catch (e) {
      denied = e;
    }
    await journal.append({ kind: 'request', at: new Date().toISOString(), req: n, who, method: req.method ?? '?', path: pathPart.slice(0, 512) });
    if (denied) throw denied;
    if (segments[0] !== 'hosts' || segments[1] === undefined) throw refuse('ROUTE_NOT_FOUND', `no such route: ${req.method} ${pathPart.slice(0, 200)}`);
    if (segments[1] !== opts.hostId) throw new FleetpatchError('HOST_NOT_FOUND', `this agent serves host ${opts.hostId} only, not ${JSON.stringify(segments[1].slice(0, 80))}`);
    const route = matchRoute(req.method ?? 'GET', segments.slice(2));
    if (route.kind === 'reboot') throw new FleetpatchError('AGENT_UNSUPPORTED', `${opts.hostId} is a real host: its agent does not reboot it; its operator does (the control plane sees the new boot id)`);
    const reads = bodyOf(route);
    const body = reads === 'none' ? null : await readBody(req, reads === 'bytes' ? MAX_UPLOAD_BYTES : MAX_JSON_BYTES);
    // An upload's size is the gate's to judge (with the other refusals, in its order).
    const request = parseRequest(route, new URL(url, 'http://agent').searchParams, body && route.kind === 'upload' ? { ...body, truncated: false } : body);
    const answer = async (status: number, json: unknown, summary?: string) => {
      await journal.append({ kind: 'answer', at: new Date().toISOString(), req: n, status, ...(summary ? { summary } : {}) });
      send(res, status, json);
    };
    switch (request.kind) {
      case 'list': {
        const l = await list(request.idx, request.nr);
        return answer(200, l, `${l.entries.length} of ${l.total} payloads, stack ${l.appliedStack.map((s) => s.name).join(' > ') || 'empty'}`);
      }
      case 'get': {
        const { rows } = await readHost();
        const status = statusOf(rows, request.name);
        if (!status) throw new XenError('ENOENT', `${request.name}: no payload of that name is loaded`, { payload: request.name });
        return answer(200, status, `${status.state} rc ${status.rc}`);
      }
      case 'upload': {
        const sig = req.headers[SIGNATURE_HEADER];
        const entry = await upload(request.name, body!, Array.isArray(sig) ? sig.join(',') : sig);
        return answer(201, entry, `uploaded ${entry.name} build-id ${entry.buildId}`);
      }
      case 'action': {
        const { answer: a, status, after: known } = await action(request.name, request.cmd, request.timeoutNs, request.nodeps ?? false);
        if (request.waitMs && a.scheduled) {
          await journal.append({ kind: 'answer', at: new Date().toISOString(), req: n, status, summary: `${request.cmd} ${request.name} scheduled` });
          res.writeHead(status, { 'content-type': `${NDJSON}; charset=utf-8` });
          res.write(`${JSON.stringify(a)}\n`);
          const after = known ?? (await awaitWork(request.name, request.waitMs));
          await journal.append({ kind: 'answer', at: new Date().toISOString(), req: n, status, summary: after ? `${after.name} ${after.state} rc ${after.rc}` : `${request.name} gone` });
          if (!res.destroyed) res.end(`${JSON.stringify({ status: after } satisfies WireActionDone)}\n`);
          return;
        }
        return answer(status, a, `${request.cmd} ${request.name}${a.scheduled ? ' done' : ': nothing to do'}`);
      }
      case 'functions': {
        const host = (await readHost()).host;
        const functions = [];
        for (const fn of Object.keys(XL_INFO_FUNCTIONS)) functions.push(await call(fn, host));
        return answer(200, { host: opts.hostId, functions });
      }
      case 'call': {
        const c = await call(request.fn);
        return answer(200, c, `${c.function} = ${JSON.stringify(c.result)}`);
      }
      case 'dump': {
        const text = await dumpText();
        await journal.append({ kind: 'answer', at: new Date().toISOString(), req: n, status: 200 });
        res.writeHead(200, { 'content-type': 'text/plain; charset=utf-8', 'content-length': Buffer.byteLength(text) });
        res.end(text);
        return;
      }
      case 'reboot':
        return;
    }
  }

  const onRequest = (req: http.IncomingMessage, res: http.ServerResponse) => {
    const n = ++nextRequest;
    requestId.run(n, () => {
      handle(req, res, n).catch(async (e: unknown) => {
        const { status, body } = encodeError(e);
        if (status === 500) log?.error({ err: e instanceof Error ? e.stack : String(e) }, 'request failed');
        try {
          await journal.append({ kind: 'refusal', at: new Date().toISOString(), req: n, code: body.error, message: body.message.slice(0, 2000) });
        } catch (je) {
          log?.error({ err: String(je) }, 'the host journal cannot be written');
        }
        if (res.headersSent || res.destroyed) {
          res.destroy();
          return;
        }
        if (status === 401 && opts.tls === null) res.setHeader('www-authenticate', 'Bearer');
        send(res, status, body);
      });
    });
  };

  const server = opts.tls
    ? https.createServer({ key: opts.tls.key, cert: opts.tls.cert, ca: opts.tls.ca, requestCert: true, rejectUnauthorized: false, minVersion: 'TLSv1.2' }, onRequest)
    : http.createServer(onRequest);
  server.keepAliveTimeout = 65_000;
  server.headersTimeout = 66_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', (e: NodeJS.ErrnoException) =>
      reject(e.code === 'EADDRINUSE' ? new FleetpatchError('USAGE', `agent: ${opts.host}:${opts.port} is already in use; pick another with --listen HOST:PORT`) : e),
    );
    server.listen(opts.port, opts.host, () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  const hostPart = opts.host.includes(':') ? `[${opts.host}]` : opts.host;
  const url = `${opts.tls ? 'https' : 'http'}://${hostPart}:${port}`;
  await journal.append({
    kind: 'start', at: new Date().toISOString(), hostId: opts.hostId, listen: url, transport: opts.tls ? 'mtls' : 'insecure-http',
    xenLivepatch: xen.xenLivepatch, xl: xen.xl, trustedKeys: trusted.map((k) => k.keyId),
  });
  log?.info({ url, hostId: opts.hostId }, 'agent listening');

  let closed: Promise<void> | undefined;
  return {
    url,
    port,
    hostId: opts.hostId,
    trustedKeys: trusted.map((k) => k.keyId),
    journalFile: journal.file,
    close() {
      closed ??= (async () => {
        await new Promise<void>((resolve) => {
          server.close(() => resolve());
          server.closeAllConnections();
        });
        await saving;
        await journal.close();
      })();
      return closed;
    },
  };
}

export type { HostDependencyCheck };
