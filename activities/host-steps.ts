/**
 * The building blocks of every host step, shared by the patch activities (host.ts) and the
 * restore activity (restore.ts): reaching a host, reading payload bytes from the store, running an
 * asynchronous hypervisor action to its end while heartbeating, and recording what the hypervisor
 * reports (its dependency checks, its refusals) as events.
 */
import { Context } from '@temporalio/activity';
import { errnoName, FleetpatchError, XenError, XEN_ERRNO } from '../src/errors.ts';
import type { DependencyCheck as HostDependencyCheck } from '../src/hypervisor/state-machine.ts';
import type { HostAgent } from '../src/hypervisor/agent-client.ts';
import type { WireList, WireStatus } from '../src/hypervisor/wire.ts';
import type { PayloadMeta, StackEntry } from '../src/rollout/matching.ts';
import type { ActivityDeps } from './deps.ts';
import { recordFromActivity, type ActivityIdentity } from './recording.ts';

export const EAGAIN = -XEN_ERRNO.EAGAIN;

export const payloadRef = (p: StackEntry): StackEntry => ({ name: p.name, buildId: p.buildId });

export type HostSteps = ReturnType<typeof hostSteps>;

export function hostSteps(deps: ActivityDeps) {
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

  return { agentFor, payloadBytes, recordHostCheck, recordLostHostCheck, recordFailure, waitForAction, runAction };
}
