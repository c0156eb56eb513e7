/**
 * Fault injection for emulated hosts: the faults file (zod schema), a seeded PRNG, and the injector
 * that turns rules into decisions per request.
 *
 * Determinism: every random draw is a pure function of (seed, host id, the host's request number,
 * rule index, purpose), so the same seed and the same sequence of requests to a host give the same
 * faults, whatever other hosts are doing and in whatever order requests to different hosts
 * interleave. Only authenticated requests to a host count (a refused request changes nothing).
 *
 * Example (YAML or JSON):
 *
 *   seed: 7
 *   actionDurationMs: 100          # every action stays at rc -EAGAIN for 100 ms
 *   rules:
 *     - kind: latency              # 50 +- 20 ms on every request to eu-west hosts
 *       ms: 50
 *       jitterMs: 20
 *       labels: { region: eu-west }
 *     - kind: applyFailure         # 10% of applies of xen_bye_world fail with EINVAL
 *       payload: xen_bye_world
 *       probability: 0.1
 *     - kind: unreachable          # host-0003 refuses connections from its 5th request on
 *       hosts: [host-0003]
 *       afterRequests: 5
 */
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { FleetpatchError, XEN_ERRNO, type XenErrnoName } from '../errors.ts';
import { labelOf } from '../domain/fleet-host.ts';
import type { ActionCmd, ActionEffects, PayloadFailure } from './state-machine.ts';
import { readInputText } from '../runtime/files.ts';

// ---------------------------------------------------------------------------------------------
// Seeded PRNG

/** 32-bit FNV-1a over a string, then a murmur3 finaliser: a well-mixed seed from any key. */
export function hash32(key: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < key.length; i++) {
    h ^= key.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** mulberry32: a small, fast, seeded generator of floats in [0, 1). */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** One draw in [0, 1) determined by its key alone. */
export function draw(seed: number, ...key: (string | number)[]): number {
  return mulberry32(hash32(`${seed}\u0000${key.join('\u0000')}`))();
}

// ---------------------------------------------------------------------------------------------
// Schema

/** Every delay is finite and at most a day (timers cannot hold longer; a longer fault is a bug). */
export const MAX_FAULT_MS = 86_400_000;
const ms = z.number().finite().nonnegative().max(MAX_FAULT_MS);
const errnoName = z.enum(Object.keys(XEN_ERRNO) as [XenErrnoName, ...XenErrnoName[]]);

/** Which hosts a rule concerns, and when it fires. Absent selectors match every host. */
const common = {
  /** Host ids. */
  hosts: z.array(z.string().min(1)).optional(),
  /** Every label given must match. */
  labels: z.record(z.string(), z.string()).optional(),
  /** Image names or build-ids. */
  images: z.array(z.string().min(1)).optional(),
  /** Chance per eligible request (seeded). */
  probability: z.number().min(0).max(1).default(1),
  /** Only from the host's n-th authenticated request on (0-based). */
  afterRequests: z.number().int().nonnegative().optional(),
  /** ... and for this many requests. */
  forRequests: z.number().int().positive().optional(),
  /** Fire at most this many times per host. */
  times: z.number().int().positive().optional(),
};
/** A payload name or build-id; absent: every payload. */
const payload = z.string().min(1).optional();

export const FaultRuleSchema = z.discriminatedUnion('kind', [
  /** Extra latency before the host answers: every request, or only ACTION requests. */
  z.object({ kind: z.literal('latency'), ms, jitterMs: ms.default(0), on: z.enum(['all', 'actions']).default('all'), ...common }).strict(),
  /** How long a scheduled action stays at rc -EAGAIN before the work runs. */
  z.object({ kind: z.literal('actionDuration'), ms, jitterMs: ms.default(0), payload, ...common }).strict(),
  /** The CPUs do not rendezvous in time: rc becomes -EBUSY after the action's timeout, state unchanged. */
  z.object({ kind: z.literal('actionTimeout'), rendezvousMs: ms.optional(), payload, ...common }).strict(),
  /** Applying (APPLY or REPLACE) the payload fails with this errno; state stays CHECKED. */
  z.object({ kind: z.literal('applyFailure'), errno: errnoName.default('EINVAL'), reason: z.string().optional(), payload, ...common }).strict(),
  /** Reverting the payload (REVERT, or REPLACE's walk down the stack) fails; it stays APPLIED. */
  z.object({ kind: z.literal('revertFailure'), errno: errnoName.default('EINVAL'), reason: z.string().optional(), payload, ...common }).strict(),
  /** The apply succeeds but the patched functions return `result`: a failed verification. */
  z.object({ kind: z.literal('verifyFailure'), result: z.string().default('<corrupted>'), payload, ...common }).strict(),
  /** The host crashes while applying: it reboots (every payload gone) and is down for downMs. */
  z.object({ kind: z.literal('crashDuringApply'), downMs: ms.default(1000), payload, ...common }).strict(),
  /** The host reboots on this request (the request is dropped) and is down for downMs. */
  z.object({ kind: z.literal('reboot'), downMs: ms.default(1000), ...common }).strict(),
  /** The host cannot be reached: the connection is reset ('refuse') or never answered ('hang'). */
  z.object({ kind: z.literal('unreachable'), mode: z.enum(['refuse', 'hang']).default('refuse'), ...common }).strict(),
]);

export const FaultsSchema = z
  .object({
    /** Seed of every draw; defaults to the fleet's seed. */
    seed: z.number().int().optional(),
    /** Fleet-wide latency added to every request. */
    latencyMs: ms.default(0),
    /** Fleet-wide latency added to ACTION requests only. */
    actionLatencyMs: ms.default(0),
    /** Fleet-wide time every action stays at rc -EAGAIN. */
    actionDurationMs: ms.default(0),
    rules: z.array(FaultRuleSchema).default([]),
  })
  .strict();

export type FaultRule = z.infer<typeof FaultRuleSchema>;
export type Faults = z.infer<typeof FaultsSchema>;
export type FaultsInput = z.input<typeof FaultsSchema>;

export const NO_FAULTS: Faults = FaultsSchema.parse({});

/** Validates a faults document; FAULTS_INVALID names every problem with its path. */
export function parseFaults(input: unknown, source = 'faults'): Faults {
  const r = FaultsSchema.safeParse(input ?? {});
  if (!r.success) {
    const problems = r.error.issues.map((i) => `${i.path.length ? i.path.join('.') : '(top)'}: ${i.message}`);
    throw new FleetpatchError('FAULTS_INVALID', `${source}: ${problems.join('; ')}`, { issues: r.error.issues });
  }
  return r.data;
}

/** Reads a faults file (YAML or JSON). */
export async function loadFaultsFile(file: string): Promise<Faults> {
  // A regular file of at most 1 MiB (runtime/files.ts): a FIFO or /dev/zero is refused, not read.
  let text: string;
  try {
    text = await readInputText(file, 'faults');
  } catch (e) {
    throw new FleetpatchError('FAULTS_INVALID', `cannot read the faults file: ${(e as Error).message}`, { file });
  }
  let doc: unknown;
  try {
    doc = parseYaml(text);
  } catch (e) {
    throw new FleetpatchError('FAULTS_INVALID', `${file} is neither YAML nor JSON: ${(e as Error).message}`, { file });
  }
  return parseFaults(doc, file);
}

// ---------------------------------------------------------------------------------------------
// Injector

export interface FaultTarget {
  readonly id: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly image: { readonly name: string; readonly buildId: string };
}

export type RequestKind = 'list' | 'get' | 'upload' | 'action' | 'call' | 'functions' | 'dump' | 'reboot';

export interface RequestDecision {
  /** The host's request number (0-based), the key of every draw for this request. */
  readonly n: number;
  readonly latencyMs: number;
  readonly unreachable: 'refuse' | 'hang' | null;
  readonly reboot: { readonly downMs: number } | null;
}

interface PayloadRef {
  readonly name: string;
  readonly buildId: string;
}

interface HostFaultState {
  requests: number;
  fired: Map<number, number>;
}

export class FaultInjector {
  readonly faults: Faults;
  readonly seed: number;
  private readonly state = new Map<string, HostFaultState>();

  constructor(faults: Faults = NO_FAULTS, fleetSeed = 0) {
    this.faults = faults;
    this.seed = faults.seed ?? fleetSeed;
  }

  private hostState(id: string): HostFaultState {
    let s = this.state.get(id);
    if (!s) this.state.set(id, (s = { requests: 0, fired: new Map() }));
    return s;
  }

  private selects(rule: FaultRule, host: FaultTarget, n: number): boolean {
    if (rule.hosts && !rule.hosts.includes(host.id)) return false;
    if (rule.images && !rule.images.includes(host.image.name) && !rule.images.includes(host.image.buildId)) return false;
    if (rule.labels && !Object.entries(rule.labels).every(([k, v]) => labelOf(host.labels, k) === v)) return false;
    const from = rule.afterRequests ?? 0;
    if (n < from) return false;
    if (rule.forRequests !== undefined && n >= from + rule.forRequests) return false;
    return true;
  }

  /** Whether rule i fires for this host on request n (consumes one of its `times`). */
  private fires(i: number, host: FaultTarget, n: number, purpose: string): boolean {
    const rule = this.faults.rules[i]!;
    if (!this.selects(rule, host, n)) return false;
    const s = this.hostState(host.id);
    if (rule.times !== undefined && (s.fired.get(i) ?? 0) >= rule.times) return false;
    if (rule.probability < 1 && draw(this.seed, host.id, n, i, purpose) >= rule.probability) return false;
    s.fired.set(i, (s.fired.get(i) ?? 0) + 1);
    return true;
  }

  private jitter(base: number, jitterMs: number, host: FaultTarget, n: number, i: number | string): number {
    if (jitterMs <= 0) return base;
    return Math.max(0, base + (draw(this.seed, host.id, n, i, 'jitter') * 2 - 1) * jitterMs);
  }

  /** Called once per authenticated request, before it is handled. */
  onRequest(host: FaultTarget, kind: RequestKind): RequestDecision {
    const s = this.hostState(host.id);
    const n = s.requests++;
    let latencyMs = this.faults.latencyMs + (kind === 'action' ? this.faults.actionLatencyMs : 0);
    let unreachable: RequestDecision['unreachable'] = null;
    let reboot: RequestDecision['reboot'] = null;
    this.faults.rules.forEach((rule, i) => {
      if (rule.kind === 'latency') {
        if (rule.on === 'actions' && kind !== 'action') return;
        if (this.fires(i, host, n, 'latency')) latencyMs += this.jitter(rule.ms, rule.jitterMs, host, n, i);
      } else if (rule.kind === 'unreachable') {
        if (!unreachable && !reboot && this.fires(i, host, n, 'unreachable')) unreachable = rule.mode;
      } else if (rule.kind === 'reboot') {
        if (!unreachable && !reboot && this.fires(i, host, n, 'reboot')) reboot = { downMs: rule.downMs };
      }
    });
    return { n, latencyMs, unreachable, reboot };
  }

  /** What happens to an action scheduled by request n. */
  actionEffects(host: FaultTarget, n: number, target: { payload: PayloadRef; cmd: Exclude<ActionCmd, 'unload'>; stack: readonly PayloadRef[] }): ActionEffects {
    const applies = target.cmd === 'apply' || target.cmd === 'replace';
    const about = (rule: { payload?: string | undefined }, p: PayloadRef) => rule.payload === undefined || rule.payload === p.name || rule.payload === p.buildId;
    let durationMs = this.faults.actionDurationMs;
    let rendezvousMs: number | undefined;
    let applyFailure: PayloadFailure | undefined;
    let corruptResult: string | undefined;
    let crash: { downMs: number } | undefined;
    const revertFailures: Record<string, PayloadFailure> = {};
    const reverted = target.cmd === 'revert' ? [target.payload] : target.cmd === 'replace' ? [...target.stack].reverse() : [];

    this.faults.rules.forEach((rule, i) => {
      switch (rule.kind) {
        case 'actionDuration':
          if (about(rule, target.payload) && this.fires(i, host, n, 'duration')) durationMs = this.jitter(rule.ms, rule.jitterMs, host, n, i);
          break;
        case 'actionTimeout':
          if (rendezvousMs === undefined && about(rule, target.payload) && this.fires(i, host, n, 'timeout')) rendezvousMs = rule.rendezvousMs ?? Number.POSITIVE_INFINITY;
          break;
        case 'applyFailure':
          if (applies && !applyFailure && about(rule, target.payload) && this.fires(i, host, n, 'apply')) {
            applyFailure = { errno: rule.errno, reason: rule.reason ?? `${target.payload.name}: applying failed (injected ${rule.errno})` };
          }
          break;
        case 'verifyFailure':
          if (applies && corruptResult === undefined && about(rule, target.payload) && this.fires(i, host, n, 'verify')) corruptResult = rule.result;
          break;
        case 'crashDuringApply':
          if (applies && !crash && about(rule, target.payload) && this.fires(i, host, n, 'crash')) crash = { downMs: rule.downMs };
          break;
        case 'revertFailure':
          for (const p of reverted) {
            if (!revertFailures[p.name] && about(rule, p) && this.fires(i, host, n, `revert:${p.name}`)) {
              revertFailures[p.name] = { errno: rule.errno, reason: rule.reason ?? `${p.name}: reverting failed (injected ${rule.errno})` };
            }
          }
          break;
        default:
          break;
      }
    });
    return {
      durationMs,
      ...(rendezvousMs !== undefined ? { rendezvousMs } : {}),
      ...(applyFailure ? { applyFailure } : {}),
      ...(corruptResult !== undefined ? { corruptResult } : {}),
      ...(crash ? { crash } : {}),
      ...(Object.keys(revertFailures).length ? { revertFailures } : {}),
    };
  }
}
