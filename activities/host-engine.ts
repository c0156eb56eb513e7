/**
 * The batch engine's work on one host: patch it, or restore it to its former stack, as a loop of
 * "read the live host once, ask a pure planner for the next step, record the intent, take the
 * step, record the facts". The planners (src/rollout/patch-plan.ts, restore.ts) decide; this file
 * only talks to the host and the store.
 *
 * Recording:
 * - Facts go through the group committer, keyed on (rollout, host, repair, build-id, step,
 *   ordinal), so a re-claimed host never records a fact twice: the ordinal of a step continues
 *   from what the host's stream already holds for this rollout, and a repair's facts (its outcome
 *   above all) are its own, never mistaken for the rollout's and dropped.
 * - Durable before the next hypervisor call: the host's former state and target (before the first
 *   change), the intent (before every call), and fleetpatch's own dependency check (before APPLY).
 *   Everything else is committed with the next durable write or at the end of the batch.
 * - A re-claimed host (its holder died), and every host before a restore, is reconciled first: the
 *   facts the record lacks are restated from the live host (src/rollout/restate.ts), and what
 *   remains different is recorded as drift.
 *
 * Hosts are retried on transient faults (unreachable, timeout, EBUSY from a rendezvous) a bounded
 * number of times and then fail with the reason; PostgreSQL being away is waited out by the
 * committer and never fails a host.
 */
import { FleetpatchError, XenError, errnoName } from '../src/errors.ts';
import { waitForDatabase, type GroupCommitter } from '../src/events/group-commit.ts';
import { compareStacks, replayHost } from '../src/events/audit/replay.ts';
import { foldHostStack, hostSnapshot } from '../src/events/projections/host-stack.ts';
import { finishWrite, retouchWrite, touchWrite, type ClaimedHost } from '../src/events/sql/claims.ts';
import { noticeBoots } from '../src/events/host-boots.ts';
import { selectStoredBuildIds } from '../src/events/sql/payloads.ts';
import type { RecordedEvent } from '../src/events/store.ts';
import { hostStream } from '../src/events/streams.ts';
import type { HostAgent } from '../src/agent/client.ts';
import type { HostDependencyCheck, WireCall, WireList, WireStatus } from '../src/agent/contract.ts';
import { hostStateFromList } from '../src/agent/live-state.ts';
import { assignPayload, short, type DependencyCheck, type PayloadMeta, type StackEntry } from '../src/rollout/matching.ts';
import { nextPatchStep, patchGoal, type ApplyStep, type PatchGoal } from '../src/rollout/patch-plan.ts';
import { lostFacts } from '../src/rollout/restate.ts';
import { describeStack, looseOurs, nextRestoreStep, type LiveHost, type RestoreGoal } from '../src/rollout/restore.ts';
import type { CallOutcome, FormerState, HostFailure, HostPatchResult, RestoreOutcome, RestoreStepDone, RolloutMode, VerifySpec } from '../src/rollout/types.ts';
import type { ActivityDeps } from './deps.ts';
import { dependencyCheckEvent } from './recording.ts';
import { observe } from '../src/runtime/observers.ts';
import { HostRecorder, type EngineIdentity, type LaneHooks } from './host-recorder.ts';

/** Attempts of one step on a host before a transient fault fails the host (as the old per-host retry policy). */
const HOST_ATTEMPTS = 4;
const RETRY_DELAYS_MS = [500, 1_000, 2_000, 4_000];
/** More steps than any stack needs; beyond it the host is not converging. */
const MAX_STEPS = 200;
/** What a waited ACTION (`waitMs`) leaves of the request's timeout for the answer's way back. */
const ACTION_WAIT_MARGIN_MS = 2_000;

/** Reboots of one host during its patch before it is left for a later run. */
const MAX_REBOOTS = 2;

export interface PatchJob {
  rolloutId: string;
  mode: RolloutMode;
  payloads: PayloadMeta[];
  verify?: VerifySpec;
  waveName: string;
  /** Set when this is a repair of the rollout ("repair-1"): the facts and outcome it records are its own. */
  repair?: string;
}

export interface RestoreJob {
  rolloutId: string;
  /** The rollback this restore is part of (absent: the restore after a failed patch). */
  rollbackId?: string;
  hostId: string;
  former: FormerState;
  ours: string[];
  verifyCall?: string;
  /** The boot the rollout first changed the host in; a host in another boot lost that former stack. */
  touchedBootId?: string | null;
  /** The boot fleetpatch last saw the host in. */
  lastBootId?: string | null;
}

const ref = (p: StackEntry): StackEntry => ({ name: p.name, buildId: p.buildId });

export function liveHostOf(list: WireList): LiveHost {
  return {
    hypervisorBuildId: list.hypervisor.buildId,
    applied: list.appliedStack.map(ref),
    loaded: list.entries.map((e) => ({ name: e.name, buildId: e.buildId, state: e.state, rc: e.rc, reverted: e.reverted, safeToReapply: e.safeToReapply, depends: e.depends })),
  };
}

export function callOutcome(call: WireCall): CallOutcome {
  return { kind: call.kind, value: call.result === null ? null : String(call.result), ...(call.why ? { why: call.why } : {}) };
}

const sameResult = (a: CallOutcome, b: CallOutcome): boolean => a.kind === b.kind && a.value === b.value;
const describeResult = (r: CallOutcome): string => (r.value === null ? `no known value (${r.why ?? 'undecidable'})` : `"${r.value}"`);

class StepFailed extends Error {
  constructor(readonly failure: HostFailure) {
    super(failure.reason);
  }
}

/** A host refusal or fault as the failure the report shows. */
function failureOf(stage: HostFailure['stage'], e: unknown): HostFailure {
  if (e instanceof StepFailed) return e.failure;
  if (e instanceof FleetpatchError) return { stage, code: e.code, reason: e.message, unreachable: e.code === 'HOST_UNREACHABLE' || e.code === 'HOST_TIMEOUT' };
  return { stage, code: 'INTERNAL', reason: e instanceof Error ? `${e.name}: ${e.message}` : String(e), unreachable: false };
}

const transient = (e: unknown): boolean => e instanceof FleetpatchError && e.retryable && !(e instanceof StepFailed);

export class HostEngine {
  private readonly bytesCache = new Map<string, { bytes: Buffer; signature: object | null }>();

  constructor(
    private readonly deps: ActivityDeps,
    private readonly committer: GroupCommitter,
    private readonly id: EngineIdentity,
    private readonly heartbeat: () => void,
  ) {}

  private async agentFor(hostId: string): Promise<HostAgent> {
    return (await this.deps.fleet()).host(hostId);
  }

  private async storedPayload(buildId: string): Promise<{ bytes: Buffer; signature: object | null }> {
    let stored = this.bytesCache.get(buildId);
    if (!stored) {
      const p = await this.db(() => this.deps.payloads.get(buildId));
      // The signature file the payload was stored with, whole, for the host's agent to verify
      // against its own trusted keys (it refuses a payload without one): the store keeps the
      // signature's key and bytes, the rest is the payload's own digest and build-id.
      const signature = p.signature
        ? { type: 'fleetpatch-payload-signature', version: 1, algorithm: p.signature.algorithm, keyId: p.signature.keyId, sha256: p.sha256, buildId: p.buildId, signature: p.signature.signature }
        : null;
      stored = { bytes: p.bytes, signature };
      this.bytesCache.set(buildId, stored);
    }
    return stored;
  }

  private waitOptions(): { pollMs: number; deadlineMs: number } {
    return { pollMs: this.deps.actionPollMs ?? 20, deadlineMs: this.deps.actionDeadlineMs ?? 120_000 };
  }

  private wait(agent: HostAgent, name: string): Promise<WireStatus> {
    return agent.waitForAction(name, this.waitOptions());
  }

  /**
   * How long the host may wait for an action's work before it answers (ACTION's `waitMs`): the
   * status comes with the answer, one round trip instead of two. Short of the request's timeout,
   * so that a host that waits is never taken for one that does not answer.
   */
  private actionWaitMs(agent: HostAgent): number {
    return Math.max(0, Math.min(this.waitOptions().deadlineMs, agent.timeoutMs - ACTION_WAIT_MARGIN_MS));
  }

  /** LIST with the host retries; a host that stays unreachable fails with `stage`. */
  private async list(agent: HostAgent, stage: HostFailure['stage']): Promise<WireList> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await agent.listAll();
      } catch (e) {
        if (!transient(e) || attempt >= HOST_ATTEMPTS) throw new StepFailed(failureOf(stage, e));
        await sleep(RETRY_DELAYS_MS[attempt - 1]!);
      }
    }
  }

  private readStream(hostId: string): Promise<RecordedEvent[]> {
    return this.deps.events.readStream(hostStream(hostId));
  }

  /** One host request with the host retries (verify, the former result): a lasting fault fails `stage`. */
  private async retrying<T>(stage: HostFailure['stage'], fn: () => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await fn();
      } catch (e) {
        if (!transient(e) || attempt >= HOST_ATTEMPTS) throw new StepFailed(failureOf(stage, e));
        await sleep(RETRY_DELAYS_MS[attempt - 1]!);
      }
    }
  }

  /**
   * Restates what an earlier holder did on the host but could not record, then records the rest
   * of any difference as drift, so the record matches the live host before anything is decided.
   */
  private async reconcile(rec: HostRecorder, list: WireList, moved: ReadonlySet<string>): Promise<void> {
    // What this lane already knows must be in the record before the record is compared with the
    // host: this host's facts, not every lane's (waiting for the whole committer to go idle stalled
    // every reconciling lane behind the busy ones).
    await rec.durable();
    const events = await this.db(() => this.readStream(rec.hostId));
    rec.learn(events);
    const recorded = foldHostStack(rec.hostId, events);
    const live = liveHostOf(list);
    const lost = lostFacts(recorded, live, moved);
    for (const f of lost) {
      const n = rec.next(f.kind, f.payload.buildId);
      const type = { reverted: 'PayloadReverted', unloaded: 'PayloadUnloaded', uploaded: 'PayloadUploaded', applied: 'PayloadApplied', replaced: 'PayloadReplaced' }[f.kind];
      rec.add(rec.key(f.payload.buildId, f.kind, n), { type, hostId: rec.hostId, payload: f.payload, ...(f.kind === 'replaced' ? { replaced: f.replaced } : {}) });
      if (f.kind === 'applied' || f.kind === 'replaced') this.restateHostCheck(rec, list, f.payload, f.kind === 'replaced' ? 'replace' : 'apply', n);
      if (f.kind === 'uploaded') this.restateHostCheck(rec, list, f.payload, 'upload', n);
    }
    const snapshot = { hypervisorBuildId: live.hypervisorBuildId, appliedStack: live.applied, loaded: live.loaded.map((p) => ({ name: p.name, buildId: p.buildId, state: p.state })) };
    // Nothing lost and nothing different (the usual case): the record matches the host as read, and
    // replaying would only read the same stream again to find no drift.
    if (lost.length === 0 && compareStacks(hostSnapshot(recorded), snapshot).length === 0) return;
    if (lost.length > 0) await rec.durable();
    await this.db(() => replayHost(this.deps.events, rec.hostId, async () => snapshot, {
      actor: this.id.actor,
      correlation: this.id.correlation,
    }));
  }

  /** The check a hypervisor made for a step whose report was lost: restated from the live stack. */
  private restateHostCheck(rec: HostRecorder, list: WireList, payload: StackEntry, operation: 'upload' | 'apply' | 'replace', n: number): void {
    const entry = list.entries.find((e) => e.buildId === payload.buildId);
    if (!entry) return;
    let against: DependencyCheck['against'] = { kind: 'hypervisor' };
    let found = list.hypervisor.buildId;
    let expected = operation === 'upload' ? (entry.xenDepends ?? '') : entry.depends;
    if (operation === 'apply') {
      const at = list.appliedStack.findIndex((e) => e.buildId === payload.buildId);
      const below = at > 0 ? list.appliedStack[at - 1] : undefined;
      if (below) {
        against = { kind: 'payload', name: below.name, buildId: below.buildId };
        found = below.buildId;
      }
    }
    if (!expected) expected = found;
    rec.add(rec.key(payload.buildId, `${operation}-check`, n), {
      type: 'DependencyChecked',
      hostId: rec.hostId,
      payload,
      phase: operation === 'upload' ? 'upload' : 'apply',
      on: operation === 'upload' ? 'xen_depends' : 'depends',
      expected,
      found,
      against,
      outcome: 'match',
      reason: `checked by the hypervisor at ${operation.toUpperCase()}; the holder that sent it lost the host before recording the report, so it is restated from the live stack`,
    });
  }

  private recordHostCheck(rec: HostRecorder, payload: StackEntry, check: HostDependencyCheck, key: string, errno?: string, reason?: string): void {
    rec.add(key, {
      type: 'DependencyChecked',
      hostId: rec.hostId,
      payload,
      phase: check.operation === 'upload' ? 'upload' : 'apply',
      on: check.kind,
      expected: check.expected,
      found: check.found,
      against: check.against === 'hypervisor' ? { kind: 'hypervisor' } : { kind: 'payload', name: check.againstName ?? '?', buildId: check.found },
      outcome: check.outcome === 'mismatch' ? 'mismatch' : 'match',
      ...(errno ? { errno } : {}),
      reason: reason ?? `checked by the hypervisor at ${check.operation.toUpperCase()}${check.outcome === 'skipped' ? ' (APPLY_NODEPS: not enforced)' : ''}`,
    });
  }

  private recordRefusal(rec: HostRecorder, fence: number, action: 'upload' | 'apply' | 'revert' | 'replace' | 'unload', payload: StackEntry, e: unknown, n: number, attempt: number): void {
    if (!(e instanceof FleetpatchError)) return;
    const base = rec.key(payload.buildId, `${action}-failed`, n, fence, attempt);
    rec.add(base, { type: 'PayloadActionFailed', hostId: rec.hostId, action, payload, code: e.code, ...(e instanceof XenError ? { errno: e.errnoName } : {}), reason: e.message });
    const check = e.details.dependencyCheck as HostDependencyCheck | undefined;
    if (check) this.recordHostCheck(rec, payload, check, `${base}/check`, e instanceof XenError ? e.errnoName : undefined, e.message);
  }

  /** One asynchronous action to its end; a final rc other than 0 (or the wrong state) is a XenError. */
  private async act(agent: HostAgent, rec: HostRecorder, payload: StackEntry, cmd: 'apply' | 'replace' | 'revert', checkKey: string): Promise<void> {
    const started = performance.now();
    // Told before the request: the wait may be the request's own or the polls' that follow.
    rec.lane.acting?.();
    // The host waits for the work: one request. Its check is recorded as soon as it is told, so
    // a host that goes down during the work has still reported it.
    const { status: done } = await agent.actAndWait(payload.name, cmd, {
      ...this.waitOptions(),
      waitMs: this.actionWaitMs(agent),
      onScheduled: (r) => {
        if (r.dependencyCheck) this.recordHostCheck(rec, payload, r.dependencyCheck, checkKey);
      },
    });
    const status = done ?? (await this.wait(agent, payload.name));
    observe('hypervisorAction', cmd, (performance.now() - started) / 1000, status.rc === 0 ? 'ok' : (errnoName(status.rc) ?? `rc ${status.rc}`));
    const want = cmd === 'revert' ? 'CHECKED' : 'APPLIED';
    if (!(status.state === want && status.rc === 0)) {
      const verb = { apply: 'applying', replace: 'replacing all live patches with', revert: 'reverting' }[cmd];
      throw new XenError(errnoName(status.rc) ?? 'EINVAL', `${agent.hostId}: ${verb} ${payload.name} failed: ${status.reason ?? `rc ${status.rc}`}`, { hostId: agent.hostId, payload: payload.name, rc: status.rc });
    }
  }

  // ---- patching --------------------------------------------------------------------------------

  /**
   * Patches one claimed host to the end: patched, already, or failed (and then restored). Resolves
   * when the lane may take its next host; the outcome's `recorded` settles once it is durable.
   */
  async patch(claim: ClaimedHost, job: PatchJob, lane: LaneHooks = {}): Promise<FinishedHost> {
    const { hostId, fence } = claim;
    const rec = new HostRecorder(this.committer, this.id, { rolloutId: job.rolloutId, ...(job.repair ? { repair: job.repair } : {}) }, hostId, lane);
    const agent = await this.agentFor(hostId);
    const ours = new Set(job.payloads.map((p) => p.buildId));
    let former: FormerState | null = claim.formerStack ? { formerStack: claim.formerStack, formerLoaded: claim.formerLoaded ?? [], formerResult: claim.formerResult } : null;
    let list: WireList | undefined;
    let reboots = 0;
    // A fresh host's former result is read beside its stack: two reads, one round trip's wait.
    const verifyCall = job.verify?.call;
    let formerCall = verifyCall && !former ? this.retrying('read', () => agent.call(verifyCall)) : undefined;
    formerCall?.catch(() => undefined);
    try {
      list = await this.list(agent, 'read');
      let boot = await this.noticeBoot(rec, list, claim.lastBootId);
      let goal: PatchGoal | null = null;
      if (former && claim.targetStack && !(claim.touchedBootId && boot !== claim.touchedBootId)) {
        // A host an earlier holder had started: the record catches up with the host first.
        await this.reconcile(rec, list, new Set([...ours, ...former.formerStack.map((p) => p.buildId)]));
        goal = { mode: job.mode, target: claim.targetStack, payloads: job.payloads };
      } else if (claim.intent !== null || claim.fence > 1) {
        await this.reconcile(rec, list, ours);
      }
      if (!goal) {
        // A fresh host, or one that rebooted since the rollout touched it: start from what it runs now.
        const start = await this.start(rec, agent, claim, job, list, boot, former !== null, formerCall);
        formerCall = undefined;
        if ('finished' in start) return start.finished;
        ({ goal, former } = start);
      }

      let attempt = 1;
      let lostAnswer: { step: ReturnType<typeof nextPatchStep>; before: WireList } | null = null;
      for (let n = 0; ; n++) {
        if (n >= MAX_STEPS) throw new StepFailed({ stage: 'apply', code: 'EINVAL', reason: `the host did not reach its target stack after ${MAX_STEPS} steps`, unreachable: false });
        const step = nextPatchStep(liveHostOf(list), goal);
        // Once the host is no longer busy with it, a step whose answer was lost is recorded if it landed.
        if (lostAnswer && step.kind !== 'wait') {
          this.recordLanded(rec, hostId, lostAnswer.step, lostAnswer.before, list);
          lostAnswer = null;
        }
        let failed: unknown;
        if (step.kind === 'applied') {
          const verified = job.verify ? await this.verify(rec, agent, job.verify, fence, n) : null;
          if (!verified || verified.ok) break;
          failed = new StepFailed({ stage: 'verify', code: 'VERIFY_FAILED', reason: verified.reason, unreachable: false });
        } else if (step.kind === 'changed') {
          failed = new StepFailed({ stage: 'check', code: 'EINVAL', reason: step.reason, unreachable: false });
        } else {
          const stage: HostFailure['stage'] = step.kind === 'upload' || step.kind === 'unload' ? 'upload' : step.kind === 'replace' ? 'replace' : 'apply';
          try {
            list = await this.patchStep(agent, rec, fence, step, list, attempt);
            attempt = 1;
            this.heartbeat();
            continue;
          } catch (e) {
            if (e instanceof FencedOut) return settled(lost(hostId));
            if (!(e instanceof StepFailed) && transient(e) && attempt < HOST_ATTEMPTS) {
              await sleep(RETRY_DELAYS_MS[attempt - 1]!);
              attempt++;
              const bootBefore = boot;
              lostAnswer = step.kind === 'apply' || step.kind === 'replace' ? { step, before: list } : null;
              list = await this.list(agent, stage);
              boot = await this.noticeBoot(rec, list, boot);
              if (boot !== bootBefore) lostAnswer = null;
              continue;
            }
            failed = e instanceof StepFailed ? e : new StepFailed(failureOf(stage, e));
          }
        }
        // Before a failure is taken for what it seems: did the host reboot (its patch is gone)?
        const now = await this.list(agent, 'read');
        const bootNow = await this.noticeBoot(rec, now, boot);
        if (bootNow === boot) throw failed;
        if (++reboots > MAX_REBOOTS) throw new StepFailed({ stage: 'apply', code: 'HOST_REBOOTED', reason: `the host rebooted ${reboots} times while it was being patched; left for a later run`, unreachable: false });
        list = now;
        boot = bootNow;
        const again = await this.start(rec, agent, claim, job, list, boot, true);
        if ('finished' in again) return again.finished;
        ({ goal, former } = again);
      }
      const applied = list.appliedStack.filter((p) => ours.has(p.buildId)).map(ref);
      return await this.finish(rec, claim, job, { hostId, outcome: 'patched', applied });
    } catch (e) {
      const failure = failureOf('read', e);
      if (!former) return await this.finish(rec, claim, job, { hostId, outcome: 'failed', failure, applied: [] });
      const restore = await this.restoreHost(rec, agent, { rolloutId: job.rolloutId, hostId, former, ours: [...ours], ...(job.verify ? { verifyCall: job.verify.call } : {}) }, fence);
      return await this.finish(rec, claim, job, { hostId, outcome: 'failed', failure, applied: restore.stackNow.filter((p) => ours.has(p.buildId)), restore });
    }
  }

  /**
   * Decides a host from what it runs now: already patched, incompatible, or the goal to patch it
   * to, with its former state kept (durably, before the first change). `again`: the rollout
   * touched it before and it rebooted since; the former state becomes what it runs now.
   */
  private async start(
    rec: HostRecorder,
    agent: HostAgent,
    claim: ClaimedHost,
    job: PatchJob,
    list: WireList,
    boot: string | null,
    again: boolean,
    formerCall?: Promise<WireCall>,
  ): Promise<{ finished: FinishedHost } | { goal: PatchGoal; former: FormerState }> {
    const { hostId, fence } = claim;
    const state = hostStateFromList(hostId, list);
    const assignment = assignPayload(job.mode, job.payloads, state);
    if (assignment.kind === 'already') return { finished: await this.finish(rec, claim, job, { hostId, outcome: again ? 'patched' : 'already', applied: again ? state.applied.filter((p) => job.payloads.some((x) => x.buildId === p.buildId)) : [] }) };
    if (assignment.kind === 'incompatible') {
      // Compatible at the preflight, not any more: nothing was changed; the checks say why.
      assignment.checks.forEach((c, i) => rec.add(rec.key('check', fence, i), dependencyCheckEvent(hostId, c, 'apply')));
      throw new StepFailed({ stage: 'check', code: 'EINVAL', reason: assignment.reason, unreachable: false });
    }
    const goal = patchGoal(job.mode, assignment, state.applied);
    const verifyCall = job.verify?.call;
    const formerResult = verifyCall ? callOutcome(await (formerCall ?? this.retrying('read', () => agent.call(verifyCall)))) : null;
    const former: FormerState = { formerStack: state.applied.map(ref), formerLoaded: state.loaded.map(ref), formerResult };
    rec.add(rec.key('started', ...(again ? [boot ?? 'boot'] : [])), {
      type: 'HostPatchStarted',
      hostId,
      rollout: job.rolloutId,
      formerStack: former.formerStack,
      formerLoaded: former.formerLoaded,
      ...(formerResult && job.verify ? { formerResult: { call: job.verify.call, kind: formerResult.kind, value: formerResult.value } } : {}),
      ...(boot ? { bootId: boot } : {}),
    });
    const t = { ...former, targetStack: goal.target, intent: 'start', bootId: boot };
    // Durable with the first step's intent, before the first change: one commit there, not two in a row.
    rec.touchWith((intent) => (again ? retouchWrite : touchWrite)(job.rolloutId, hostId, fence, { ...t, intent }));
    return { goal, former };
  }

  /** Calls the plan's function and compares; recorded either way. */
  private async verify(rec: HostRecorder, agent: HostAgent, verify: VerifySpec, fence: number, n: number): Promise<{ ok: boolean; reason: string }> {
    const call = await this.retrying('verify', () => agent.call(verify.call));
    const observed = call.result === null ? null : String(call.result);
    const ok = observed === verify.expect;
    const reason = ok
      ? `${verify.call} returns "${observed}"${call.providedBy ? ` (from ${call.providedBy.name})` : ''}`
      : observed === null
        ? `${verify.call} gave no result to compare (${call.why ?? 'unknown'}); expected "${verify.expect}"`
        : `${verify.call} returns "${clip(observed)}", expected "${clip(verify.expect)}"`;
    rec.add(rec.key('health', fence, n), { type: 'HealthChecked', hostId: rec.hostId, outcome: ok ? 'healthy' : 'unhealthy', check: { call: verify.call, expect: verify.expect }, ...(observed !== null ? { observed } : {}), reason });
    return { ok, reason };
  }

  /**
   * The boot the host is in now; when it differs from `known`, the reboot (and the stack it lost)
   * is recorded before anything else is decided for the host.
   */
  private async noticeBoot(rec: HostRecorder, list: WireList, known: string | null): Promise<string | null> {
    const boot = list.boot?.id ?? null;
    if (boot === null || boot === known) return boot;
    // Facts from before the reboot go into the record before the reboot does.
    await rec.durable();
    await this.committer.drain();
    await this.db(() =>
      noticeBoots(this.deps.events, [{ hostId: rec.hostId, bootId: boot, bootedAt: list.boot!.at, hypervisorBuildId: list.hypervisor.buildId }], { actor: this.id.actor, correlation: this.id.correlation }),
    );
    return boot;
  }

  /** A database read or write that waits out a PostgreSQL outage (an infrastructure fault never fails a host). */
  private db<T>(fn: () => Promise<T>): Promise<T> {
    return waitForDatabase(fn, (since) => this.deps.logger.warn(`PostgreSQL unreachable since ${since.toISOString()}; the host waits`));
  }

  /**
   * fleetpatch's own check before an APPLY or REPLACE, against the live host as read (an upload
   * does not change what it compares), queued as a fact; the failure to raise when it does not match.
   */
  private checkBefore(rec: HostRecorder, step: ApplyStep, list: WireList, fence: number, attempt: number, n: number): StepFailed | null {
    const payload = ref(step.payload);
    const top = step.kind === 'apply' ? step.against : null;
    const found = top ? top.buildId : list.hypervisor.buildId;
    const outcome = step.payload.depends === found ? 'match' : 'mismatch';
    rec.add(rec.key(payload.buildId, 'check', n, fence, attempt), {
      type: 'DependencyChecked',
      hostId: rec.hostId,
      payload,
      phase: 'apply',
      on: 'depends',
      expected: step.payload.depends,
      found,
      against: top ? { kind: 'payload', name: top.name, buildId: top.buildId } : { kind: 'hypervisor' },
      outcome,
      ...(outcome === 'mismatch' ? { errno: 'EINVAL' } : {}),
      reason: `checked by fleetpatch before ${step.kind === 'apply' ? 'APPLY' : 'REPLACE'}: ${payload.name} depends on ${short(step.payload.depends)}, ${top ? `the top of the stack is ${top.name} (${short(found)})` : `the hypervisor is ${short(found)}`}`,
    });
    if (outcome === 'match') return null;
    return new StepFailed({
      stage: 'check',
      code: 'EINVAL',
      reason: `${payload.name} depends on build-id ${step.payload.depends}, but ${top ? `the top of the stack, ${top.name},` : 'the hypervisor'} is ${found}`,
      unreachable: false,
    });
  }

  /**
   * An APPLY or REPLACE whose answer was lost (the connection died, the agent restarted) may still
   * have been done by the hypervisor: when the host now lists the payload on top of its stack, the
   * step is recorded as patchStep records it (same key, the ordinal it took), or the records would
   * not replay to the host the loop then takes as patched.
   */
  private recordLanded(rec: HostRecorder, hostId: string, step: ReturnType<typeof nextPatchStep>, before: WireList, now: WireList): void {
    if (step.kind !== 'apply' && step.kind !== 'replace') return;
    const payload = ref(step.payload);
    const kind = step.kind === 'apply' ? 'applied' : 'replaced';
    const n = rec.peek(kind, payload.buildId) - 1;
    if (n < 0 || now.appliedStack.at(-1)?.buildId !== payload.buildId || before.appliedStack.some((p) => p.buildId === payload.buildId)) return;
    if (step.kind === 'replace' && now.appliedStack.length !== 1) return;
    rec.add(rec.key(payload.buildId, kind, n), step.kind === 'apply' ? { type: 'PayloadApplied', hostId, payload } : { type: 'PayloadReplaced', hostId, payload, replaced: before.appliedStack.map(ref) });
  }

  /** Takes one patch step; returns the host's state after it (updated in memory where the answer says it all). */
  private async patchStep(agent: HostAgent, rec: HostRecorder, fence: number, step: Exclude<ReturnType<typeof nextPatchStep>, { kind: 'applied' | 'changed' }>, list: WireList, attempt: number): Promise<WireList> {
    const hostId = agent.hostId;
    const ahead = rec.ahead;
    rec.ahead = null;
    if (step.kind === 'wait') {
      await this.wait(agent, step.payload.name);
      return agent.listAll();
    }
    const payload = ref(step.payload);
    switch (step.kind) {
      case 'upload': {
        const n = rec.next('uploaded', payload.buildId);
        // The check of the APPLY (or REPLACE) that follows goes into the same durable write as the
        // upload's intent: one commit before the upload instead of one before each call. A payload
        // that could not be applied after it is not uploaded at all.
        const then = step.then;
        const m = rec.peek(then.kind === 'apply' ? 'applied' : 'replaced', then.payload.buildId);
        const mismatch = this.checkBefore(rec, then, list, fence, attempt, m);
        if (!(await rec.durable([rec.intent(fence, `upload ${payload.buildId}, then ${then.kind} it`)]))) throw new FencedOut();
        if (mismatch) throw mismatch;
        const stored = await this.storedPayload(payload.buildId);
        let entry;
        try {
          entry = await agent.upload(payload.name, stored.bytes, { signature: stored.signature });
        } catch (e) {
          this.recordRefusal(rec, fence, 'upload', payload, e, n, attempt);
          throw e;
        }
        if (entry.dependencyCheck) this.recordHostCheck(rec, payload, entry.dependencyCheck, rec.key(payload.buildId, 'upload-check', n));
        rec.add(rec.key(payload.buildId, 'uploaded', n), { type: 'PayloadUploaded', hostId, payload });
        rec.ahead = { kind: then.kind, buildId: then.payload.buildId, against: then.kind === 'apply' ? (then.against?.buildId ?? null) : null, n: m };
        const { dependencyCheck: _check, ...wire } = entry;
        return { ...list, entries: [...list.entries, wire] };
      }
      case 'unload': {
        const n = rec.next('unloaded', payload.buildId);
        if (!(await rec.durable([rec.intent(fence, `unload ${payload.buildId}`)]))) throw new FencedOut();
        try {
          await agent.action(payload.name, 'unload');
        } catch (e) {
          this.recordRefusal(rec, fence, 'unload', payload, e, n, attempt);
          throw e;
        }
        rec.add(rec.key(payload.buildId, 'unloaded', n), { type: 'PayloadUnloaded', hostId, payload });
        return { ...list, entries: list.entries.filter((e) => e.buildId !== payload.buildId) };
      }
      case 'apply':
      case 'replace': {
        const kind = step.kind === 'apply' ? 'applied' : 'replaced';
        const n = rec.next(kind, payload.buildId);
        const against = step.kind === 'apply' ? (step.against?.buildId ?? null) : null;
        const checked = ahead !== null && ahead.kind === step.kind && ahead.buildId === payload.buildId && ahead.against === against && ahead.n === n;
        if (!checked) {
          // fleetpatch's own check against the live host, durable before the APPLY it guards.
          const mismatch = this.checkBefore(rec, step, list, fence, attempt, n);
          if (!(await rec.durable([rec.intent(fence, `${step.kind} ${payload.buildId}`)]))) throw new FencedOut();
          if (mismatch) throw mismatch;
        }
        const before = list.appliedStack.map(ref);
        try {
          await this.act(agent, rec, payload, step.kind, rec.key(payload.buildId, `${step.kind}-check`, n));
        } catch (e) {
          this.recordRefusal(rec, fence, step.kind, payload, e, n, attempt);
          throw e;
        }
        rec.add(rec.key(payload.buildId, kind, n), step.kind === 'apply' ? { type: 'PayloadApplied', hostId, payload } : { type: 'PayloadReplaced', hostId, payload, replaced: before });
        const entries = list.entries.map((e) =>
          e.buildId === payload.buildId ? { ...e, state: 'APPLIED' as const, rc: 0, reason: null } : step.kind === 'replace' && e.state === 'APPLIED' ? { ...e, state: 'CHECKED' as const, reverted: true } : e,
        );
        return { ...list, entries, appliedStack: step.kind === 'apply' ? [...list.appliedStack, payload] : [payload] };
      }
    }
  }

  /**
   * Records the host's outcome. A failure is durable before the lane goes on: the budget verdict
   * that follows counts it. Any other outcome goes with the next flush while the lane claims its
   * next host (nothing decided before then depends on it, and the batch drains before it reports);
   * a worker that dies first leaves the host claimed, and whoever takes it back reconciles it from
   * the live host and finishes it again.
   */
  private async finish(rec: HostRecorder, claim: ClaimedHost, job: PatchJob, result: HostPatchResult): Promise<FinishedHost> {
    rec.add(rec.finishedKey(), {
      type: 'HostPatchFinished',
      rolloutId: job.rolloutId,
      hostId: result.hostId,
      wave: job.waveName,
      outcome: result.outcome,
      applied: result.applied,
      ...(result.failure ? { failure: result.failure } : {}),
      ...(result.restore
        ? { restore: { outcome: result.restore.outcome, stackNow: result.restore.stackNow, formerStack: result.restore.formerStack, ...(result.restore.reason ? { reason: result.restore.reason } : {}) } }
        : {}),
    });
    const write = finishWrite(job.rolloutId, result.hostId, claim.fence, { status: result.outcome, applied: result.applied, failure: result.failure, restore: result.restore });
    if (result.outcome === 'failed') return settled((await rec.durable([write])) ? result : lost(result.hostId));
    const recorded = rec.flushLater([write]).then((counts) => (counts.every((n) => n > 0) ? result : lost(result.hostId)));
    return { outcome: result.outcome, recorded };
  }

  // ---- restoring -------------------------------------------------------------------------------

  /**
   * Restores a host for a rollback (the rollback's own claim and recording). The restore's last
   * facts are handed to the committer, not waited for: `recorded` settles when they are durable.
   */
  async restore(job: RestoreJob, lane: LaneHooks = {}): Promise<{ outcome: RestoreOutcome; recorded: Promise<unknown> }> {
    const rec = new HostRecorder(this.committer, this.id, { rolloutId: job.rolloutId, ...(job.rollbackId ? { rollback: job.rollbackId } : {}) }, job.hostId, lane);
    const agent = await this.agentFor(job.hostId);
    const outcome = await this.restoreHost(rec, agent, job, 0);
    return { outcome, recorded: rec.flushLater() };
  }

  /**
   * Back to the former stack: revert ours top first, reload what Xen will not re-apply, re-apply
   * bottom up, unload what is ours; then the verify function must return what it did before.
   * Transient host faults are retried a bounded number of times; a host that stays away ends the
   * restore as failed with the reason (the rollback reports it; a later one can try again).
   */
  private async restoreHost(rec: HostRecorder, agent: HostAgent, job: RestoreJob, fence: number): Promise<RestoreOutcome> {
    let { former } = job;
    const done: RestoreStepDone[] = [];
    let list: WireList;
    try {
      list = await this.list(agent, 'revert');
    } catch (e) {
      return { outcome: 'failed', steps: [], stackNow: [], formerStack: former.formerStack.map(ref), reason: `the host could not be read: ${failureOf('revert', e).reason}` };
    }
    let boot = await this.noticeBoot(rec, list, job.lastBootId === undefined ? (list.boot?.id ?? null) : job.lastBootId);
    // After a reboot the host runs nothing the rollout put on it, nor what it ran before: what is
    // left to undo is whatever of ours is on it now (a later run's).
    const lostWithReboot = (live: WireList): FormerState => {
      const firstOurs = live.appliedStack.findIndex((p) => job.ours.includes(p.buildId));
      return {
        formerStack: (firstOurs === -1 ? live.appliedStack : live.appliedStack.slice(0, firstOurs)).map(ref),
        formerLoaded: live.entries.filter((e) => !job.ours.includes(e.buildId)).map(ref),
        formerResult: null,
      };
    };
    let rebootNote: string | undefined;
    if (job.touchedBootId && boot && boot !== job.touchedBootId) {
      former = lostWithReboot(list);
      rebootNote = `the host rebooted since the rollout changed it (boot ${job.touchedBootId} then, ${boot} now): the stack it had then was lost with the rollout's own payloads`;
    }
    const goalFor = async (f: FormerState): Promise<RestoreGoal> => ({
      formerStack: f.formerStack,
      formerLoaded: f.formerLoaded,
      ours: new Set(job.ours),
      storedBytes: await this.db(() => selectStoredBuildIds(this.deps.pool, f.formerStack.map((p) => p.buildId))),
    });
    let goal = await goalFor(former);
    await this.reconcile(rec, list, new Set([...job.ours, ...former.formerStack.map((p) => p.buildId)]));
    /**
     * Whether the host rebooted since it was last read: then the reboot is recorded before anything
     * else, and the restore plans again from what the host runs now (a step that failed because
     * the reboot took its payload away did not fail the host).
     */
    const rebootedNow = async (live: WireList): Promise<boolean> => {
      const now = live.boot?.id ?? null;
      if (now === null || now === boot) return false;
      const was = boot;
      boot = await this.noticeBoot(rec, live, boot);
      former = lostWithReboot(live);
      goal = await goalFor(former);
      rebootNote = `the host rebooted during the restore (boot ${was ?? 'unknown'} then, ${now} now): what it ran before was lost with the rollout's own payloads`;
      return true;
    };

    let end: { outcome: RestoreOutcome['outcome']; reason?: string } | undefined;
    let attempt = 1;
    // Whether `list` is what the host last said (a LIST), or what its answers since imply.
    let read = true;
    for (let n = 0; !end; n++) {
      if (n >= MAX_STEPS) {
        end = { outcome: 'failed', reason: `the host did not reach its former stack after ${MAX_STEPS} steps; it runs ${describeStack(list.appliedStack)}` };
        break;
      }
      const step = nextRestoreStep(liveHostOf(list), goal);
      if ((step.kind === 'done' || step.kind === 'blocked') && !read) {
        // The restore ends on what the host itself reports, not on what its answers implied.
        try {
          list = await this.list(agent, 'revert');
          read = true;
          await rebootedNow(list);
          continue;
        } catch (e) {
          end = { outcome: 'failed', reason: `the host could not be read: ${failureOf('revert', e).reason}` };
          break;
        }
      }
      if (step.kind === 'done') {
        end = done.length === 0 ? { outcome: 'nothing-to-do', reason: rebootNote ?? 'the host already runs its former stack, and nothing of the rollout is loaded' } : { outcome: 'restored', ...(rebootNote ? { reason: rebootNote } : {}) };
        break;
      }
      if (step.kind === 'blocked') {
        end = { outcome: step.cause === 'name-taken' ? 'failed' : step.cause, reason: step.reason };
        break;
      }
      let after: WireList | null = null;
      let refused: string | undefined;
      try {
        after = await this.restoreStep(agent, rec, fence, step, list, attempt);
        if (step.kind !== 'wait') done.push({ kind: step.kind, payload: ref(step.payload) });
        attempt = 1;
      } catch (e) {
        if (transient(e) && attempt < HOST_ATTEMPTS) {
          await sleep(RETRY_DELAYS_MS[attempt - 1]!);
          attempt++;
        } else {
          refused = `${step.kind} ${step.payload.name} did not succeed: ${e instanceof Error ? e.message : String(e)}`;
        }
      }
      this.heartbeat();
      if (after) {
        // The answer said it all (a REVERT done, an UNLOAD): the next step needs no LIST first.
        list = after;
        read = false;
        continue;
      }
      try {
        list = await this.list(agent, 'revert');
        read = true;
      } catch (e) {
        end = { outcome: 'failed', reason: refused ?? `the host could not be read: ${failureOf('revert', e).reason}` };
        break;
      }
      // Before a refusal is taken for what it seems: did the host reboot (its payloads gone)?
      if (await rebootedNow(list)) {
        attempt = 1;
        continue;
      }
      if (refused) end = { outcome: 'failed', reason: refused };
    }

    if (end.outcome !== 'restored' && end.outcome !== 'nothing-to-do') {
      // Not back: at least leave nothing of ours loaded and idle on it.
      for (const loose of looseOurs(liveHostOf(list), goal)) {
        try {
          await this.restoreStep(agent, rec, fence, { kind: 'unload', payload: loose, why: 'cleanup' }, list, 1);
          done.push({ kind: 'unload', payload: loose });
        } catch {
          // The outcome already says the host is not back; the stack it reports says the rest.
        }
      }
      list = await agent.listAll().catch(() => list);
    } else if (job.verifyCall && former.formerResult) {
      const now = callOutcome(await agent.call(job.verifyCall));
      const ok = sameResult(now, former.formerResult);
      const reason = ok
        ? `${job.verifyCall} returns ${describeResult(now)} again, as before the rollout`
        : `${job.verifyCall} returns ${describeResult(now)}; before the rollout it returned ${describeResult(former.formerResult)}`;
      rec.add(rec.key('restore-health', rec.next('restore-health', 'host')), {
        type: 'HealthChecked',
        hostId: rec.hostId,
        outcome: ok ? 'healthy' : 'unhealthy',
        check: { call: job.verifyCall, expect: former.formerResult.value ?? '' },
        ...(now.value !== null ? { observed: now.value } : {}),
        reason,
      });
      if (!ok) end = { outcome: 'failed', reason };
    }
    // The restore's last facts go with the caller's next durable write (the host's outcome).
    return { outcome: end.outcome, steps: done, stackNow: list.appliedStack.map(ref), formerStack: former.formerStack.map(ref), ...(end.reason ? { reason: end.reason } : {}) };
  }

  /**
   * Takes one restore step. Returns the host's state after it when the answer says it all (a
   * REVERT that ended CHECKED with rc 0 pops the top; an UNLOAD removes the entry), else null: the
   * host is read again.
   */
  private async restoreStep(agent: HostAgent, rec: HostRecorder, fence: number, step: Exclude<ReturnType<typeof nextRestoreStep>, { kind: 'done' | 'blocked' }>, list: WireList, attempt: number): Promise<WireList | null> {
    const hostId = agent.hostId;
    if (step.kind === 'wait') {
      await this.wait(agent, step.payload.name);
      return null;
    }
    const payload = ref(step.payload);
    const kind = { revert: 'reverted', unload: 'unloaded', upload: 'uploaded', apply: 'applied' }[step.kind];
    const n = rec.next(kind, payload.buildId);
    const key = (what: string) => rec.key(payload.buildId, what, n);
    // Intent first: a restore that dies here is reconciled from it by the next one.
    if (step.kind === 'apply') {
      const top = list.appliedStack[list.appliedStack.length - 1];
      const found = top ? top.buildId : list.hypervisor.buildId;
      const outcome = step.depends === found ? 'match' : 'mismatch';
      rec.add(rec.key(payload.buildId, 'restore-check', n, attempt), {
        type: 'DependencyChecked',
        hostId,
        payload,
        phase: 'apply',
        on: 'depends',
        expected: step.depends,
        found,
        against: top ? { kind: 'payload', name: top.name, buildId: top.buildId } : { kind: 'hypervisor' },
        outcome,
        ...(outcome === 'mismatch' ? { errno: 'EINVAL' } : {}),
        reason: `checked by fleetpatch before re-applying ${payload.name} to restore the former stack: it depends on ${short(step.depends)}, ${top ? `the top of the stack is ${top.name} (${short(found)})` : `the hypervisor is ${short(found)}`}`,
      });
      await rec.durable(fence > 0 ? [rec.intent(fence, `restore-apply ${payload.buildId}`)] : []);
      if (outcome === 'mismatch') throw new XenError('EINVAL', `${hostId}: ${payload.name} depends on build-id ${short(step.depends)}, but ${top ? `the top of the stack is ${top.name}` : 'the hypervisor is'} ${short(found)}`, { hostId });
    } else {
      await rec.durable(fence > 0 ? [rec.intent(fence, `restore-${step.kind} ${payload.buildId}`)] : []);
    }
    try {
      switch (step.kind) {
        case 'revert': {
          await this.act(agent, rec, payload, 'revert', key('revert-check'));
          rec.add(key('reverted'), { type: 'PayloadReverted', hostId, payload });
          // Only the top can be reverted, and act() saw it end CHECKED with rc 0.
          const top = list.appliedStack.at(-1);
          if (top?.buildId !== payload.buildId) return null;
          const entries = list.entries.map((e) => (e.buildId === payload.buildId ? { ...e, state: 'CHECKED' as const, rc: 0, reason: null, reverted: true } : e));
          return { ...list, entries, appliedStack: list.appliedStack.slice(0, -1) };
        }
        case 'unload':
          await agent.action(payload.name, 'unload');
          rec.add(key('unloaded'), { type: 'PayloadUnloaded', hostId, payload });
          return { ...list, entries: list.entries.filter((e) => e.buildId !== payload.buildId) };
        case 'upload': {
          const stored = await this.storedPayload(payload.buildId);
          const r = await agent.upload(payload.name, stored.bytes, { signature: stored.signature });
          if (r.dependencyCheck) this.recordHostCheck(rec, payload, r.dependencyCheck, key('upload-check'));
          rec.add(key('uploaded'), { type: 'PayloadUploaded', hostId, payload });
          return null;
        }
        case 'apply':
          await this.act(agent, rec, payload, 'apply', key('apply-check'));
          rec.add(key('applied'), { type: 'PayloadApplied', hostId, payload });
          return null;
      }
    } catch (e) {
      this.recordRefusal(rec, fence, step.kind, payload, e, n, attempt);
      throw e;
    }
  }
}

/** A fenced write missed: another batch holds the host now and finishes it. */
class FencedOut extends Error {
  constructor() {
    super('another batch holds this host now');
  }
}

/** A host the lane is done with; `recorded` settles once its outcome is durable (or its claim was lost). */
export interface FinishedHost {
  outcome: HostPatchResult['outcome'];
  recorded: Promise<HostPatchResult>;
}

const settled = (result: HostPatchResult): FinishedHost => ({ outcome: result.outcome, recorded: Promise.resolve(result) });

function lost(hostId: string): HostPatchResult {
  return { hostId, outcome: 'failed', applied: [], failure: { stage: 'read', code: 'CLAIM_LOST', reason: 'another batch took this host over; it finishes it', unreachable: false }, lostClaim: true };
}

/** Text a host returned, cut to a length the record keeps. */
function clip(s: string, max = 300): string {
  return s.length > max ? `${s.slice(0, max)}… (${s.length} characters)` : s;
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
