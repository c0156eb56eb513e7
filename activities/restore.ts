/**
 * Bringing a host back to the stack it had before a rollout touched it.
 *
 * `beginHostPatch` keeps the host's former state (stack, loaded payloads, what the plan's verify
 * function returned) just before the rollout's first change on it. `restoreHost` then loops:
 * read the live host, ask the pure planner (src/rollout/restore.ts) for the next step, take it and
 * record it, until the host is back or the planner says why it cannot be. Both the per-host
 * failure path and the rollback use it, so "restore" means one thing everywhere.
 *
 * Every decision starts from what the hypervisor reports, never from our records: a retried
 * attempt (worker crash, host timeout) simply carries on from where the host is. Before deciding
 * anything the host's recorded stream is compared with the live host, and what an earlier attempt
 * did but could not record is restated (DriftDetected), so every change has its event.
 */
import { Context } from '@temporalio/activity';
import { FleetpatchError, XenError } from '../src/errors.ts';
import { replayHost } from '../src/events/audit/replay.ts';
import { selectStoredBuildIds } from '../src/events/sql/payloads.ts';
import { countTouchedHosts, markTouched, selectTouchedHosts } from '../src/events/sql/rollout-targets.ts';
import type { HostAgent } from '../src/hypervisor/agent-client.ts';
import type { WireCall, WireList } from '../src/hypervisor/wire.ts';
import { short, type HostState } from '../src/rollout/matching.ts';
import { describeStack, looseOurs, nextRestoreStep, type LiveHost, type RestoreGoal, type RestoreStep } from '../src/rollout/restore.ts';
import type { CallOutcome, FormerState, RestoreHostInput, RestoreOutcome, RestoreStepDone } from '../src/rollout/types.ts';
import type { ActivityDeps } from './deps.ts';
import { hostSteps, payloadRef } from './host-steps.ts';
import { activityIdentity, envelope, recordFromActivity, recordWithKeys, type ActivityIdentity } from './recording.ts';

/** More steps than any stack needs (a few per payload): beyond it, the host is not converging. */
const MAX_STEPS = 200;

export function liveHostOf(list: WireList): LiveHost {
  return {
    hypervisorBuildId: list.hypervisor.buildId,
    applied: list.appliedStack.map(payloadRef),
    loaded: list.entries.map((e) => ({ name: e.name, buildId: e.buildId, state: e.state, rc: e.rc, reverted: e.reverted, safeToReapply: e.safeToReapply, depends: e.depends })),
  };
}

export function callOutcome(call: WireCall): CallOutcome {
  return { kind: call.kind, value: call.result === null ? null : String(call.result), ...(call.why ? { why: call.why } : {}) };
}

const sameResult = (a: CallOutcome, b: CallOutcome): boolean => a.kind === b.kind && a.value === b.value;
const describeResult = (r: CallOutcome): string => (r.value === null ? `no known value (${r.why ?? 'undecidable'})` : `"${r.value}"`);

export function restoreActivities(deps: ActivityDeps) {
  const { events, pool } = deps;
  const steps = hostSteps(deps);

  /**
   * The record must hold every change the host went through before anything is decided: an
   * earlier attempt may have acted and died before recording. What the events miss is restated
   * from the live host (DriftDetected, which the host-stack projection adopts).
   */
  async function reconcile(id: ActivityIdentity, hostId: string, list: WireList): Promise<void> {
    const live = liveHostOf(list);
    await replayHost(
      events,
      hostId,
      async () => ({ hypervisorBuildId: live.hypervisorBuildId, appliedStack: live.applied, loaded: live.loaded.map((p) => ({ name: p.name, buildId: p.buildId, state: p.state })) }),
      { actor: id.actor, correlation: id.correlation },
    );
  }

  /** Takes one step on the host and records it. Refusals surface as XenError/FleetpatchError. */
  async function take(id: ActivityIdentity, agent: HostAgent, step: Exclude<RestoreStep, { kind: 'done' | 'blocked' }>, list: WireList, key: string): Promise<void> {
    const hostId = agent.hostId;
    const payload = payloadRef(step.payload);
    switch (step.kind) {
      case 'wait':
        await steps.waitForAction(agent, payload.name);
        return;
      case 'revert':
        await steps.runAction(id, agent, payload, 'revert', { pending: false, step: key });
        await recordFromActivity(events, id, `${key}:done`, { type: 'PayloadReverted', hostId, payload });
        return;
      case 'unload':
        try {
          await agent.action(payload.name, 'unload');
        } catch (e) {
          await steps.recordFailure(id, hostId, 'unload', payload, e, `${key}:refused`);
          throw e;
        }
        await recordFromActivity(events, id, `${key}:done`, { type: 'PayloadUnloaded', hostId, payload });
        return;
      case 'upload': {
        const bytes = await steps.payloadBytes(payload.buildId);
        try {
          const r = await agent.upload(payload.name, bytes);
          if (r.dependencyCheck) await steps.recordHostCheck(id, hostId, payload, r.dependencyCheck, `${key}:check`);
        } catch (e) {
          await steps.recordFailure(id, hostId, 'upload', payload, e, `${key}:failed`);
          throw e;
        }
        await recordFromActivity(events, id, `${key}:done`, { type: 'PayloadUploaded', hostId, payload });
        return;
      }
      case 'apply': {
        // fleetpatch's own check, durable before the APPLY it guards.
        const top = list.appliedStack[list.appliedStack.length - 1];
        const found = top ? top.buildId : list.hypervisor.buildId;
        const outcome = step.depends === found ? 'match' : 'mismatch';
        await recordFromActivity(events, id, `${key}:ours`, {
          type: 'DependencyChecked',
          hostId,
          payload,
          phase: 'apply',
          on: 'depends',
          expected: step.depends,
          found,
          against: top ? { kind: 'payload', name: top.name, buildId: top.buildId } : { kind: 'hypervisor' },
          outcome,
          ...(outcome === 'mismatch' ? { errno: 'EINVAL' as const } : {}),
          reason: `checked by fleetpatch before re-applying ${payload.name} to restore the former stack: it depends on ${short(step.depends)}, ${top ? `the top of the stack is ${top.name} (${short(found)})` : `the hypervisor is ${short(found)}`}`,
        });
        if (outcome === 'mismatch') {
          throw new XenError('EINVAL', `${hostId}: ${payload.name} depends on build-id ${short(step.depends)}, but ${top ? `the top of the stack is ${top.name}` : 'the hypervisor is'} ${short(found)}`, { hostId, payload: payload.name });
        }
        await steps.runAction(id, agent, payload, 'apply', { pending: false, step: key });
        await recordFromActivity(events, id, `${key}:done`, { type: 'PayloadApplied', hostId, payload });
        return;
      }
    }
  }

  return {
    /**
     * Keeps the host's former state, once per rollout and host, just before the rollout's first
     * change on it: the stack `state` reports (read by the workflow's previous step) and, when the
     * plan verifies a function, what it returns now. Returns the state kept (the first one).
     */
    async beginHostPatch(input: { rolloutId: string; hostId: string; state: HostState; verifyCall?: string }): Promise<FormerState> {
      const { rolloutId, hostId, state } = input;
      const id = activityIdentity(rolloutId);
      const formerResult = input.verifyCall ? callOutcome(await (await steps.agentFor(hostId)).call(input.verifyCall)) : null;
      const former = {
        formerStack: state.applied.map(payloadRef),
        formerLoaded: state.loaded.map(payloadRef),
        formerResult,
      };
      const kept = await markTouched(pool, rolloutId, hostId, former);
      if (!kept) throw new FleetpatchError('ROLLOUT_STATE', `${hostId} is not a target of rollout ${rolloutId}`, { rolloutId, hostId });
      await recordWithKeys(events, [
        {
          key: `host-patch-started/${rolloutId}/${hostId}`,
          event: envelope(id, {
            type: 'HostPatchStarted',
            hostId,
            rollout: rolloutId,
            formerStack: kept.formerStack,
            formerLoaded: kept.formerLoaded,
            ...(kept.formerResult && input.verifyCall ? { formerResult: { call: input.verifyCall, kind: kept.formerResult.kind, value: kept.formerResult.value } } : {}),
          }),
        },
      ]);
      return kept;
    },

    /** Hosts the rollout touched, with their former state, for a rollback to page through. */
    async listTouchedHosts(input: { rolloutId: string; after: string | null; limit: number }): Promise<({ hostId: string } & FormerState)[]> {
      return selectTouchedHosts(pool, input.rolloutId, input.after, input.limit);
    },

    async countTouchedHosts(input: { rolloutId: string }): Promise<number> {
      return countTouchedHosts(pool, input.rolloutId);
    },

    /**
     * Restores the host to its former stack (see the module comment). Transient faults (host
     * unreachable, EBUSY) are thrown for Temporal to retry, and the retry carries on from the live
     * host; refusals end the restore with the reason, after unloading what of ours is loose.
     */
    async restoreHost(input: RestoreHostInput): Promise<RestoreOutcome> {
      const { hostId, former } = input;
      const id = activityIdentity(input.rolloutId);
      const ctx = Context.current();
      const agent = await steps.agentFor(hostId);
      let list = await agent.listAll();
      await reconcile(id, hostId, list);

      const goal: RestoreGoal = {
        formerStack: former.formerStack,
        formerLoaded: former.formerLoaded,
        ours: new Set(input.ours),
        storedBytes: await selectStoredBuildIds(pool, former.formerStack.map((p) => p.buildId)),
      };
      const done: RestoreStepDone[] = [];
      const seen = new Map<string, number>();
      let end: { outcome: RestoreOutcome['outcome']; reason?: string } | undefined;

      for (let n = 0; !end; n++) {
        if (n >= MAX_STEPS) {
          end = { outcome: 'failed', reason: `the host did not reach its former stack after ${MAX_STEPS} steps; it runs ${describeStack(list.appliedStack)}` };
          break;
        }
        const step = nextRestoreStep(liveHostOf(list), goal);
        if (step.kind === 'done') {
          end = { outcome: done.length === 0 ? 'nothing-to-do' : 'restored' };
          break;
        }
        if (step.kind === 'blocked') {
          end = { outcome: step.cause === 'name-taken' ? 'failed' : step.cause, reason: step.reason };
          break;
        }
        // Event ids: one per (step kind, payload, occurrence) within this restore, stable across
        // retries of the activity, so a step recorded before a crash is not recorded twice.
        const what = `${step.kind}:${step.payload.buildId}`;
        const occurrence = seen.get(what) ?? 0;
        seen.set(what, occurrence + 1);
        try {
          await take(id, agent, step, list, `restore:${what}:${occurrence}`);
        } catch (e) {
          if (e instanceof FleetpatchError && e.retryable) throw e;
          const why = e instanceof Error ? e.message : String(e);
          end = { outcome: 'failed', reason: `${step.kind} ${step.payload.name} did not succeed: ${why}` };
          list = await agent.listAll();
          break;
        }
        if (step.kind !== 'wait') done.push({ kind: step.kind, payload: payloadRef(step.payload) });
        ctx.heartbeat({ hostId, steps: done.length });
        list = await agent.listAll();
      }

      if (end.outcome !== 'restored' && end.outcome !== 'nothing-to-do') {
        // The host cannot be brought back: at least leave nothing of ours loaded and idle on it.
        for (const loose of looseOurs(liveHostOf(list), goal)) {
          const what = `unload:${loose.buildId}`;
          const occurrence = seen.get(what) ?? 0;
          seen.set(what, occurrence + 1);
          try {
            await take(id, agent, { kind: 'unload', payload: loose, why: 'cleanup' }, list, `restore:${what}:${occurrence}`);
            done.push({ kind: 'unload', payload: loose });
          } catch {
            // Reported through the outcome already; the stack the host is left with says the rest.
          }
        }
        list = await agent.listAll();
      } else if (input.verifyCall && former.formerResult) {
        const now = callOutcome(await agent.call(input.verifyCall));
        const ok = sameResult(now, former.formerResult);
        const reason = ok
          ? `${input.verifyCall} returns ${describeResult(now)} again, as before the rollout`
          : `${input.verifyCall} returns ${describeResult(now)}; before the rollout it returned ${describeResult(former.formerResult)}`;
        await recordFromActivity(events, id, 'restore:health', {
          type: 'HealthChecked',
          hostId,
          outcome: ok ? 'healthy' : 'unhealthy',
          check: { call: input.verifyCall, expect: former.formerResult.value ?? '' },
          ...(now.value !== null ? { observed: now.value } : {}),
          reason,
        });
        if (!ok) end = { outcome: 'failed', reason };
      }

      const stackNow = list.appliedStack.map(payloadRef);
      return { outcome: end.outcome, steps: done, stackNow, formerStack: former.formerStack.map(payloadRef), ...(end.reason ? { reason: end.reason } : {}) };
    },
  };
}
