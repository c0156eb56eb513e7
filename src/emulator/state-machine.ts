/**
 * Xen's live-patch subsystem for one host, as a pure state machine (xen-livepatch.md sections 2-4,
 * xen/common/livepatch.c).
 *
 * A `Host` is an immutable value; every operation takes one and returns the next one together with
 * a result or a XenError, exactly where Xen returns 0 or -errno. Time is passed in (`now`, in
 * milliseconds) so asynchronous actions are deterministic: an action is scheduled with rc -EAGAIN
 * and `settle(host, now)` completes it once its emulated duration has passed. The HTTP layer holds
 * the real clock; tests hold a fake one.
 *
 * What Xen decides by running code (does the CPU rendezvous in time, does the patching fail, does
 * the machine crash) comes in as `ActionEffects` from the fault layer, so the same machine serves
 * healthy hosts and sick ones.
 *
 * Upload checks are not reimplemented here: an injected `UploadChecker` (by default the payload
 * library's, see payload-adapter.ts) turns bytes into `PayloadFacts` or throws Xen's XenError.
 */
import { XEN_ERRNO, XenError, type XenErrnoName } from '../errors.ts';
import { shortBuildId } from '../payload/build-id.ts';
import { liveCode } from './live-code.ts';
import {
  ACTION_CMDS,
  ACTION_NUMBER,
  LIVEPATCH_DEFAULT_TIMEOUT_NS,
  LIVEPATCH_LIST_MAX,
  STATE_NUMBER,
  XEN_LIVEPATCH_NAME_SIZE,
  type ActionCmd,
  type HostDependencyCheck,
  type PayloadState,
} from '../agent/contract.ts';

/** xen_sysctl_livepatch_action.timeout is a uint32_t. */
export const LIVEPATCH_MAX_TIMEOUT_NS = 0xffff_ffff;
/** Xen's payload_version starts at 1 (livepatch.c), and so does ours, after every boot. */
export const INITIAL_LIST_VERSION = 1;

// Xen's protocol constants and the check report live in the agent contract (both ends use them).
export { ACTION_CMDS, ACTION_NUMBER, LIVEPATCH_DEFAULT_TIMEOUT_NS, LIVEPATCH_LIST_MAX, STATE_NUMBER, XEN_LIVEPATCH_NAME_SIZE, type ActionCmd, type PayloadState };

/** What calling a hypervisor function returns on this host right now. */
export type CallResult =
  | { readonly kind: 'string'; readonly value: string }
  | { readonly kind: 'integer'; readonly value: number }
  /**
   * The result cannot be decided from the code; `why` says where and why, as a clause about the
   * function ("it branches at +0x12 (jne 0x1a)"), and formatResult makes it a sentence.
   */
  | { readonly kind: 'undefined'; readonly why: string };

export interface ImageFunction {
  readonly address: bigint;
  readonly size: number;
  readonly result: CallResult;
}

/** The running hypervisor: it never changes while the host is up, and survives reboots. */
export interface HostImage {
  readonly name: string;
  readonly buildId: string;
  /** Every function of the image, with what it returns unpatched. */
  readonly functions: ReadonlyMap<string, ImageFunction>;
  /** Function name by address, for patches that name their target only by old_addr. */
  readonly functionAt: (address: bigint) => string | undefined;
  /**
   * The image's bytes at an address (null when they are not all in one of its sections). APPLY
   * compares expectations with them, patched by the applied payloads (live-code.ts). An image
   * without it cannot satisfy an enabled expectation.
   */
  readonly codeAt?: (address: bigint, length: number) => Uint8Array | null;
  /** Opaque to the state machine: the payload library's image, handed back to the checker. */
  readonly source: unknown;
}

/** struct livepatch_expectation (Xen 4.14+): the bytes old_addr must hold when the payload is applied. */
export interface FuncExpectation {
  readonly enabled: boolean;
  /** 0..31 */
  readonly len: number;
  /** Reserved bits: must be 0. */
  readonly rsv: number;
  /** The expected bytes (the first `len` count). */
  readonly data: Uint8Array;
}

/** One `struct livepatch_func` after Xen resolved it. */
export interface PatchedFunction {
  /** The hypervisor function this entry patches (from `name`, or the symbol at old_addr). */
  readonly target: string;
  /** The entry's own `name` string, or null (xen_nop has none). */
  readonly name: string | null;
  readonly oldAddr: bigint;
  readonly oldSize: number;
  /** 0 for a NOP entry. */
  readonly newAddr: bigint;
  readonly newSize: number;
  readonly nop: boolean;
  /** What calling `target` returns while this payload provides it. */
  readonly result: CallResult;
  /** The entry's expectation (struct version 2); absent or null: none. */
  readonly expect?: FuncExpectation | null;
}

/** Everything the state machine needs to know about a payload that passed the upload checks. */
export interface PayloadFacts {
  readonly buildId: string;
  readonly depends: string;
  /** null for the xSplice form, which predates .livepatch.xen_depends. */
  readonly xenDepends: string | null;
  readonly funcs: readonly PatchedFunction[];
  /** Pre/post apply/revert hooks: REPLACE refuses them (EOPNOTSUPP). */
  readonly vetoingHooks: boolean;
  /** .modinfo strings, in order. */
  readonly metadata: readonly string[];
  /** Xen's safe_to_reapply: no writable section but .livepatch.funcs. */
  readonly safeToReapply: boolean;
  /** For the debug dump: where Xen put the regions and how many pages it took. */
  readonly layout: { readonly textAddr: bigint; readonly rwAddr: bigint; readonly roAddr: bigint; readonly pages: number };
  /** Opaque: the payload library's model, handed back to the checker for later uploads. */
  readonly model: unknown;
}

export interface UploadCheckInput {
  readonly name: string;
  readonly bytes: Uint8Array;
  readonly image: HostImage;
  readonly loaded: readonly LoadedPayload[];
}

/** Runs Xen's upload checks; returns the facts or throws XenError. */
export type UploadChecker = (input: UploadCheckInput) => PayloadFacts;

export interface PayloadFailure {
  readonly errno: XenErrnoName;
  readonly reason: string;
}

export interface LoadedPayload {
  readonly name: string;
  readonly facts: PayloadFacts;
  readonly state: PayloadState;
  /** 0 or -errno, as Xen's GET returns it. */
  readonly rc: number;
  /** Why rc is what it is (Xen prints this only on its console). */
  readonly reason: string | null;
  /** Reverted at least once (Xen's data->reverted). */
  readonly reverted: boolean;
  /** Set by a verification fault: while applied, its functions return this instead. */
  readonly corruptResult: string | null;
}

/** A build-id dependency check, in the form callers record as an event. */
/** A build-id dependency check, as the hypervisor reports it (the agent contract's shape). */
export type DependencyCheck = HostDependencyCheck;

/** What the fault layer decides about one scheduled action. All optional: a healthy host. */
export interface ActionEffects {
  /** Time from the hypercall until the work starts (rc stays -EAGAIN meanwhile). */
  readonly durationMs?: number;
  /** Time the CPUs need to rendezvous; more than the timeout (or Infinity) means rc -EBUSY. */
  readonly rendezvousMs?: number;
  /** Applying the target fails with this error (state stays CHECKED). */
  readonly applyFailure?: PayloadFailure;
  /** Reverting these payloads fails (REVERT of the target, or REPLACE's walk down the stack). */
  readonly revertFailures?: Readonly<Record<string, PayloadFailure>>;
  /** The host crashes while doing the work, and stays down this long. */
  readonly crash?: { readonly downMs: number };
  /** The apply succeeds but the patched functions return this (a verification failure). */
  readonly corruptResult?: string;
}

export interface PendingAction {
  readonly name: string;
  readonly cmd: Exclude<ActionCmd, 'unload'>;
  readonly scheduledAt: number;
  /** When the work runs (or the rendezvous gives up). */
  readonly completesAt: number;
  readonly timedOut: boolean;
  readonly timeoutNs: number;
  readonly effects: ActionEffects;
}

export interface Host {
  readonly id: string;
  readonly image: HostImage;
  /** Loaded payloads in upload order (Xen's payload_list). */
  readonly payloads: readonly LoadedPayload[];
  /** Applied payloads, bottom to top (Xen's applied_list). */
  readonly stack: readonly string[];
  /** LIST's version: bumped on every upload and unload. */
  readonly version: number;
  /** The one outstanding action of the whole hypervisor (livepatch_work). */
  readonly pending: PendingAction | null;
  /** Boots since the host was created (0 for the first). */
  readonly boots: number;
  /**
   * Makes the boot identity unique to this host's life: the boot id is `<bootSeed>-<boots>`, as a
   * real host agent would read /proc/sys/kernel/random/boot_id (a new one on every boot).
   */
  readonly bootSeed: string;
  /** When the host last came up (ms; for a reboot: when it answers again). */
  readonly bootedAt: number;
  /** Until then the host is rebooting and answers nothing. */
  readonly downUntil: number;
  /** The last crash, for the fault layer and for operators. */
  readonly lastCrash: { readonly at: number; readonly during: string } | null;
}

export type Outcome<T> = { readonly ok: true; readonly host: Host; readonly value: T } | { readonly ok: false; readonly host: Host; readonly error: XenError };

export function createHost(id: string, image: HostImage, boot: { seed?: string; now?: number } = {}): Host {
  return { id, image, payloads: [], stack: [], version: INITIAL_LIST_VERSION, pending: null, boots: 0, bootSeed: boot.seed ?? id, bootedAt: boot.now ?? 0, downUntil: 0, lastCrash: null };
}

/** The host's boot identity: changes on every boot, so a reader knows its stack was lost. */
export function bootId(host: Host): string {
  return `${host.bootSeed}-${host.boots}`;
}

// ---------------------------------------------------------------------------------------------
// Helpers

function ok<T>(host: Host, value: T): Outcome<T> {
  return { ok: true, host, value };
}

function fail<T>(host: Host, errno: XenErrnoName, reason: string, details: Record<string, unknown> = {}): Outcome<T> {
  return { ok: false, host, error: new XenError(errno, reason, { hostId: host.id, ...details }) };
}

export function findPayload(host: Host, name: string): LoadedPayload | undefined {
  return host.payloads.find((p) => p.name === name);
}

function replacePayload(host: Host, name: string, change: (p: LoadedPayload) => LoadedPayload): Host {
  return { ...host, payloads: host.payloads.map((p) => (p.name === name ? change(p) : p)) };
}

function topOfStack(host: Host): LoadedPayload | undefined {
  const top = host.stack[host.stack.length - 1];
  return top === undefined ? undefined : findPayload(host, top);
}

/** Xen's get_name: 1..127 characters (the NUL makes 128). */
export function checkName(name: string): string | null {
  if (name.length === 0) return 'the payload name is empty';
  if (new TextEncoder().encode(name).length > XEN_LIVEPATCH_NAME_SIZE - 1) return `the payload name is longer than ${XEN_LIVEPATCH_NAME_SIZE - 1} bytes`;
  if (name.includes('\0')) return 'the payload name contains a NUL byte';
  return null;
}

// ---------------------------------------------------------------------------------------------
// Asynchronous work

/**
 * Completes the pending action if its time has come (Xen's check_for_livepatch_work). Every
 * operation calls it first, so an observer can never see an action that should have finished.
 */
export function settle(host: Host, now: number): Host {
  const work = host.pending;
  if (!work || now < work.completesAt) return host;
  const idle: Host = { ...host, pending: null };
  if (work.timedOut) {
    // livepatch_spin: "Timed out on semaphore in CPU quiesce phase"; nothing was touched.
    return replacePayload(idle, work.name, (p) => ({
      ...p,
      rc: -XEN_ERRNO.EBUSY,
      reason: `${work.name}: timed out on semaphore in CPU quiesce phase (the CPUs did not rendezvous within ${work.timeoutNs} ns)`,
    }));
  }
  if (work.effects.crash) {
    const rebooted = reboot(idle, { now: work.completesAt, downMs: work.effects.crash.downMs });
    return { ...rebooted, lastCrash: { at: work.completesAt, during: `${work.cmd} ${work.name}` } };
  }
  switch (work.cmd) {
    case 'apply':
      return doApply(idle, work.name, work.effects);
    case 'revert':
      return doRevert(idle, work.name, work.effects);
    case 'replace':
      return doReplace(idle, work.name, work.effects);
  }
}

function applyTail(host: Host, name: string, effects: ActionEffects): Host {
  const h = replacePayload(host, name, (p) => ({ ...p, state: 'APPLIED', rc: 0, reason: null, corruptResult: effects.corruptResult ?? null }));
  return { ...h, stack: [...h.stack, name] };
}

function revertTail(host: Host, name: string): Host {
  const h = replacePayload(host, name, (p) => ({ ...p, state: 'CHECKED', rc: 0, reason: null, reverted: true, corruptResult: null }));
  return { ...h, stack: h.stack.filter((n) => n !== name) };
}

function failed(host: Host, name: string, f: PayloadFailure): Host {
  return replacePayload(host, name, (p) => ({ ...p, rc: -XEN_ERRNO[f.errno], reason: f.reason }));
}

function doApply(host: Host, name: string, effects: ActionEffects): Host {
  if (effects.applyFailure) return failed(host, name, effects.applyFailure);
  return applyTail(host, name, effects);
}

function doRevert(host: Host, name: string, effects: ActionEffects): Host {
  const f = effects.revertFailures?.[name];
  if (f) return failed(host, name, f);
  return revertTail(host, name);
}

/**
 * REPLACE (livepatch_do_action): revert every applied payload top-down; a failed revert stops the
 * walk with -EINVAL and leaves the stack partly reverted; then apply the new payload alone.
 */
function doReplace(host: Host, name: string, effects: ActionEffects): Host {
  let h = host;
  for (const other of [...host.stack].reverse()) {
    const f = effects.revertFailures?.[other];
    if (f) {
      h = failed(h, other, f);
      return failed(h, name, {
        errno: 'EINVAL',
        reason: `${name}: REPLACE stopped: reverting ${other} failed (${f.reason}); the payloads above it were reverted, the rest stay applied`,
      });
    }
    h = revertTail(h, other);
  }
  // Xen checks the new payload's expectations only now, with every other payload reverted.
  const expectation = checkExpectations(h, findPayload(h, name)!);
  if (expectation) {
    return failed(h, name, {
      errno: expectation.errno,
      reason: `${expectation.reason}. SYSTEM MIGHT BE INSECURE: Replace action has been aborted after reverting ALL payloads!`,
    });
  }
  if (effects.applyFailure) {
    return failed(h, name, {
      errno: effects.applyFailure.errno,
      reason: `${effects.applyFailure.reason} (every other payload was already reverted: the host is unpatched)`,
    });
  }
  return applyTail(h, name, effects);
}

// ---------------------------------------------------------------------------------------------
// UPLOAD

export interface UploadValue {
  readonly payload: LoadedPayload;
  /** The .livepatch.xen_depends check Xen made (absent for a payload without one). */
  readonly dependencyCheck: DependencyCheck | null;
}

export function upload(host0: Host, req: { name: string; bytes: Uint8Array }, ctx: { now: number; check: UploadChecker }): Outcome<UploadValue> {
  const host = settle(host0, ctx.now);
  let facts: PayloadFacts;
  try {
    facts = ctx.check({ name: req.name, bytes: req.bytes, image: host.image, loaded: host.payloads });
  } catch (e) {
    if (e instanceof XenError) return { ok: false, host, error: e };
    throw e;
  }
  const payload: LoadedPayload = { name: req.name, facts, state: 'CHECKED', rc: 0, reason: null, reverted: false, corruptResult: null };
  const next: Host = { ...host, payloads: [...host.payloads, payload], version: host.version + 1 };
  const dependencyCheck: DependencyCheck | null =
    facts.xenDepends === null
      ? null
      : {
          payload: req.name,
          payloadBuildId: facts.buildId,
          kind: 'xen_depends',
          operation: 'upload',
          against: 'hypervisor',
          againstName: null,
          expected: facts.xenDepends,
          found: host.image.buildId,
          outcome: facts.xenDepends === host.image.buildId ? 'satisfied' : 'mismatch',
        };
  return ok(next, { payload, dependencyCheck });
}

// ---------------------------------------------------------------------------------------------
// GET and LIST

export interface PayloadStatus {
  readonly name: string;
  readonly state: PayloadState;
  readonly rc: number;
  readonly reason: string | null;
}

export function getStatus(host0: Host, name: string, now: number): Outcome<PayloadStatus> {
  const host = settle(host0, now);
  const bad = checkName(name);
  if (bad) return fail(host, 'EINVAL', bad, { payload: name });
  const p = findPayload(host, name);
  if (!p) return fail(host, 'ENOENT', `${name}: no payload of that name is loaded`, { payload: name });
  return ok(host, { name: p.name, state: p.state, rc: p.rc, reason: p.reason });
}

export interface ListPage {
  readonly entries: readonly LoadedPayload[];
  /** Xen's list->nr on return: entries from the last one returned to the end of the list. */
  readonly remaining: number;
  readonly total: number;
  readonly version: number;
}

/** Xen's livepatch_list: entries in upload order from `idx`, at most `nr` of them. */
export function list(host0: Host, req: { idx: number; nr: number }, now: number): Outcome<ListPage> {
  const host = settle(host0, now);
  const { idx, nr } = req;
  if (!Number.isInteger(idx) || !Number.isInteger(nr) || idx < 0 || nr < 0 || idx > 0xffff_ffff) {
    return fail(host, 'EINVAL', `LIST idx and nr must be unsigned 32-bit integers (got idx=${idx}, nr=${nr})`);
  }
  if (nr > LIVEPATCH_LIST_MAX) return fail(host, 'E2BIG', `LIST asks for ${nr} entries; at most ${LIVEPATCH_LIST_MAX} per call`);
  const total = host.payloads.length;
  if (idx >= total && total > 0) return fail(host, 'EINVAL', `LIST idx ${idx} is past the last payload (there are ${total})`);
  const entries = nr === 0 ? [] : host.payloads.slice(idx, idx + nr);
  // Xen counts the entries it walked past (i), not the ones it copied (idx).
  const walked = nr === 0 ? 0 : idx + entries.length;
  return ok(host, { entries, remaining: total - walked, total, version: host.version });
}

// ---------------------------------------------------------------------------------------------
// ACTION

export interface ActionRequest {
  readonly name: string;
  readonly cmd: ActionCmd | string;
  /** Nanoseconds; 0 or absent means Xen's 30 ms. */
  readonly timeoutNs?: number;
  /** LIVEPATCH_ACTION_APPLY_NODEPS. */
  readonly nodeps?: boolean;
}

export interface ActionContext {
  readonly now: number;
  /** Asked only when work is actually scheduled; the fault layer's decision. */
  readonly effects?: (target: { payload: LoadedPayload; cmd: Exclude<ActionCmd, 'unload'>; stack: readonly LoadedPayload[] }) => ActionEffects;
}

export interface ActionValue {
  /** Always 0 here: refusals come back as errors. */
  readonly rc: 0;
  /** Whether work was scheduled (rc -EAGAIN until it completes); false for no-ops and UNLOAD. */
  readonly scheduled: boolean;
  readonly dependencyCheck: DependencyCheck | null;
}

/** Xen's livepatch_action: the synchronous part; the work itself runs in `settle`. */
export function action(host0: Host, req: ActionRequest, ctx: ActionContext): Outcome<ActionValue> {
  const host = settle(host0, ctx.now);
  const { name } = req;
  const bad = checkName(name);
  if (bad) return fail(host, 'EINVAL', bad, { payload: name });
  const timeoutNs = req.timeoutNs ?? 0;
  if (!Number.isInteger(timeoutNs) || timeoutNs < 0 || timeoutNs > LIVEPATCH_MAX_TIMEOUT_NS) {
    return fail(host, 'EINVAL', `the timeout must be an unsigned 32-bit number of nanoseconds (got ${timeoutNs})`, { payload: name });
  }
  const data = findPayload(host, name);
  if (!data) return fail(host, 'ENOENT', `${name}: no payload of that name is loaded`, { payload: name });
  if (host.pending?.name === name) {
    return fail(host, 'EBUSY', `${name}: its previous action (${host.pending.cmd}) is still in progress`, { payload: name });
  }
  const noop = ok(host, { rc: 0, scheduled: false, dependencyCheck: null } as ActionValue);

  switch (req.cmd) {
    case 'unload': {
      if (data.state !== 'CHECKED') return fail(host, 'EINVAL', `${name}: is APPLIED; revert it before unloading`, { payload: name, state: data.state });
      const next: Host = { ...host, payloads: host.payloads.filter((p) => p.name !== name), version: host.version + 1 };
      return ok(next, { rc: 0, scheduled: false, dependencyCheck: null });
    }

    case 'revert': {
      if (data.state !== 'APPLIED') return noop;
      const top = topOfStack(host)!;
      if (top.name !== name) return fail(host, 'EBUSY', `${name}: can't unload. Top is ${top.name}`, { payload: name, top: top.name });
      return schedule(host, data, 'revert', timeoutNs, null, ctx);
    }

    case 'apply': {
      if (data.state !== 'CHECKED') return noop;
      if (data.reverted && !data.facts.safeToReapply) {
        // Xen sets the payload's rc and returns 0: the tool finds -EINVAL on its next GET.
        const reason = `${name}: can't revert as payload has .data. Please unload`;
        return ok(replacePayload(host, name, (p) => ({ ...p, rc: -XEN_ERRNO.EINVAL, reason })), { rc: 0, scheduled: false, dependencyCheck: null });
      }
      const check = dependsCheck(host, data, 'apply', Boolean(req.nodeps));
      if (check.outcome === 'mismatch') {
        return fail(host, 'EINVAL', dependsFailure(check), { payload: name, dependencyCheck: check });
      }
      // livepatch_check_expectations: in the hypercall, before the work is scheduled (also with NODEPS).
      const expectation = checkExpectations(host, data);
      if (expectation) {
        return fail(host, expectation.errno, expectation.reason, { payload: name, dependencyCheck: check, ...expectation.details });
      }
      return schedule(host, data, 'apply', timeoutNs, check, ctx);
    }

    case 'replace': {
      if (data.state !== 'CHECKED') return noop;
      const check = dependsCheck(host, data, 'replace', false);
      if (check.outcome === 'mismatch') {
        return fail(host, 'EINVAL', dependsFailure(check), { payload: name, dependencyCheck: check });
      }
      const vetoing = [data, ...host.stack.map((n) => findPayload(host, n)!)].filter((p) => p.facts.vetoingHooks);
      if (vetoing.length > 0) {
        return fail(host, 'EOPNOTSUPP', `${name}: REPLACE action is not supported on livepatches with vetoing hooks! (${vetoing.map((p) => p.name).join(', ')})`, {
          payload: name,
          vetoing: vetoing.map((p) => p.name),
          dependencyCheck: check,
        });
      }
      return schedule(host, data, 'replace', timeoutNs, check, ctx);
    }

    default:
      return fail(host, 'EOPNOTSUPP', `unknown action "${req.cmd}" (expected apply, revert, replace or unload)`, { payload: name });
  }
}

/** A refusal of livepatch_check_expectations, with what was compared. */
interface ExpectationFailure extends PayloadFailure {
  readonly details: Record<string, unknown>;
}

function hexBytes(b: Uint8Array): string {
  return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
}

/**
 * livepatch_check_expectations / livepatch_verify_expectation_fn: for each function with an
 * enabled expectation, in order: old_addr 0 EFAULT, len past data[] EOVERFLOW, reserved bits
 * EINVAL, old_size < len ERANGE, the first len bytes of the live code at old_addr differ EINVAL.
 * Live code: the image's bytes with the applied payloads' jumps and NOPs over them.
 */
export function checkExpectations(host: Host, data: LoadedPayload): ExpectationFailure | null {
  for (const f of data.facts.funcs) {
    const exp = f.expect;
    if (!exp?.enabled) continue;
    const fname = f.name ?? f.target;
    const base = { check: 'expectation', function: fname, target: f.target };
    const refuse = (errno: XenErrnoName, why: string, details: Record<string, unknown> = {}): ExpectationFailure => ({
      errno,
      reason: `${data.name}: expectations of ${fname} failed (rc=-${XEN_ERRNO[errno]}), aborting: ${why}`,
      details: { ...base, ...details },
    });
    if (f.oldAddr === 0n) return refuse('EFAULT', 'old_addr is 0, so there is nothing to expect');
    if (exp.len > exp.data.length) return refuse('EOVERFLOW', `it expects ${exp.len} bytes, more than the ${exp.data.length} its data holds`);
    if (exp.rsv !== 0) return refuse('EINVAL', `the expectation's reserved bits are set (rsv=${exp.rsv})`);
    if (f.oldSize < exp.len) return refuse('ERANGE', `it expects ${exp.len} bytes of a ${f.oldSize}-byte function`);
    const expected = exp.data.subarray(0, exp.len);
    const live = liveCode(host, f.oldAddr, exp.len);
    if (!live) {
      return refuse('EFAULT', `the emulated image ${host.image.name} has no code at 0x${f.oldAddr.toString(16)} to compare with`, { expected: hexBytes(expected) });
    }
    if (hexBytes(live.bytes) !== hexBytes(expected)) {
      const by = live.patchedBy ? ` (the live code there is patched by ${live.patchedBy})` : '';
      return {
        errno: 'EINVAL',
        reason: `${data.name}: ${fname}: expectation failed: expected:${hexBytes(expected)}, actual:${hexBytes(live.bytes)}${by}`,
        details: { ...base, expected: hexBytes(expected), actual: hexBytes(live.bytes), patchedBy: live.patchedBy },
      };
    }
  }
  return null;
}

/** build_id_dep: against the top of the stack, or the hypervisor when the stack is empty or for REPLACE. */
function dependsCheck(host: Host, data: LoadedPayload, operation: 'apply' | 'replace', nodeps: boolean): DependencyCheck {
  const top = operation === 'replace' ? undefined : topOfStack(host);
  const found = top ? top.facts.buildId : host.image.buildId;
  const matches = data.facts.depends === found;
  return {
    payload: data.name,
    payloadBuildId: data.facts.buildId,
    kind: 'depends',
    operation,
    against: top ? 'payload' : 'hypervisor',
    againstName: top ? top.name : null,
    expected: data.facts.depends,
    found,
    outcome: nodeps ? 'skipped' : matches ? 'satisfied' : 'mismatch',
  };
}

/** Xen's console line, plus what it leaves out: which build-ids were compared. */
function dependsFailure(c: DependencyCheck): string {
  const where = c.against === 'payload' ? `the top of the stack is ${c.againstName} (${shortBuildId(c.found)})` : `the hypervisor is ${shortBuildId(c.found)}`;
  return `${c.payload}: check against ${c.againstName ?? 'hypervisor'} build-id failed: it depends on build-id ${shortBuildId(c.expected)}, but ${where}`;
}

function schedule(
  host: Host,
  data: LoadedPayload,
  cmd: Exclude<ActionCmd, 'unload'>,
  timeoutNs: number,
  dependencyCheck: DependencyCheck | null,
  ctx: ActionContext,
): Outcome<ActionValue> {
  // schedule_work: one outstanding action on the whole hypervisor. (Xen has already set this
  // payload's rc to -EAGAIN and leaves it so; we keep its previous rc, or the tool could never act
  // on it again. See docs/hypervisor.md.)
  if (host.pending) {
    return fail(host, 'EBUSY', `${data.name}: another action (${host.pending.cmd} ${host.pending.name}) is in progress on this hypervisor`, {
      payload: data.name,
      pending: host.pending.name,
      ...(dependencyCheck ? { dependencyCheck } : {}),
    });
  }
  const stack = host.stack.map((n) => findPayload(host, n)!);
  const effects = ctx.effects?.({ payload: data, cmd, stack }) ?? {};
  const effectiveNs = timeoutNs === 0 ? LIVEPATCH_DEFAULT_TIMEOUT_NS : timeoutNs;
  const timeoutMs = effectiveNs / 1e6;
  const startsAt = ctx.now + Math.max(0, effects.durationMs ?? 0);
  const rendezvous = Math.max(0, effects.rendezvousMs ?? 0);
  const timedOut = rendezvous > timeoutMs;
  const pending: PendingAction = {
    name: data.name,
    cmd,
    scheduledAt: ctx.now,
    completesAt: startsAt + (timedOut ? timeoutMs : rendezvous),
    timedOut,
    timeoutNs: effectiveNs,
    effects,
  };
  const next = replacePayload({ ...host, pending }, data.name, (p) => ({ ...p, rc: -XEN_ERRNO.EAGAIN, reason: `${cmd} in progress` }));
  return ok(next, { rc: 0, scheduled: true, dependencyCheck });
}

// ---------------------------------------------------------------------------------------------
// Reboot

/** Loaded and applied payloads vanish; the image stays, as on real hardware. */
export function reboot(host: Host, opts: { now: number; downMs?: number }): Host {
  return {
    ...host,
    payloads: [],
    stack: [],
    version: INITIAL_LIST_VERSION,
    pending: null,
    boots: host.boots + 1,
    bootedAt: Math.max(host.downUntil, opts.now + Math.max(0, opts.downMs ?? 0)),
    downUntil: Math.max(host.downUntil, opts.now + Math.max(0, opts.downMs ?? 0)),
  };
}

export function isDown(host: Host, now: number): boolean {
  return now < host.downUntil;
}

// ---------------------------------------------------------------------------------------------
// Views

export function appliedStack(host: Host): readonly LoadedPayload[] {
  return host.stack.map((n) => findPayload(host, n)!);
}

function hex64(v: bigint): string {
  return BigInt.asUintN(64, v).toString(16).padStart(16, '0');
}

/** Xen's debug key 'x' (livepatch_printall), as the console shows it. */
export function dump(host0: Host, now: number): string {
  const host = settle(host0, now);
  const lines = [`'x' pressed - Dumping all livepatch patches`, `build-id: ${host.image.buildId}`];
  for (const p of host.payloads) {
    const l = p.facts.layout;
    lines.push(` name=${p.name} state=${p.state}(${STATE_NUMBER[p.state]}) ${hex64(l.textAddr)} (.data=${hex64(l.rwAddr)}, .rodata=${hex64(l.roAddr)}) using ${l.pages} pages.`);
    if (p.facts.metadata.length > 0) {
      lines.push('livepatch: module metadata:');
      for (const m of p.facts.metadata) lines.push(`livepatch:   ${m}`);
    }
    for (const f of p.facts.funcs) {
      lines.push(`    ${f.name ?? '(null)'} patch ${hex64(f.oldAddr)}(${f.oldSize}) with ${hex64(f.newAddr)} (${f.newSize})`);
    }
    lines.push(`build-id=${p.facts.buildId}`);
    lines.push(`depend-on=${p.facts.depends}`);
    if (p.facts.xenDepends) lines.push(`depend-on-xen=${p.facts.xenDepends}`);
  }
  return lines.join('\n') + '\n';
}
