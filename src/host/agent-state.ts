/**
 * What the dom0 agent knows about its host, and how that meets what Xen's tools show. Pure.
 *
 * `xen-livepatch list` prints names, states, rc and the .modinfo strings: no build-id, no
 * dependency, no function, no apply order. The agent learns those from the payloads it parsed at
 * upload (kept in <dir>/state/, see agent-store.ts) and from the order its own actions ran in;
 * Xen's list is the truth they are reconciled with on every read: a payload the list no longer
 * shows is forgotten, one the agent did not upload (someone ran xen-livepatch by hand) is reported
 * with what the tool and Xen's debug dump show and its build-ids marked unknown when neither does.
 * A new boot id means Xen lost every payload: what was learned before is dropped.
 */
import { z } from 'zod';
import { XenError } from '../errors.ts';
import { LIVEPATCH_LIST_MAX, type ActionCmd, type HostDependencyCheck, type WirePayload, type WireStackEntry } from '../agent/contract.ts';
import type { ListedPayload } from './xen-livepatch-output.ts';

const Hex = z.string().regex(/^([0-9a-f]{2})+$/);

/** A payload this agent uploaded: the facts it parsed from the bytes before Xen saw them. */
export const LearnedPayloadSchema = z.object({
  name: z.string().min(1),
  buildId: Hex,
  depends: Hex,
  xenDepends: Hex.nullable(),
  metadata: z.array(z.string()),
  functions: z.array(z.string()),
  safeToReapply: z.boolean(),
  sha256: z.string().regex(/^[0-9a-f]{64}$/),
  size: z.number().int().min(1),
  /** The trusted key whose signature verified. */
  signedBy: z.string(),
  uploadedAt: z.string(),
  /** Reverted after an apply (Xen will not re-apply one with .data). */
  reverted: z.boolean(),
  /** The last action asked of it, for a list that shows rc -EAGAIN (its work still running). */
  lastCmd: z.enum(['apply', 'revert', 'replace', 'unload']).nullable(),
});
export type LearnedPayload = z.infer<typeof LearnedPayloadSchema>;

export const AgentStateSchema = z.object({
  version: z.literal(1),
  /** The boot the facts are about (/proc/sys/kernel/random/boot_id). */
  bootId: z.string(),
  /** Boots this agent has seen since its state was made; a change tells the control plane every payload vanished. */
  boots: z.number().int().min(0),
  payloads: z.array(LearnedPayloadSchema),
  /** Applied payloads' names, bottom to top, as the agent saw them applied. */
  stack: z.array(z.string()),
});
export type AgentState = z.infer<typeof AgentStateSchema>;

export function emptyState(bootId: string): AgentState {
  return { version: 1, bootId, boots: 1, payloads: [], stack: [] };
}

/** The state for the boot the host is in: unchanged, or emptied (and counted) after a reboot. */
export function forBoot(state: AgentState, bootId: string): AgentState {
  return state.bootId === bootId ? state : { version: 1, bootId, boots: state.boots + 1, payloads: [], stack: [] };
}

/** What Xen's debug dump says about one payload (`xl debug-keys x`, then `xl dmesg`). */
export interface DumpFacts {
  buildId: string | null;
  depends: string | null;
  xenDepends: string | null;
  functions: string[];
}

export interface Reconciled {
  /** The state with what the list no longer shows forgotten and the stack in Xen's terms. */
  state: AgentState;
  /** Every payload, in upload order (the list's). */
  entries: WirePayload[];
  /** Applied payloads, bottom to top. */
  appliedStack: WireStackEntry[];
}

/**
 * The list's rows with what the agent learned. The apply order is the agent's where it knows it;
 * an APPLIED payload it did not see applied goes on top, in list order (Xen's list is upload
 * order, and a payload applied by hand is most likely the newest).
 */
export function reconcile(state: AgentState, rows: readonly ListedPayload[], dump: ReadonlyMap<string, DumpFacts> = new Map()): Reconciled {
  const listed = new Set(rows.map((r) => r.name));
  const learned = new Map(state.payloads.filter((p) => listed.has(p.name)).map((p) => [p.name, p] as const));
  // A payload of that name with another build-id in the dump was replaced by hand: not ours.
  for (const [name, p] of learned) {
    const d = dump.get(name);
    if (d?.buildId && d.buildId !== p.buildId) learned.delete(name);
  }
  const applied = new Set(rows.filter((r) => r.state === 'APPLIED').map((r) => r.name));
  const stack = state.stack.filter((n) => applied.has(n));
  for (const r of rows) if (r.state === 'APPLIED' && !stack.includes(r.name)) stack.push(r.name);

  const entries = rows.map((r): WirePayload => {
    const p = learned.get(r.name);
    if (p) {
      return {
        name: r.name, state: r.state, rc: r.rc, reason: r.reason, buildId: p.buildId, depends: p.depends, xenDepends: p.xenDepends,
        metadata: [...p.metadata], reverted: p.reverted, safeToReapply: p.safeToReapply, functions: [...p.functions], facts: 'uploaded',
      };
    }
    const d = dump.get(r.name);
    const known = Boolean(d?.buildId && d.depends);
    return {
      name: r.name,
      state: r.state,
      rc: r.rc,
      reason: r.reason,
      buildId: known ? d!.buildId! : '',
      depends: known ? d!.depends! : '',
      xenDepends: known ? d!.xenDepends : null,
      // The list joins .modinfo strings with ';': a ';' inside one cannot be told apart.
      metadata: r.metadata === '' ? [] : r.metadata.split(';'),
      reverted: false,
      // Not known to be safe: Xen refuses to re-apply a reverted payload with .data.
      safeToReapply: false,
      functions: known ? [...d!.functions] : [],
      facts: known ? 'dump' : 'unknown',
    };
  });
  const byName = new Map(entries.map((e) => [e.name, e]));
  return {
    state: { ...state, payloads: state.payloads.filter((p) => learned.has(p.name)), stack },
    entries,
    appliedStack: stack.map((n) => ({ name: n, buildId: byName.get(n)!.buildId })),
  };
}

/** One LIST page of the reconciled entries, with Xen's bounds (E2BIG beyond 1024, EINVAL for an idx past the end). */
export function listPage<T>(entries: readonly T[], idx: number, nr: number): { entries: T[]; remaining: number; total: number } {
  if (nr > LIVEPATCH_LIST_MAX) throw new XenError('E2BIG', `LIST asks for ${nr} entries; at most ${LIVEPATCH_LIST_MAX} per call`);
  const total = entries.length;
  if (idx >= total && total > 0) throw new XenError('EINVAL', `LIST idx ${idx} is past the last payload (there are ${total})`);
  const page = nr === 0 ? [] : entries.slice(idx, idx + nr);
  return { entries: page, remaining: total - (nr === 0 ? 0 : idx + page.length), total };
}

/**
 * Xen's list version is not printed by the tool: the agent's stands for the set of loaded names,
 * so it moves when a payload is uploaded or unloaded (what a pager needs to notice) and two reads
 * of the same list agree. FNV-1a over the names, positive.
 */
export function listVersion(names: readonly string[]): number {
  let h = 0x811c9dc5;
  for (const ch of new TextEncoder().encode(names.join('\0'))) {
    h ^= ch;
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return (h & 0x7fffffff) || 1;
}

/** The payload whose action is running, as LIST reports it: the agent's own, else a row at rc -EAGAIN whose last action it knows. */
export function pendingOf(running: { name: string; cmd: ActionCmd } | null, rows: readonly ListedPayload[], state: AgentState): { name: string; cmd: 'apply' | 'revert' | 'replace' } | null {
  if (running && running.cmd !== 'unload') return { name: running.name, cmd: running.cmd };
  for (const r of rows) {
    if (r.rc !== -11) continue;
    const cmd = state.payloads.find((p) => p.name === r.name)?.lastCmd;
    if (cmd && cmd !== 'unload') return { name: r.name, cmd };
  }
  return null;
}

/**
 * The build-id check Xen makes at APPLY (against the top of the stack, or the hypervisor when it
 * is empty) and REPLACE (against the hypervisor), from what the agent knows; null when it cannot
 * be told (the payload, or the top of the stack, has unknown build-ids).
 */
export function dependencyCheckFor(
  payload: WirePayload,
  cmd: 'apply' | 'replace',
  stack: readonly WireStackEntry[],
  hypervisorBuildId: string,
  nodeps: boolean,
): HostDependencyCheck | null {
  if (payload.facts === 'unknown' || payload.depends === '') return null;
  const top = cmd === 'apply' ? stack.at(-1) : undefined;
  if (top && top.buildId === '') return null;
  const found = top ? top.buildId : hypervisorBuildId;
  const outcome = nodeps && cmd === 'apply' ? 'skipped' : payload.depends === found ? 'satisfied' : 'mismatch';
  return {
    payload: payload.name,
    payloadBuildId: payload.buildId,
    kind: 'depends',
    operation: cmd,
    against: top ? 'payload' : 'hypervisor',
    againstName: top ? top.name : null,
    expected: payload.depends,
    found,
    outcome,
  };
}

/** Xen's console sentence for a failed check, which xen-livepatch does not print ("Error 22" only). */
export function dependencyMismatchReason(check: HostDependencyCheck): string {
  const against = check.against === 'hypervisor' ? 'hypervisor' : check.againstName;
  const where = check.against === 'hypervisor' ? `the ${check.operation === 'replace' ? '' : 'stack is empty and the '}hypervisor is ${check.found}` : `the top of the stack is ${check.againstName} (${check.found})`;
  return `${check.payload}: check against ${against} build-id failed: it depends on build-id ${check.expected}, but ${where}`;
}

/** The upload's xen_depends check, against the running hypervisor. */
export function xenDependsCheck(p: { name: string; buildId: string; xenDepends: string | null }, hypervisorBuildId: string): HostDependencyCheck | null {
  if (p.xenDepends === null) return null;
  return {
    payload: p.name,
    payloadBuildId: p.buildId,
    kind: 'xen_depends',
    operation: 'upload',
    against: 'hypervisor',
    againstName: null,
    expected: p.xenDepends,
    found: hypervisorBuildId,
    outcome: p.xenDepends === hypervisorBuildId ? 'satisfied' : 'mismatch',
  };
}

// ---- Xen's debug dump -------------------------------------------------------------------------

const DUMP_START = "'x' pressed - Dumping all livepatch patches";
/** `xl dmesg` prefixes each console line with `(XEN) ` and, with console_timestamps, `[<time>] `. */
const CONSOLE_PREFIX = /^(\(XEN\) )?(\[[^\]]*\] )?/;
const PAYLOAD_LINE = /^ name=(.+) state=(CHECKED|APPLIED)\(\d+\)/;
const FUNC_LINE = /^ {4}(\S+) patch [0-9a-f]+\(\d+\) with [0-9a-f]+ \(\d+\)$/;
const FACT_LINE = /^(build-id|depend-on|depend-on-xen)=([0-9a-f]*)$/;

/**
 * The payloads of the last livepatch dump in the hypervisor's console (`xl dmesg` after
 * `xl debug-keys x`): per name, its build-id, depend-on, depend-on-xen and patched functions.
 * Lines it does not know are passed over: the console holds everything else Xen printed too.
 */
export function parseDump(console: string): Map<string, DumpFacts> {
  const lines = console.split('\n').map((l) => l.replace(CONSOLE_PREFIX, ''));
  const start = lines.lastIndexOf(DUMP_START);
  const out = new Map<string, DumpFacts>();
  if (start === -1) return out;
  let current: DumpFacts | null = null;
  for (const line of lines.slice(start + 1)) {
    const p = PAYLOAD_LINE.exec(line);
    if (p) {
      current = { buildId: null, depends: null, xenDepends: null, functions: [] };
      out.set(p[1]!, current);
      continue;
    }
    if (!current) continue;
    const f = FUNC_LINE.exec(line);
    if (f) {
      current.functions.push(f[1]!);
      continue;
    }
    const fact = FACT_LINE.exec(line);
    if (fact && fact[2] !== '' && fact[2]!.length % 2 === 0) {
      if (fact[1] === 'build-id') current.buildId = fact[2]!;
      else if (fact[1] === 'depend-on') current.depends = fact[2]!;
      else current.xenDepends = fact[2]!;
    }
  }
  return out;
}

/** The learned facts after an action the tool reported done. */
export function afterAction(state: AgentState, cmd: ActionCmd, name: string): AgentState {
  const payloads = state.payloads.map((p) => (p.name === name ? { ...p, lastCmd: cmd, reverted: p.reverted || cmd === 'revert' } : p));
  if (cmd === 'unload') return { ...state, payloads: payloads.filter((p) => p.name !== name), stack: state.stack.filter((n) => n !== name) };
  // REPLACE reverted every applied payload first: each is a reverted one now (Xen's .data rule).
  if (cmd === 'replace') return { ...state, payloads: payloads.map((p) => (state.stack.includes(p.name) && p.name !== name ? { ...p, reverted: true } : p)), stack: [name] };
  if (cmd === 'revert') return { ...state, payloads, stack: state.stack.filter((n) => n !== name) };
  return { ...state, payloads, stack: state.stack.includes(name) ? state.stack : [...state.stack, name] };
}
