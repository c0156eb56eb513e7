/**
 * The emulator's answers in the agent protocol's shapes (src/agent/contract.ts), built from
 * state-machine values. Build-ids are lowercase hex; addresses are hex strings.
 */
import type { WireCall, WireList, WirePayload, WireStatus } from '../agent/contract.ts';
import { resultValue, type FunctionView } from './functions.ts';
import { bootId, type Host, type ListPage, type LoadedPayload, type PayloadStatus } from './state-machine.ts';

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
