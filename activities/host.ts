/**
 * Activities for one host's steps. Each is idempotent under retries and after a worker crash: it
 * first looks at the live host, treats work already done as done, and records a fact only when
 * the record lacks it. Asynchronous actions are polled until rc leaves -EAGAIN, heartbeating.
 */
import { Context } from '@temporalio/activity';
import { errnoName, FleetpatchError, XenError, XEN_ERRNO } from '../src/errors.ts';
import type { DependencyCheck as HostDependencyCheck } from '../src/hypervisor/state-machine.ts';
import type { HostAgent } from '../src/hypervisor/agent-client.ts';
import type { WireList, WireStatus } from '../src/hypervisor/wire.ts';
import { hostStateFromList } from '../src/hypervisor/live-state.ts';
import { short, type DependencyCheck, type HostState, type PayloadMeta, type StackEntry } from '../src/rollout/matching.ts';
import type { VerifySpec } from '../src/rollout/types.ts';
import type { ActivityDeps } from './deps.ts';
import { activityIdentity, recordedHostState, recordFromActivity, type ActivityIdentity } from './recording.ts';

const EAGAIN = -XEN_ERRNO.EAGAIN;

export interface HostInput {
  hostId: string;
  rolloutId?: string;
}

export function hostActivities(deps: ActivityDeps) {
  const { events } = deps;
  const bytesCache = new Map<string, Buffer>();

  async function agentFor(hostId: string): Promise<HostAgent> {
    const fleet = await deps.fleet();
    return fleet.host(hostId);
  }

  async function payloadBytes(buildId: string): Promise<Buffer> {
    let bytes = bytesCache.get(buildId);
    if (!bytes) {
      bytes = (await deps.payloads.get(buildId)).bytes;
      if (bytesCache.size >= 64) bytesCache.delete(bytesCache.keys().next().value!);
      bytesCache.set(buildId, bytes);
    }
    return bytes;
  }

  /** Records the check a hypervisor reports making (at upload or APPLY/REPLACE). */
  async function recordHostCheck(id: ActivityIdentity, hostId: string, payload: StackEntry, check: HostDependencyCheck, step: string, errno?: string, reason?: string) {
    await recordFromActivity(events, id, step, {
      type: 'DependencyChecked',
      hostId,
      payload,
      phase: check.operation === 'upload' ? 'upload' : 'apply',
      on: check.kind,
      expected: check.expected,
      found: check.found,
      against: check.against === 'hypervisor' ? { kind: 'hypervisor' } : { kind: 'payload', name: check.againstName ?? '?', buildId: check.found },
      outcome: check.outcome === 'mismatch' ? 'mismatch' : 'match',
      ...(errno ? { errno: errno as never } : {}),
      reason: reason ?? `checked by the hypervisor at ${check.operation.toUpperCase()}${check.outcome === 'skipped' ? ' (APPLY_NODEPS: not enforced)' : ''}`,
    });
  }

  /**
   * The dependency check the hypervisor made for an action an EARLIER attempt of this activity
   * started, when that attempt died before recording the host's report: the live stack says what
   * it was compared with (the entry below the payload, or the hypervisor), and it passed, or the
   * payload would not be loaded or applied. Recorded under the same event id the lost attempt
   * would have used, so it is never recorded twice.
   */
  async function recordLostHostCheck(id: ActivityIdentity, hostId: string, payload: PayloadMeta, list: WireList, operation: 'upload' | 'apply' | 'replace') {
    const ref = payloadRef(payload);
    let check: HostDependencyCheck;
    if (operation === 'upload') {
      check = { payload: payload.name, payloadBuildId: payload.buildId, kind: 'xen_depends', operation, against: 'hypervisor', againstName: null, expected: payload.xenDepends ?? '', found: list.hypervisor.buildId, outcome: 'satisfied' };
    } else if (operation === 'replace') {
      check = { payload: payload.name, payloadBuildId: payload.buildId, kind: 'depends', operation, against: 'hypervisor', againstName: null, expected: payload.depends, found: list.hypervisor.buildId, outcome: 'satisfied' };
    } else {
      const at = list.appliedStack.findIndex((e) => e.buildId === payload.buildId);
      const below = at === -1 ? list.appliedStack[list.appliedStack.length - 1] : list.appliedStack[at - 1];
      check = {
        payload: payload.name,
        payloadBuildId: payload.buildId,
        kind: 'depends',
        operation,
        against: below ? 'payload' : 'hypervisor',
        againstName: below?.name ?? null,
        expected: payload.depends,
        found: below?.buildId ?? list.hypervisor.buildId,
        outcome: 'satisfied',
      };
    }
    await recordHostCheck(id, hostId, ref, check, `${operation}:check`, undefined, `checked by the hypervisor at ${operation.toUpperCase()}; the worker that sent it died before recording the report, so it is restated from the live stack`);
  }

  async function recordFailure(id: ActivityIdentity, hostId: string, action: 'upload' | 'apply' | 'revert' | 'replace' | 'unload', payload: StackEntry, e: unknown, step: string) {
    if (!(e instanceof FleetpatchError)) return;
    await recordFromActivity(events, id, step, {
      type: 'PayloadActionFailed',
      hostId,
      action,
      payload,
      code: e.code,
      ...(e instanceof XenError ? { errno: e.errnoName } : {}),
      reason: e.message,
    });
    const check = e.details.dependencyCheck as HostDependencyCheck | undefined;
    if (check) await recordHostCheck(id, hostId, payload, check, `${step}:check`, e instanceof XenError ? e.errnoName : undefined, e.message);
  }

  /** Polls an asynchronous action to its end, heartbeating; a still-pending action from an earlier attempt is simply waited for. */
  async function waitForAction(agent: HostAgent, name: string): Promise<WireStatus> {
    const ctx = Context.current();
    return agent.waitForAction(name, {
      pollMs: deps.actionPollMs ?? 20,
      deadlineMs: deps.actionDeadlineMs ?? 120_000,
      onPoll: (status, attempt) => ctx.heartbeat({ name, rc: status.rc, attempt }),
      signal: ctx.cancellationSignal,
    });
  }

  function actionError(hostId: string, name: string, verb: string, status: WireStatus): XenError {
    const errno = errnoName(status.rc) ?? 'EINVAL';
    return new XenError(errno, `${hostId}: ${verb} ${name} failed: ${status.reason ?? `rc ${status.rc}`}`, { hostId, payload: name, rc: status.rc });
  }

  const payloadRef = (p: StackEntry): StackEntry => ({ name: p.name, buildId: p.buildId });

  const VERB = { apply: 'applying', replace: 'replacing all live patches with', revert: 'reverting' } as const;

  /**
   * One asynchronous action to its end: schedule it (unless an earlier attempt already did and it
   * is still pending), record the dependency check the hypervisor reports, wait while heartbeating,
   * and turn a final rc other than 0, or an unexpected state, into a recorded, typed failure.
   * `step` prefixes the events' steps so each action of one activity keeps its own event ids.
   */
  async function runAction(
    id: ActivityIdentity,
    agent: HostAgent,
    payload: StackEntry,
    cmd: 'apply' | 'replace' | 'revert',
    opts: { pending: boolean; nodeps?: boolean; step: string },
  ): Promise<void> {
    const hostId = agent.hostId;
    if (!opts.pending) {
      try {
        const r = await agent.action(payload.name, cmd, opts.nodeps ? { nodeps: true } : {});
        if (r.dependencyCheck) await recordHostCheck(id, hostId, payload, r.dependencyCheck, `${opts.step}:check`);
      } catch (e) {
        await recordFailure(id, hostId, cmd, payload, e, `${opts.step}:refused`);
        throw e;
      }
    }
    const status = await waitForAction(agent, payload.name);
    const want = cmd === 'revert' ? 'CHECKED' : 'APPLIED';
    if (!(status.state === want && status.rc === 0)) {
      const err = actionError(hostId, payload.name, VERB[cmd], status);
      await recordFailure(id, hostId, cmd, payload, err, `${opts.step}:failed`);
      throw err;
    }
  }

  return {
    /** The host's live state: its hypervisor, what is loaded, the applied stack. */
    async readHost(input: HostInput): Promise<HostState> {
      const agent = await agentFor(input.hostId);
      return hostStateFromList(input.hostId, await agent.listAll());
    },

    /**
     * UPLOAD. A payload already loaded under that name with the same build-id counts as uploaded
     * (the earlier attempt did it); under that name with another build-id it is EEXIST.
     */
    async uploadPayload(input: HostInput & { payload: PayloadMeta }): Promise<{ uploaded: boolean }> {
      const { hostId, payload } = input;
      const id = activityIdentity(input.rolloutId);
      const agent = await agentFor(hostId);
      const list = await agent.listAll();
      const existing = list.entries.find((e) => e.name === payload.name);
      if (existing) {
        if (existing.buildId !== payload.buildId) {
          throw new XenError('EEXIST', `${hostId}: a different payload is already loaded as ${payload.name} (build-id ${short(existing.buildId)}, not ${short(payload.buildId)})`, { hostId });
        }
        const recorded = await recordedHostState(events, hostId);
        if (!recorded.loaded.some((l) => l.buildId === payload.buildId)) {
          // Ours: an earlier attempt uploaded it and died before recording.
          await recordLostHostCheck(id, hostId, payload, list, 'upload');
          await recordFromActivity(events, id, 'uploaded', { type: 'PayloadUploaded', hostId, payload: payloadRef(payload) });
        }
        return { uploaded: false };
      }
      try {
        const r = await agent.upload(payload.name, await payloadBytes(payload.buildId));
        if (r.dependencyCheck) await recordHostCheck(id, hostId, payloadRef(payload), r.dependencyCheck, 'upload:check');
      } catch (e) {
        await recordFailure(id, hostId, 'upload', payloadRef(payload), e, 'upload:failed');
        throw e;
      }
      await recordFromActivity(events, id, 'uploaded', { type: 'PayloadUploaded', hostId, payload: payloadRef(payload) });
      return { uploaded: true };
    },

    /**
     * fleetpatch's own dependency check against the live host, just before APPLY (or REPLACE,
     * against the hypervisor), recorded with what was expected and what was found.
     */
    async checkDependency(input: HostInput & { payload: PayloadMeta; against: 'top' | 'hypervisor' }): Promise<DependencyCheck> {
      const { hostId, payload } = input;
      const id = activityIdentity(input.rolloutId);
      const list = await (await agentFor(hostId)).listAll();
      const top = list.appliedStack[list.appliedStack.length - 1];
      const againstTop = input.against === 'top' && top !== undefined;
      const found = againstTop ? top.buildId : list.hypervisor.buildId;
      const check: DependencyCheck = {
        payload: payloadRef(payload),
        expected: payload.depends,
        found,
        against: againstTop ? { kind: 'payload', name: top.name, buildId: top.buildId } : { kind: 'hypervisor' },
        on: 'depends',
        outcome: payload.depends === found ? 'match' : 'mismatch',
      };
      const what = againstTop ? `the top of the stack is ${top.name} (${short(found)})` : `the hypervisor is ${short(found)}`;
      await recordFromActivity(events, id, 'checked', {
        type: 'DependencyChecked',
        hostId,
        payload: check.payload,
        phase: 'apply',
        on: 'depends',
        expected: check.expected,
        found: check.found,
        against: check.against,
        outcome: check.outcome,
        ...(check.outcome === 'mismatch' ? { errno: 'EINVAL' as const } : {}),
        reason: `checked by fleetpatch before ${input.against === 'hypervisor' ? 'REPLACE' : 'APPLY'}: ${payload.name} depends on ${short(payload.depends)}, ${what}`,
      });
      return check;
    },

    /** APPLY and wait for it. Already APPLIED (an earlier attempt) counts as done. */
    async applyPayload(input: HostInput & { payload: PayloadMeta; nodeps?: boolean }): Promise<{ alreadyApplied: boolean }> {
      const { hostId, payload } = input;
      const id = activityIdentity(input.rolloutId);
      const agent = await agentFor(hostId);
      const ref = payloadRef(payload);
      const status = await agent.get(payload.name);
      const alreadyApplied = status.state === 'APPLIED' && status.rc === 0;
      const actedNow = !alreadyApplied && status.rc !== EAGAIN;
      if (!alreadyApplied) await runAction(id, agent, ref, 'apply', { pending: !actedNow, step: 'apply', ...(input.nodeps ? { nodeps: true } : {}) });
      // Applied by this activity (this attempt or, pending, an earlier one): record it; the event id
      // makes that idempotent. Found applied already: ours only if the record lacks it (an earlier
      // attempt crashed before recording); otherwise it is someone else's fact, not ours to record.
      const ours = !alreadyApplied || !(await recordedHostState(events, hostId)).applied.some((a) => a.buildId === payload.buildId);
      if (ours) {
        if (!actedNow) await recordLostHostCheck(id, hostId, payload, await agent.listAll(), 'apply');
        await recordFromActivity(events, id, 'applied', { type: 'PayloadApplied', hostId, payload: ref, ...(input.nodeps ? { nodeps: true } : {}) });
      }
      return { alreadyApplied };
    },

    /** REPLACE: the whole stack for this one payload. Returns the stack it replaced, bottom first. */
    async replacePayload(input: HostInput & { payload: PayloadMeta }): Promise<{ replaced: StackEntry[] }> {
      const { hostId, payload } = input;
      const id = activityIdentity(input.rolloutId);
      const agent = await agentFor(hostId);
      const ref = payloadRef(payload);
      const before = await agent.listAll();
      const done = before.appliedStack.length === 1 && before.appliedStack[0]!.buildId === payload.buildId;
      // What REPLACE swaps out: the live stack now, or, when an earlier attempt already replaced
      // it, the stack the event store last saw.
      const recorded = done ? await recordedHostState(events, hostId) : undefined;
      const replaced = recorded ? recorded.applied.filter((a) => a.buildId !== payload.buildId) : before.appliedStack.map(payloadRef);
      const pendingBefore = before.entries.find((e) => e.name === payload.name)?.rc === EAGAIN;
      if (!done) await runAction(id, agent, ref, 'replace', { pending: pendingBefore, step: 'replace' });
      if (!recorded || !(recorded.applied.length === 1 && recorded.applied[0]!.buildId === payload.buildId)) {
        if (done || pendingBefore) await recordLostHostCheck(id, hostId, payload, before, 'replace');
        await recordFromActivity(events, id, 'replaced', { type: 'PayloadReplaced', hostId, payload: ref, replaced });
      }
      return { replaced };
    },

    /**
     * REVERT, only when the payload is the top of the live stack. A payload no longer applied
     * counts as reverted; one with something else above it is reported, never forced.
     */
    async revertPayload(input: HostInput & { payload: StackEntry }): Promise<{ outcome: 'reverted' | 'not-applied' | 'not-top'; reason?: string }> {
      const { hostId, payload } = input;
      const id = activityIdentity(input.rolloutId);
      const agent = await agentFor(hostId);
      const ref = payloadRef(payload);
      const list = await agent.listAll();
      const entry = list.entries.find((e) => e.name === payload.name);
      const onStack = list.appliedStack.some((a) => a.buildId === payload.buildId);
      const recorded = await recordedHostState(events, hostId);
      if (!onStack && entry?.rc !== EAGAIN) {
        if (recorded.applied.some((a) => a.buildId === payload.buildId) && entry) {
          // An earlier attempt reverted it and crashed before recording.
          await recordFromActivity(events, id, 'reverted', { type: 'PayloadReverted', hostId, payload: ref });
          return { outcome: 'reverted' };
        }
        return { outcome: 'not-applied' };
      }
      const top = list.appliedStack[list.appliedStack.length - 1];
      if (onStack && top && top.buildId !== payload.buildId) {
        return { outcome: 'not-top', reason: `${hostId}: ${top.name} (${short(top.buildId)}) is above ${payload.name} on the stack; Xen reverts only the top` };
      }
      await runAction(id, agent, ref, 'revert', { pending: entry?.rc === EAGAIN, step: 'revert' });
      await recordFromActivity(events, id, 'reverted', { type: 'PayloadReverted', hostId, payload: ref });
      return { outcome: 'reverted' };
    },

    /**
     * UNLOAD a payload that is loaded and not applied, so reverted payloads do not linger on the
     * host (Xen keeps them loaded until someone unloads them by hand). Not loaded: nothing to do.
     * Still applied: refused (EINVAL), as Xen does.
     */
    async unloadPayload(input: HostInput & { payload: StackEntry }): Promise<{ unloaded: boolean }> {
      const { hostId, payload } = input;
      const id = activityIdentity(input.rolloutId);
      const agent = await agentFor(hostId);
      const ref = payloadRef(payload);
      const entry = (await agent.listAll()).entries.find((e) => e.name === payload.name && e.buildId === payload.buildId);
      if (!entry) {
        // Gone already: ours if the record still shows it loaded (an earlier attempt unloaded it).
        if ((await recordedHostState(events, hostId)).loaded.some((l) => l.buildId === payload.buildId)) {
          await recordFromActivity(events, id, 'unloaded', { type: 'PayloadUnloaded', hostId, payload: ref });
        }
        return { unloaded: false };
      }
      try {
        await agent.action(payload.name, 'unload');
      } catch (e) {
        await recordFailure(id, hostId, 'unload', ref, e, 'unload:refused');
        throw e;
      }
      await recordFromActivity(events, id, 'unloaded', { type: 'PayloadUnloaded', hostId, payload: ref });
      return { unloaded: true };
    },

    /**
     * After a REPLACE is undone: apply the former stack again, bottom first, where Xen allows it.
     * A payload with writable data that was reverted cannot be re-applied (Xen: "can't revert as
     * payload has .data"); it and everything above it are reported, not attempted.
     */
    async reapplyStack(input: HostInput & { stack: StackEntry[] }): Promise<{ reapplied: StackEntry[]; notReapplied: { name: string; reason: string }[] }> {
      const { hostId } = input;
      const id = activityIdentity(input.rolloutId);
      const agent = await agentFor(hostId);
      const reapplied: StackEntry[] = [];
      const notReapplied: { name: string; reason: string }[] = [];
      const list = await agent.listAll();
      for (const [i, p] of input.stack.entries()) {
        if (notReapplied.length > 0) {
          notReapplied.push({ name: p.name, reason: `it sits on ${notReapplied[0]!.name}, which could not be re-applied` });
          continue;
        }
        const entry = list.entries.find((e) => e.name === p.name && e.buildId === p.buildId);
        if (!entry) {
          notReapplied.push({ name: p.name, reason: 'it is no longer loaded on the host' });
          continue;
        }
        if (entry.state === 'APPLIED') {
          reapplied.push(payloadRef(p));
          continue;
        }
        if (!entry.safeToReapply && entry.reverted) {
          notReapplied.push({ name: p.name, reason: 'it has writable data (.data/.bss) and was reverted; Xen refuses to apply it again' });
          continue;
        }
        try {
          await runAction(id, agent, payloadRef(p), 'apply', { pending: entry.rc === EAGAIN, step: `reapply:${i}` });
        } catch (e) {
          notReapplied.push({ name: p.name, reason: e instanceof Error ? e.message : String(e) });
          continue;
        }
        await recordFromActivity(events, id, `reapplied:${i}`, { type: 'PayloadApplied', hostId, payload: payloadRef(p) });
        reapplied.push(payloadRef(p));
      }
      return { reapplied, notReapplied };
    },

    /**
     * Calls the function the plan names and compares with what it must return. Missing or
     * inconclusive data fails: a host that cannot prove it is patched is not counted healthy.
     */
    async verifyHost(input: HostInput & { verify: VerifySpec }): Promise<{ ok: boolean; observed: string | null; reason: string }> {
      const { hostId, verify } = input;
      const id = activityIdentity(input.rolloutId);
      const call = await (await agentFor(hostId)).call(verify.call);
      const observed = call.result === null ? null : String(call.result);
      const ok = observed === verify.expect;
      const reason = ok
        ? `${verify.call} returns "${observed}"${call.providedBy ? ` (from ${call.providedBy.name})` : ''}`
        : observed === null
          ? `${verify.call} gave no result to compare (${call.why ?? 'unknown'}); expected "${verify.expect}"`
          : `${verify.call} returns "${observed}", expected "${verify.expect}"`;
      await recordFromActivity(events, id, 'health', {
        type: 'HealthChecked',
        hostId,
        outcome: ok ? 'healthy' : 'unhealthy',
        check: { call: verify.call, expect: verify.expect },
        ...(observed !== null ? { observed } : {}),
        reason,
      });
      return { ok, observed, reason };
    },

    /** After a rollback: the reverted payloads are off the stack and no longer provide the function. */
    async verifyReverted(input: HostInput & { reverted: StackEntry[]; verify?: VerifySpec }): Promise<{ ok: boolean; reason: string }> {
      const { hostId } = input;
      const id = activityIdentity(input.rolloutId);
      const agent = await agentFor(hostId);
      const list = await agent.listAll();
      const still = input.reverted.filter((r) => list.appliedStack.some((a) => a.buildId === r.buildId));
      let observed: string | null = null;
      let providedByOurs = false;
      if (input.verify) {
        const call = await agent.call(input.verify.call);
        observed = call.result === null ? null : String(call.result);
        providedByOurs = call.providedBy !== null && input.reverted.some((r) => r.buildId === call.providedBy!.buildId);
      }
      const ok = still.length === 0 && !providedByOurs;
      const reason = ok
        ? `reverted ${input.reverted.map((r) => r.name).join(', ') || 'nothing'}${input.verify ? `; ${input.verify.call} now returns ${observed === null ? 'no known value' : `"${observed}"`}` : ''}`
        : still.length > 0
          ? `still applied after the rollback: ${still.map((s) => s.name).join(', ')}`
          : `${input.verify!.call} is still provided by a reverted payload`;
      await recordFromActivity(events, id, 'health', {
        type: 'HealthChecked',
        hostId,
        outcome: ok ? 'healthy' : 'unhealthy',
        ...(input.verify ? { check: { call: input.verify.call, expect: `not ${input.verify.expect} from a reverted payload` } } : {}),
        ...(observed !== null ? { observed } : {}),
        reason,
      });
      return { ok, reason };
    },
  };
}
