/**
 * Activities for one host's steps. Each is idempotent under retries and after a worker crash: it
 * first looks at the live host, treats work already done as done, and records a fact only when
 * the record lacks it. Asynchronous actions are polled until rc leaves -EAGAIN, heartbeating.
 */
import { XenError } from '../src/errors.ts';
import { hostStateFromList } from '../src/hypervisor/live-state.ts';
import { short, type DependencyCheck, type HostState, type PayloadMeta, type StackEntry } from '../src/rollout/matching.ts';
import type { VerifySpec } from '../src/rollout/types.ts';
import type { ActivityDeps } from './deps.ts';
import { EAGAIN, hostSteps, payloadRef } from './host-steps.ts';
import { activityIdentity, recordedHostState, recordFromActivity } from './recording.ts';

export interface HostInput {
  hostId: string;
  rolloutId?: string;
}

export function hostActivities(deps: ActivityDeps) {
  const { events } = deps;
  const { agentFor, payloadBytes, recordHostCheck, recordLostHostCheck, recordFailure, runAction } = hostSteps(deps);

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
  };
}
