/**
 * The host agent client: how activities, `fleetpatch hv` and tests talk to an emulated host.
 *
 * - One shared keep-alive dispatcher (undici) for every HostAgent of the process, so 10,000 hosts
 *   behind one fleet server share a bounded pool of connections instead of opening one each.
 *   undici rather than node:http: about half the client CPU per request (53 against 107 us,
 *   measured apart), and a rollout makes six requests per host.
 * - Every answer is parsed with the agent contract (src/agent/contract.ts); every refusal comes back
 *   as the catalogue error the agent raised: XenError for the hypervisor's refusals (errno, reason
 *   in words, the structured dependency check in details.dependencyCheck), the agent's own codes
 *   (HOST_UNAUTHORIZED, HOST_FORBIDDEN, REQUEST_INVALID, ...); and from the transport
 *   HOST_UNREACHABLE (refused or reset connection), HOST_TIMEOUT (no answer in time),
 *   HOST_PROTOCOL (an answer outside the contract), ACTION_TIMEOUT (waitForAction).
 * - The token never reaches a log line, an error or JSON.stringify(agent).
 */
import { inspect } from 'node:util';
import { Agent as UndiciAgent, type Dispatcher } from 'undici';
import type { z } from 'zod';
import { FleetpatchError, XEN_ERRNO } from '../errors.ts';
import type { Logger } from '../runtime/logger.ts';
import { unstorable } from '../domain/text.ts';
import { findFleetHost, readFleetFile, type FleetFile } from './fleet-file.ts';
import { pinHost, type TlsMaterial } from '../pki/tls.ts';
import {
  WireActionSchema,
  WireCallSchema,
  WireFunctionsSchema,
  WireListSchema,
  WireRebootSchema,
  WireStatusSchema,
  WireUploadSchema,
  WireActionDoneSchema,
  MAX_ACTION_WAIT_MS,
  NDJSON,
  SIGNATURE_HEADER,
  decodeError,
  parseAnswer,
  type ActionCmd,
  type ActionRequestBody,
  type RebootRequestBody,
  type WireAction,
  type WireCall,
  type WireList,
  type WireReboot,
  type WireStatus,
  type WireUpload,
} from './contract.ts';

/**
 * Shared by every HostAgent unless one is given: keep-alive, at most 256 connections per server,
 * one request at a time on each (no pipelining: a host that hangs must not hold up another's
 * answer). Idle connections close after 60 s, before the fleet server's 65 s.
 */
export const sharedDispatcher: Dispatcher = new UndiciAgent({ connections: 256, pipelining: 1, keepAliveTimeout: 60_000, keepAliveMaxTimeout: 60_000 });

export const DEFAULT_REQUEST_TIMEOUT_MS = 10_000;
const EAGAIN = -XEN_ERRNO.EAGAIN;

export interface HostAgentOptions {
  /** The fleet server's base URL (the fleet file's `url`). */
  url: string;
  hostId: string;
  /** The emulated host's bearer token; none for an agent reached over mutual TLS (the client certificate is the credential). */
  token?: string;
  /** Per request; default 10 s. */
  timeoutMs?: number;
  /** An undici dispatcher to use instead of the shared one. */
  dispatcher?: Dispatcher;
  logger?: Logger;
}

export interface ActionOptions {
  /** Nanoseconds the CPUs may take to rendezvous; 0/absent: Xen's 30 ms. */
  timeoutNs?: number;
  /** LIVEPATCH_ACTION_APPLY_NODEPS. */
  nodeps?: boolean;
}

export interface WaitOptions {
  /** Between two GETs; default 10 ms. */
  pollMs?: number;
  /** Give up (ACTION_TIMEOUT) after this long; default 30 s. */
  deadlineMs?: number;
  /** Called after every GET that still says -EAGAIN (activities heartbeat here). */
  onPoll?: (status: WireStatus, attempt: number) => void | Promise<void>;
  signal?: AbortSignal;
}

export interface ActAndWaitOptions extends ActionOptions, WaitOptions {
  /** How long the host waits for the work before its answer's second part; keep it under the request timeout. */
  waitMs: number;
  /** Hears the scheduling result (the hypervisor's dependency check) as soon as the host sends it. */
  onScheduled?: (answer: WireAction) => void;
}

interface Answer {
  status: number;
  text: string;
}

/** A request's body and its extra headers (UPLOAD's signature). */
interface RequestBody {
  body?: Buffer | string;
  contentType?: string;
  headers?: Record<string, string>;
}

/** OpenSSL's and node's codes of a certificate refused in the handshake (either side's). */
const TLS_CODE = /^(ERR_TLS_|ERR_SSL_|CERT_|UNABLE_TO_|SELF_SIGNED_|DEPTH_ZERO_|HOSTNAME_MISMATCH|ERR_FLEETPATCH_HOST_IDENTITY)/;

/** The TLS refusal in an error or its cause, if that is what it is. */
function tlsRefusal(e: NodeJS.ErrnoException): { code: string; message: string; identity: boolean } | null {
  for (let c: NodeJS.ErrnoException | undefined = e, depth = 0; c && depth < 4; c = c.cause as NodeJS.ErrnoException | undefined, depth++) {
    const code = c.code ?? '';
    if (TLS_CODE.test(code) || /alert (certificate|bad certificate|unknown ca|handshake)/i.test(c.message ?? '')) return { code: code || 'TLS', message: c.message, identity: code === 'ERR_FLEETPATCH_HOST_IDENTITY' };
  }
  return null;
}

/** undici's codes for "no answer in time" (waiting for the connection, the headers, the body). */
const TIMEOUT_CODES = new Set(['UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT']);

/**
 * HTTP to one fleet server with one bearer token: requests, timeouts and the mapping of answers to
 * typed errors. `who` names the host (or "admin") in messages; the token appears nowhere.
 */
export class Transport {
  readonly #token: string | undefined;
  readonly #dispatcher: Dispatcher;
  readonly #logger: Logger | undefined;
  /** Scheme, host and port of the fleet server; every path of ours starts at its root. */
  readonly #origin: string;
  readonly #debug: boolean;

  constructor(
    readonly url: string,
    readonly who: string,
    token: string | undefined,
    readonly timeoutMs: number,
    dispatcher: Dispatcher | undefined,
    logger: Logger | undefined,
  ) {
    this.#token = token;
    this.#origin = new URL(url).origin;
    this.#dispatcher = dispatcher ?? sharedDispatcher;
    this.#logger = logger;
    // Every request's timing is a debug line: not even built when nobody reads it.
    this.#debug = logger?.isLevelEnabled('debug') ?? false;
  }

  /** A JSON answer, parsed with its schema from the contract: any other shape is HOST_PROTOCOL. */
  async json<S extends z.ZodType>(schema: S, method: string, path: string, body: RequestBody = {}): Promise<z.infer<S>> {
    const { text } = await this.request(method, path, body);
    return parseAnswer(schema, this.parseJson(text, method, path), this.who, `${method} ${path}`);
  }

  /** JSON.parse, or HOST_PROTOCOL: an answer that is not JSON is not ours. */
  private parseJson(text: string, method: string, path: string): unknown {
    try {
      return JSON.parse(text);
    } catch {
      throw new FleetpatchError('HOST_PROTOCOL', `${this.who}: ${method} ${path} answered something that is not JSON`, { hostId: this.who });
    }
  }

  /**
   * A request whose answer may come as several JSON documents, one per line (NDJSON): `onPart`
   * hears each as soon as its line is complete. A plain JSON answer is one part. A refusal throws
   * as `request` does; a connection lost after some parts throws after those were heard.
   */
  async parts(method: string, path: string, opts: RequestBody, onPart: (value: unknown, index: number) => void): Promise<void> {
    const part = (line: string, index: number) => onPart(this.parseJson(line, method, path), index);
    const res = await this.open(method, path, opts, `${NDJSON}, application/json`);
    if (res.statusCode < 200 || res.statusCode >= 300 || !String(res.headers['content-type'] ?? '').startsWith(NDJSON)) {
      let text: string;
      try {
        text = await res.body.text();
      } catch (e) {
        throw this.transportError(method, path, e as NodeJS.ErrnoException);
      }
      if (res.statusCode < 200 || res.statusCode >= 300) throw this.refusal(method, path, { status: res.statusCode, text });
      return part(text, 0);
    }
    let pending = '';
    let index = 0;
    // A character's bytes may be split between two chunks: the decoder keeps the first half.
    const utf8 = new TextDecoder();
    try {
      for await (const chunk of res.body as AsyncIterable<Buffer>) {
        pending += utf8.decode(chunk, { stream: true });
        for (let nl = pending.indexOf('\n'); nl !== -1; nl = pending.indexOf('\n')) {
          const line = pending.slice(0, nl);
          pending = pending.slice(nl + 1);
          if (line.trim() !== '') part(line, index++);
        }
      }
    } catch (e) {
      if (e instanceof FleetpatchError) throw e;
      throw this.transportError(method, path, e as NodeJS.ErrnoException);
    }
    pending += utf8.decode();
    if (pending.trim() !== '') part(pending, index);
  }

  async request(method: string, path: string, opts: RequestBody): Promise<Answer> {
    const t0 = performance.now();
    let answer: Answer;
    try {
      answer = await this.send(method, path, opts);
    } catch (e) {
      if (this.#debug) this.#logger!.debug({ method, path, error: (e as FleetpatchError).code ?? String(e), ms: +(performance.now() - t0).toFixed(2) }, 'host request failed');
      throw e;
    }
    if (this.#debug) this.#logger!.debug({ method, path, status: answer.status, ms: +(performance.now() - t0).toFixed(2) }, 'host request');
    if (answer.status >= 200 && answer.status < 300) return answer;
    throw this.refusal(method, path, answer);
  }

  private async send(method: string, path: string, opts: RequestBody): Promise<Answer> {
    const res = await this.open(method, path, opts, 'application/json, text/plain');
    try {
      return { status: res.statusCode, text: await res.body.text() };
    } catch (e) {
      throw this.transportError(method, path, e as NodeJS.ErrnoException);
    }
  }

  /** Sends the request and returns once the answer's headers are in; the body is the caller's to read. */
  private async open(method: string, path: string, opts: RequestBody, accept: string): Promise<Dispatcher.ResponseData> {
    const headers: Record<string, string> = { ...opts.headers, ...(this.#token !== undefined ? { authorization: `Bearer ${this.#token}` } : {}), accept };
    if (opts.body !== undefined) headers['content-type'] = opts.contentType ?? 'application/octet-stream';
    try {
      // No automatic retry, even on a reused keep-alive connection: an emulated host that resets
      // the connection must look unreachable every time. Idle connections are closed by the
      // client (60 s) before the server would (65 s), so a stale one does not cause this.
      return await this.#dispatcher.request({
        origin: this.#origin,
        path,
        method: method as Dispatcher.HttpMethod,
        headers,
        ...(opts.body !== undefined ? { body: opts.body } : {}),
        headersTimeout: this.timeoutMs,
        bodyTimeout: this.timeoutMs,
      });
    } catch (e) {
      throw this.transportError(method, path, e as NodeJS.ErrnoException);
    }
  }

  private transportError(method: string, path: string, e: NodeJS.ErrnoException): FleetpatchError {
    const code = e.code ?? '';
    const tls = tlsRefusal(e);
    if (tls) {
      // The agent is not the host meant (its certificate names another), or its certificate does not chain to the fleet CA.
      return tls.identity
        ? new FleetpatchError('HOST_PROTOCOL', `${this.who} at ${this.url}: ${tls.message}`, { hostId: this.who, tls: tls.code })
        : new FleetpatchError('CERTIFICATE_INVALID', `${this.who} at ${this.url}: the TLS handshake failed: ${tls.code}: ${tls.message}`, { hostId: this.who, tls: tls.code });
    }
    if (TIMEOUT_CODES.has(code)) {
      return new FleetpatchError('HOST_TIMEOUT', `${this.who}: no answer to ${method} ${path} within ${this.timeoutMs} ms`, { hostId: this.who, timeoutMs: this.timeoutMs });
    }
    // A connection refused or reset, a host name that does not resolve, a socket closed under the
    // request ("other side closed"): the host cannot be reached. The system's code when there is one.
    const cause = (e.cause as NodeJS.ErrnoException | undefined)?.code ?? (code === 'UND_ERR_SOCKET' ? 'ECONNRESET' : code);
    if (cause || /closed|hang up/i.test(e.message)) {
      return new FleetpatchError('HOST_UNREACHABLE', `${this.who} cannot be reached at ${this.url} (${cause || e.message})`, { hostId: this.who, cause: cause || e.message });
    }
    return new FleetpatchError('HOST_UNREACHABLE', `${this.who}: ${method} ${path} failed: ${e.message}`, { hostId: this.who, cause: e.message });
  }

  /** A refusal, back as the error the agent raised (the contract's one encoding of errors). */
  private refusal(method: string, path: string, a: Answer): FleetpatchError {
    return decodeError(a.status, a.text, this.who, `${method} ${path}`);
  }
}

export class HostAgent {
  readonly url: string;
  readonly hostId: string;
  readonly timeoutMs: number;
  readonly #t: Transport;

  constructor(opts: HostAgentOptions) {
    this.url = opts.url.replace(/\/+$/, '');
    this.hostId = opts.hostId;
    this.timeoutMs = opts.timeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS;
    this.#t = new Transport(this.url, opts.hostId, opts.token, this.timeoutMs, opts.dispatcher, opts.logger?.child({ component: 'host-agent', host: opts.hostId }));
  }

  toJSON(): { url: string; hostId: string } {
    return { url: this.url, hostId: this.hostId };
  }

  [inspect.custom](): string {
    return `HostAgent(${this.hostId} at ${this.url})`;
  }

  private path(...parts: string[]): string {
    return `/hosts/${encodeURIComponent(this.hostId)}${parts.map((p) => `/${encodeURIComponent(p)}`).join('')}`;
  }

  /** LIST: one page (Xen's idx/nr, at most 1024 entries). */
  async list(opts: { idx?: number; nr?: number } = {}): Promise<WireList> {
    const q = new URLSearchParams();
    if (opts.idx !== undefined) q.set('idx', String(opts.idx));
    if (opts.nr !== undefined) q.set('nr', String(opts.nr));
    const qs = q.size ? `?${q}` : '';
    return this.#t.json(WireListSchema, 'GET', `${this.path('livepatch')}${qs}`);
  }

  /** LIST every entry, page by page, starting again if the list changed meanwhile (its version moved). */
  async listAll(): Promise<WireList> {
    for (let attempt = 0; ; attempt++) {
      const first = await this.list({ idx: 0, nr: 1024 });
      const entries = [...first.entries];
      let page = first;
      while (page.remaining > 0 && page.version === first.version) {
        page = await this.list({ idx: entries.length, nr: 1024 });
        entries.push(...page.entries);
      }
      if (page.version === first.version || attempt >= 5) return { ...page, idx: 0, entries, remaining: 0 };
    }
  }

  /** GET: state and rc (-EAGAIN while an action runs). ENOENT when no such payload is loaded. */
  get(name: string): Promise<WireStatus> {
    return this.#t.json(WireStatusSchema, 'GET', this.path('livepatch', name));
  }

  /**
   * UPLOAD: Xen's checks run synchronously; the payload is CHECKED afterwards. `signature` is the
   * payload's detached signature (the signature file's JSON object): a dom0 agent verifies it
   * against the host's own trusted keys and refuses the payload without one.
   */
  upload(name: string, bytes: Uint8Array, opts: { signature?: object | null } = {}): Promise<WireUpload> {
    return this.#t.json(WireUploadSchema, 'POST', this.path('livepatch', name), {
      body: Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength),
      contentType: 'application/octet-stream',
      ...(opts.signature ? { headers: { [SIGNATURE_HEADER]: Buffer.from(JSON.stringify(opts.signature)).toString('base64') } } : {}),
    });
  }

  /**
   * ACTION: schedules apply/revert/replace (rc -EAGAIN until done; see waitForAction) or unloads.
   * A synchronous refusal throws XenError; an APPLY's dependency check comes back either way.
   * `actAndWait` has the host wait for the work and answer with its status as well.
   */
  action(name: string, cmd: ActionCmd, opts: ActionOptions = {}): Promise<WireAction> {
    const request: ActionRequestBody = { cmd, ...(opts.timeoutNs !== undefined ? { timeoutNs: opts.timeoutNs } : {}), ...(opts.nodeps ? { nodeps: true } : {}) };
    const body = JSON.stringify(request);
    return this.#t.json(WireActionSchema, 'POST', this.path('livepatch', name, 'action'), { body, contentType: 'application/json' });
  }

  /**
   * ACTION, with the host waiting up to `waitMs` for the work it schedules (as `xen-livepatch
   * apply` polls): one request instead of an ACTION and GETs. Its answer comes in two parts, the
   * scheduling result at once (`onScheduled` hears its dependency check even if the host goes down
   * during the work) and the work's status when it ends. Returns that status, polling GET when the
   * wait ended first (or the host did not wait); `status` is null when nothing was scheduled
   * (UNLOAD, an action with nothing to do). Refusals throw as `action`'s do.
   */
  async actAndWait(name: string, cmd: ActionCmd, opts: ActAndWaitOptions): Promise<{ answer: WireAction; status: WireStatus | null }> {
    const request: ActionRequestBody = {
      cmd,
      ...(opts.timeoutNs !== undefined ? { timeoutNs: opts.timeoutNs } : {}),
      ...(opts.nodeps ? { nodeps: true } : {}),
      waitMs: Math.min(MAX_ACTION_WAIT_MS, Math.max(0, Math.round(opts.waitMs))),
    };
    const path = this.path('livepatch', name, 'action');
    let answer: WireAction | undefined;
    let done: WireStatus | null | undefined;
    await this.#t.parts('POST', path, { body: JSON.stringify(request), contentType: 'application/json' }, (value, i) => {
      if (i === 0) {
        answer = parseAnswer(WireActionSchema, value, this.hostId, `POST ${path}`);
        opts.onScheduled?.(answer);
      } else if (i === 1) {
        done = parseAnswer(WireActionDoneSchema, value, this.hostId, `POST ${path}`).status;
      }
    });
    if (!answer) throw new FleetpatchError('HOST_PROTOCOL', `${this.hostId}: POST ${path} answered nothing`, { hostId: this.hostId });
    if (!answer.scheduled) return { answer, status: null };
    if (done && done.rc !== EAGAIN) return { answer, status: done };
    return { answer, status: await this.waitForAction(name, opts) };
  }

  /**
   * Polls GET until rc is no longer -EAGAIN and returns that status; the caller decides what rc
   * and state mean. ACTION_TIMEOUT after deadlineMs.
   */
  async waitForAction(name: string, opts: WaitOptions = {}): Promise<WireStatus> {
    const pollMs = opts.pollMs ?? 10;
    const deadlineMs = opts.deadlineMs ?? 30_000;
    const start = performance.now();
    for (let attempt = 1; ; attempt++) {
      opts.signal?.throwIfAborted();
      const status = await this.get(name);
      if (status.rc !== EAGAIN) return status;
      await opts.onPoll?.(status, attempt);
      const waited = performance.now() - start;
      if (waited + pollMs > deadlineMs) {
        throw new FleetpatchError('ACTION_TIMEOUT', `${this.hostId}: ${name} is still in progress (rc -EAGAIN) after ${Math.round(waited)} ms`, {
          hostId: this.hostId,
          payload: name,
          waitedMs: Math.round(waited),
        });
      }
      await new Promise((r) => setTimeout(r, pollMs));
    }
  }

  /** What calling a hypervisor function returns now, and which payload provides it. */
  call(fn: string): Promise<WireCall> {
    return this.#t.json(WireCallSchema, 'GET', this.path('functions', fn));
  }

  async functions(): Promise<WireCall[]> {
    return (await this.#t.json(WireFunctionsSchema, 'GET', this.path('functions'))).functions;
  }

  /** Xen's debug dump (key 'x'). */
  async dump(): Promise<string> {
    const { text } = await this.#t.request('GET', this.path('dump'), {});
    // A hostile host's text is refused here as its JSON is by the contract: it may be recorded.
    const problem = unstorable(text);
    if (problem) throw new FleetpatchError('HOST_PROTOCOL', `${this.hostId}: the debug dump ${problem}`, { hostId: this.hostId });
    return text;
  }

  /** Reboots the host: every payload vanishes; for `downMs` it answers nothing. */
  reboot(opts: { downMs?: number } = {}): Promise<WireReboot> {
    const request: RebootRequestBody = opts;
    return this.#t.json(WireRebootSchema, 'POST', this.path('reboot'), { body: JSON.stringify(request), contentType: 'application/json' });
  }
}

export interface FleetClientOptions {
  timeoutMs?: number;
  dispatcher?: Dispatcher;
  logger?: Logger;
  /** Hosts enrolled in the event store (enrolled, not retired): they are the fleet with the fleet file's. */
  enrolled?: readonly EnrolledEntry[];
  /**
   * The worker's client certificate for the agents of enrolled hosts (https addresses), or the
   * error that says why there is none: a host that needs it fails with that error, the others work.
   */
  workerTls?: TlsMaterial | FleetpatchError;
}

/** An enrolled host as the client needs it: where its agent is and what the registry says of it. */
export interface EnrolledEntry {
  id: string;
  labels: Readonly<Record<string, string>>;
  hypervisorBuildId: string;
  address: string;
}

/** A host of the inventory: its id, labels and hypervisor build (for selecting and planning). */
export interface InventoryHost {
  id: string;
  labels: Record<string, string>;
  buildId: string;
  /** Where it is reached, and how: an emulated host (fleet file, bearer token) or an enrolled agent (mutual TLS). */
  url: string;
  source: 'fleet-file' | 'enrolled';
}

/**
 * The fleet: the emulator's fleet file (when there is one) and the hosts enrolled in the event
 * store, each host once. A host in both is the enrolled one (its labels, its address); if that
 * address is the fleet file's server, it is an emulated host enrolled as a record and is reached
 * as before, with its bearer token over the shared dispatcher. An enrolled host at an https
 * address is reached over mutual TLS: the worker's client certificate, the fleet CA, and the
 * agent's certificate pinned to that host id (src/pki/tls.ts), one dispatcher per such host.
 * (The emulator's admin routes: src/emulator/admin-client.ts.)
 */
export class FleetClient {
  /** The emulator's fleet file, or null when the fleet is enrolled hosts only. */
  readonly fleetFile: FleetFile | null;
  readonly hosts: readonly InventoryHost[];
  readonly #byId = new Map<string, InventoryHost>();
  readonly #fileHosts = new Map<string, FleetFile['hosts'][number]>();
  readonly #agents = new Map<string, HostAgent>();
  readonly #dispatchers: Dispatcher[] = [];
  readonly #opts: FleetClientOptions;

  constructor(fleet: FleetFile | null, opts: FleetClientOptions = {}) {
    this.fleetFile = fleet;
    this.#opts = opts;
    for (const h of fleet?.hosts ?? []) {
      this.#fileHosts.set(h.id, h);
      this.#byId.set(h.id, { id: h.id, labels: h.labels, buildId: h.buildId, url: fleet!.url, source: 'fleet-file' });
    }
    for (const e of opts.enrolled ?? []) this.#byId.set(e.id, { id: e.id, labels: { ...e.labels }, buildId: e.hypervisorBuildId, url: e.address, source: 'enrolled' });
    // The fleet file's order first (the emulator's hosts as they were), then hosts only enrolled, by id.
    this.hosts = [...this.#byId.values()];
  }

  /** Reads the fleet file (default <FLEETPATCH_DATA_DIR>/fleet.json). */
  static async open(file?: string, opts: FleetClientOptions = {}): Promise<FleetClient> {
    return new FleetClient(await readFleetFile(file), opts);
  }

  /** The emulator's fleet file, for what only an emulated fleet has (its server, its admin routes); FLEET_FILE_INVALID when there is none. */
  get fleet(): FleetFile {
    if (!this.fleetFile) throw new FleetpatchError('FLEET_FILE_INVALID', "the fleet is enrolled hosts only: there is no emulator's fleet file", {});
    return this.fleetFile;
  }

  get hostIds(): string[] {
    return this.hosts.map((h) => h.id);
  }

  host(id: string): HostAgent {
    let a = this.#agents.get(id);
    if (a) return a;
    const h = this.#byId.get(id);
    if (!h) {
      if (this.fleetFile && !this.#opts.enrolled?.length) findFleetHost(this.fleetFile, id);
      throw new FleetpatchError('HOST_NOT_FOUND', `no host ${id} in the fleet (${this.hosts.length} host(s): fleetpatch hosts list, and the emulator's fleet file)`, { hostId: id });
    }
    const { enrolled: _e, workerTls: _w, ...opts } = this.#opts;
    const fileHost = this.#fileHosts.get(id);
    const emulated = fileHost && (h.source === 'fleet-file' || sameOrigin(h.url, this.fleetFile!.url));
    if (emulated) a = new HostAgent({ ...opts, url: this.fleetFile!.url, hostId: id, token: fileHost.token });
    else if (new URL(h.url).protocol === 'https:') a = new HostAgent({ ...opts, url: h.url, hostId: id, dispatcher: this.mtlsDispatcher(id) });
    else throw new FleetpatchError('HOST_PROTOCOL', `host ${id} is enrolled at ${h.url}, which is neither https (an agent over mutual TLS) nor the emulator's fleet server`, { hostId: id });
    this.#agents.set(id, a);
    return a;
  }

  private mtlsDispatcher(hostId: string): Dispatcher {
    const tls = this.#opts.workerTls;
    if (!tls) throw new FleetpatchError('CERTIFICATE_INVALID', `host ${hostId} is reached over mutual TLS and this process has no worker certificate (fleetpatch ca issue --worker NAME; FLEETPATCH_WORKER_TLS_DIR)`, { hostId });
    if (tls instanceof FleetpatchError) throw tls;
    const d = new UndiciAgent({
      connections: 8,
      pipelining: 1,
      keepAliveTimeout: 60_000,
      keepAliveMaxTimeout: 60_000,
      connect: { key: tls.key, cert: tls.cert, ca: tls.ca, rejectUnauthorized: true, minVersion: 'TLSv1.2', checkServerIdentity: pinHost(hostId) },
    });
    this.#dispatchers.push(d);
    return d;
  }

  /** Closes the connections to enrolled agents (the shared dispatcher of emulated hosts stays). */
  async close(): Promise<void> {
    await Promise.all(this.#dispatchers.splice(0).map((d) => d.close().catch(() => undefined)));
  }
}

function sameOrigin(a: string, b: string): boolean {
  try {
    return new URL(a).origin === new URL(b).origin;
  } catch {
    return false;
  }
}
