/**
 * The JSON the fleet server speaks, shared by the server (which builds it from state-machine values)
 * and the HostAgent (which reads it). Build-ids are lowercase hex; addresses are hex strings.
 */
import { XenError, isFleetpatchError } from '../errors.ts';
import { resultValue, type FunctionView } from './functions.ts';
import { bootId, type ActionCmd, type DependencyCheck, type Host, type ListPage, type LoadedPayload, type PayloadState, type PayloadStatus } from './state-machine.ts';

export interface WirePayload {
  name: string;
  state: PayloadState;
  /** 0 or -errno. */
  rc: number;
  /** Why rc is not 0, in words. */
  reason: string | null;
  buildId: string;
  depends: string;
  xenDepends: string | null;
  metadata: string[];
  reverted: boolean;
  safeToReapply: boolean;
  /** The hypervisor functions it patches. */
  functions: string[];
}

export interface WireStackEntry {
  name: string;
  buildId: string;
}

export interface WireList {
  host: string;
  hypervisor: { image: string; buildId: string };
  version: number;
  total: number;
  /** Xen's list->nr on return: entries not yet walked. */
  remaining: number;
  idx: number;
  entries: WirePayload[];
  /** Applied payloads, bottom to top. */
  appliedStack: WireStackEntry[];
  pending: { name: string; cmd: Exclude<ActionCmd, 'unload'> } | null;
  /** Reboots since the fleet started; a change means every payload vanished. */
  boots: number;
  /** The boot identity (a new id on every boot, also when the emulator restarts) and when it came up. */
  boot: { id: string; at: string };
}

export interface WireStatus {
  name: string;
  state: PayloadState;
  rc: number;
  reason: string | null;
}

export interface WireUpload extends WirePayload {
  /** The .livepatch.xen_depends comparison made at upload. */
  dependencyCheck: DependencyCheck | null;
}

export interface WireAction {
  rc: 0;
  /** Work was scheduled: poll GET until rc is no longer -EAGAIN. */
  scheduled: boolean;
  dependencyCheck: DependencyCheck | null;
}

export interface WireCall {
  function: string;
  /** The string or number it returns, or null when that cannot be known (e.g. NOPed). */
  result: string | number | null;
  kind: 'string' | 'integer' | 'undefined';
  why?: string;
  providedBy: { name: string; buildId: string } | null;
}

export interface WireReboot {
  rebooted: true;
  boots: number;
}

export interface WireError {
  /** -errno, for Xen's refusals. */
  rc?: number;
  errno?: string;
  code?: number;
  error: string;
  message: string;
  dependencyCheck?: DependencyCheck;
  details?: Record<string, unknown>;
}

export function payloadView(p: LoadedPayload): WirePayload {
  return {
    name: p.name,
    state: p.state,
    rc: p.rc,
    reason: p.reason,
    buildId: p.facts.buildId,
    depends: p.facts.depends,
    xenDepends: p.facts.xenDepends,
    metadata: [...p.facts.metadata],
    reverted: p.reverted,
    safeToReapply: p.facts.safeToReapply,
    functions: p.facts.funcs.map((f) => f.target),
  };
}

/** `wallOffsetMs`: add to the host's clock to get wall time (the emulator's clock starts at 0). */
export function listView(host: Host, page: ListPage, idx: number, wallOffsetMs = 0): WireList {
  return {
    host: host.id,
    hypervisor: { image: host.image.name, buildId: host.image.buildId },
    version: page.version,
    total: page.total,
    remaining: page.remaining,
    idx,
    entries: page.entries.map(payloadView),
    appliedStack: host.stack.map((n) => ({ name: n, buildId: host.payloads.find((p) => p.name === n)!.facts.buildId })),
    pending: host.pending ? { name: host.pending.name, cmd: host.pending.cmd } : null,
    boots: host.boots,
    boot: { id: bootId(host), at: new Date(host.bootedAt + wallOffsetMs).toISOString() },
  };
}

export function statusView(s: PayloadStatus): WireStatus {
  return { name: s.name, state: s.state, rc: s.rc, reason: s.reason };
}

export function callView(v: FunctionView): WireCall {
  return {
    function: v.function,
    result: resultValue(v.result),
    kind: v.result.kind,
    ...(v.result.kind === 'undefined' ? { why: v.result.why } : {}),
    providedBy: v.providedBy ? { ...v.providedBy } : null,
  };
}

/** JSON.stringify that writes bigints as hex and byte arrays as hex (error details carry both). */
export function toJson(value: unknown): string {
  return JSON.stringify(value, (_k, v: unknown) => {
    if (typeof v === 'bigint') return `0x${BigInt.asUintN(64, v).toString(16)}`;
    if (v instanceof Uint8Array) return Buffer.from(v).toString('hex');
    return v;
  });
}

export function errorView(e: unknown): { status: number; body: WireError } {
  if (e instanceof XenError) {
    const { dependencyCheck, ...details } = e.details as Record<string, unknown>;
    return {
      status: e.httpStatus,
      body: {
        rc: -e.errno,
        errno: e.errnoName,
        code: e.errno,
        error: e.errnoName,
        message: e.message,
        ...(dependencyCheck ? { dependencyCheck: dependencyCheck as DependencyCheck } : {}),
        details,
      },
    };
  }
  if (isFleetpatchError(e)) return { status: e.httpStatus, body: { error: e.code, message: e.message } };
  return { status: 500, body: { error: 'INTERNAL', message: 'the fleet server failed; see its log' } };
}
