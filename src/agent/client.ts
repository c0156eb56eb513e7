/**
 * The host agent client: how activities, `fleetpatch hv` and tests talk to an emulated host.
 *
 * - One shared keep-alive http.Agent for every HostAgent of the process, so 10,000 hosts behind one
 *   fleet server share a bounded pool of sockets instead of opening one each.
 * - Every answer is parsed with the agent contract (src/agent/contract.ts); every refusal comes back
 *   as the catalogue error the agent raised: XenError for the hypervisor's refusals (errno, reason
 *   in words, the structured dependency check in details.dependencyCheck), the agent's own codes
 *   (HOST_UNAUTHORIZED, HOST_FORBIDDEN, REQUEST_INVALID, ...); and from the transport
 *   HOST_UNREACHABLE (refused or reset connection), HOST_TIMEOUT (no answer in time),
 *   HOST_PROTOCOL (an answer outside the contract), ACTION_TIMEOUT (waitForAction).
 * - The token never reaches a log line, an error or JSON.stringify(agent).
 */
import http from 'node:http';
import https from 'node:https';
import { inspect } from 'node:util';
import type { z } from 'zod';
import { FleetpatchError, XEN_ERRNO } from '../errors.ts';
import type { Logger } from '../runtime/logger.ts';
import { findFleetHost, readFleetFile, type FleetFile } from './fleet-file.ts';
import {
  WireActionSchema,
  WireCallSchema,
  WireFunctionsSchema,
  WireListSchema,
  WireRebootSchema,
  WireStatusSchema,
  WireUploadSchema,
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

/** Shared by every HostAgent unless one is given: keep-alive, at most 256 sockets per server. */
export const sharedHttpAgent = new http.Agent({ keepAlive: true, maxSockets: 256, maxFreeSockets: 256, timeout: 60_000, scheduling: 'lifo' });
export const sharedHttpsAgent = new https.Agent({ keepAlive: true, maxSockets: 256, maxFreeSockets: 256, timeout: 60_000, scheduling: 'lifo' });

export const DEFAULT_REQUEST_TIMEOUT_MS = 10_000;
const EAGAIN = -XEN_ERRNO.EAGAIN;

export interface HostAgentOptions {
  /** The fleet server's base URL (the fleet file's `url`). */
  url: string;
  hostId: string;
  token: string;
  /** Per request; default 10 s. */
  timeoutMs?: number;
  /** An http(s).Agent to use instead of the shared one. */
  agent?: http.Agent;
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

interface Answer {
  status: number;
  text: string;
}

const UNREACHABLE_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN', 'ECONNABORTED', 'ERR_SOCKET_CLOSED']);

class TimedOut extends Error {}

/**
 * HTTP to one fleet server with one bearer token: requests, timeouts and the mapping of answers to
 * typed errors. `who` names the host (or "admin") in messages; the token appears nowhere.
 */
export class Transport {
  readonly #token: string;
  readonly #agent: http.Agent;
  readonly #logger: Logger | undefined;
  readonly #base: URL;
  /**
   * The request options of the base URL, worked out once: http.request(URL) parses and converts
   * the URL on every call, which was a third of the client's CPU per request (measured apart:
   * about 140 against 100 us). Null when the base URL carries credentials: the URL path then.
   */
  readonly #origin: { protocol: string; hostname: string; port: number } | null;
  readonly #debug: boolean;

  constructor(
    readonly url: string,
    readonly who: string,
    token: string,
    readonly timeoutMs: number,
    agent: http.Agent | undefined,
    logger: Logger | undefined,
  ) {
    this.#token = token;
    this.#base = new URL(url);
    this.#agent = agent ?? (this.#base.protocol === 'https:' ? sharedHttpsAgent : sharedHttpAgent);
    this.#logger = logger;
    const b = this.#base;
    this.#origin =
      b.username || b.password
        ? null
        : { protocol: b.protocol, hostname: b.hostname.replace(/^\[(.*)\]$/, '$1'), port: Number(b.port) || (b.protocol === 'https:' ? 443 : 80) };
    // Every request's timing is a debug line: not even built when nobody reads it.
    this.#debug = logger?.isLevelEnabled('debug') ?? false;
  }

  /** A JSON answer, parsed with its schema from the contract: any other shape is HOST_PROTOCOL. */
  async json<S extends z.ZodType>(schema: S, method: string, path: string, body: { body?: Buffer | string; contentType?: string } = {}): Promise<z.infer<S>> {
    const { text } = await this.request(method, path, body);
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch {
      throw new FleetpatchError('HOST_PROTOCOL', `${this.who}: ${method} ${path} answered something that is not JSON`, { hostId: this.who });
    }
    return parseAnswer(schema, value, this.who, `${method} ${path}`);
  }

  async request(method: string, path: string, opts: { body?: Buffer | string; contentType?: string }): Promise<Answer> {
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

  private send(method: string, path: string, opts: { body?: Buffer | string; contentType?: string }): Promise<Answer> {
    return new Promise<Answer>((resolve, reject) => {
      const headers: http.OutgoingHttpHeaders = { authorization: `Bearer ${this.#token}`, accept: 'application/json, text/plain' };
      if (opts.body !== undefined) {
        headers['content-type'] = opts.contentType ?? 'application/octet-stream';
        headers['content-length'] = Buffer.byteLength(opts.body);
      }
      const origin = path.startsWith('/') ? this.#origin : null;
      const target = origin ? null : new URL(path, this.#base);
      const mod = (origin ?? target!).protocol === 'https:' ? https : http;
      const req = origin ? mod.request({ ...origin, path, method, headers, agent: this.#agent }) : mod.request(target!, { method, headers, agent: this.#agent });
      const timer = setTimeout(() => req.destroy(new TimedOut()), this.timeoutMs);
      req.on('response', (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          clearTimeout(timer);
          resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') });
        });
        res.on('error', (e) => {
          clearTimeout(timer);
          reject(this.transportError(method, path, e));
        });
      });
      req.on('error', (e: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        // No automatic retry, even on a reused keep-alive socket: an emulated host that resets
        // the connection must look unreachable every time. Idle sockets are closed by the agent
        // (60 s) before the server would (65 s), so a stale socket does not cause this.
        reject(this.transportError(method, path, e));
      });
      req.end(opts.body);
    });
  }

  private transportError(method: string, path: string, e: NodeJS.ErrnoException): FleetpatchError {
    if (e instanceof TimedOut) {
      return new FleetpatchError('HOST_TIMEOUT', `${this.who}: no answer to ${method} ${path} within ${this.timeoutMs} ms`, { hostId: this.who, timeoutMs: this.timeoutMs });
    }
    const code = e.code ?? '';
    if (UNREACHABLE_CODES.has(code) || /socket hang up/i.test(e.message)) {
      return new FleetpatchError('HOST_UNREACHABLE', `${this.who} cannot be reached at ${this.url} (${code || e.message})`, { hostId: this.who, cause: code || e.message });
    }
    return new FleetpatchError('HOST_UNREACHABLE', `${this.who}: ${method} ${path} failed: ${e.message}`, { hostId: this.who, cause: code || e.message });
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
    this.#t = new Transport(this.url, opts.hostId, opts.token, this.timeoutMs, opts.agent, opts.logger?.child({ component: 'host-agent', host: opts.hostId }));
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

  /** UPLOAD: Xen's checks run synchronously; the payload is CHECKED afterwards. */
  upload(name: string, bytes: Uint8Array): Promise<WireUpload> {
    return this.#t.json(WireUploadSchema, 'POST', this.path('livepatch', name), {
      body: Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength),
      contentType: 'application/octet-stream',
    });
  }

  /**
   * ACTION: schedules apply/revert/replace (rc -EAGAIN until done; see waitForAction) or unloads.
   * A synchronous refusal throws XenError; an APPLY's dependency check comes back either way.
   */
  action(name: string, cmd: ActionCmd, opts: ActionOptions = {}): Promise<WireAction> {
    const request: ActionRequestBody = { cmd, ...(opts.timeoutNs !== undefined ? { timeoutNs: opts.timeoutNs } : {}), ...(opts.nodeps ? { nodeps: true } : {}) };
    const body = JSON.stringify(request);
    return this.#t.json(WireActionSchema, 'POST', this.path('livepatch', name, 'action'), { body, contentType: 'application/json' });
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
    return (await this.#t.request('GET', this.path('dump'), {})).text;
  }

  /** Reboots the host: every payload vanishes; for `downMs` it answers nothing. */
  reboot(opts: { downMs?: number } = {}): Promise<WireReboot> {
    const request: RebootRequestBody = opts;
    return this.#t.json(WireRebootSchema, 'POST', this.path('reboot'), { body: JSON.stringify(request), contentType: 'application/json' });
  }
}

export interface FleetClientOptions {
  timeoutMs?: number;
  agent?: http.Agent;
  logger?: Logger;
}

/** A fleet file and a HostAgent per host id. (The emulator's admin routes: src/emulator/admin-client.ts.) */
export class FleetClient {
  readonly fleet: FleetFile;
  readonly #agents = new Map<string, HostAgent>();
  readonly #opts: FleetClientOptions;

  constructor(fleet: FleetFile, opts: FleetClientOptions = {}) {
    this.fleet = fleet;
    this.#opts = opts;
  }

  /** Reads the fleet file (default <FLEETPATCH_DATA_DIR>/fleet.json). */
  static async open(file?: string, opts: FleetClientOptions = {}): Promise<FleetClient> {
    return new FleetClient(await readFleetFile(file), opts);
  }

  get hostIds(): string[] {
    return this.fleet.hosts.map((h) => h.id);
  }

  host(id: string): HostAgent {
    let a = this.#agents.get(id);
    if (!a) {
      const h = findFleetHost(this.fleet, id);
      a = new HostAgent({ url: this.fleet.url, hostId: h.id, token: h.token, ...this.#opts });
      this.#agents.set(id, a);
    }
    return a;
  }
}
