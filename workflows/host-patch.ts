/**
 * hostPatchWorkflow: one host, one rollout. Read the live state, choose the build whose depends
 * matches it, keep the host's former state, upload, check the dependency against the live top of
 * stack (recorded), apply (or REPLACE), verify. On any failure after the first change the host is
 * restored to its former stack at once (restoreHost: revert ours top first, reload what Xen will
 * not re-apply, unload what is ours), so a failed host never keeps half a rollout.
 * Each step is a durable activity; a crashed worker resumes at the step it was in.
 */
import { assignPayload } from '../src/rollout/matching.ts';
import type { FormerState, HostFailure, HostPatchInput, HostPatchResult, PayloadMeta, RestoreOutcome, StackEntry } from '../src/rollout/types.ts';
import { bookkeeping, hostActions, hostOps } from './activities.ts';
import { hostFailure } from './failures.ts';

class StepFailed extends Error {
  constructor(readonly failure: HostFailure) {
    super(failure.reason);
  }
}

async function step<T>(stage: HostFailure['stage'], fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    throw new StepFailed(hostFailure(stage, e));
  }
}

export async function hostPatchWorkflow(input: HostPatchInput): Promise<HostPatchResult> {
  const result = await patchHost(input);
  await bookkeeping.finishHost({ rolloutId: input.rolloutId, wave: input.waveName, result });
  return result;
}

async function patchHost(input: HostPatchInput): Promise<HostPatchResult> {
  const { hostId, rolloutId } = input;
  const applied: StackEntry[] = [];
  let former: FormerState | undefined;
  try {
    const state = await step('read', () => hostOps.readHost({ hostId }));
    const assignment = assignPayload(input.mode, input.payloads, state);
    if (assignment.kind === 'already') return { hostId, outcome: 'already', applied: [] };
    if (assignment.kind === 'incompatible') {
      // Compatible at preflight, not any more: the host changed under us. Record the checks that
      // show it and fail the host; it counts against the budget. Nothing was changed on it.
      await bookkeeping.recordDependencyChecks({ hostId, rolloutId, phase: 'apply', checks: assignment.checks });
      throw new StepFailed({ stage: 'check', code: 'EINVAL', reason: assignment.reason, unreachable: false });
    }

    former = await step('read', () => hostOps.beginHostPatch({ rolloutId, hostId, state, ...(input.verify ? { verifyCall: input.verify.call } : {}) }));
    const toApply: PayloadMeta[] = assignment.kind === 'replace' ? [assignment.payload] : assignment.payloads;
    for (const payload of toApply) {
      await step('upload', () => hostOps.uploadPayload({ hostId, rolloutId, payload }));
      const check = await step('check', () => hostOps.checkDependency({ hostId, rolloutId, payload, against: assignment.kind === 'replace' ? 'hypervisor' : 'top' }));
      if (check.outcome !== 'match') {
        throw new StepFailed({
          stage: 'check',
          code: 'EINVAL',
          reason: `${payload.name} depends on build-id ${check.expected}, but ${check.against.kind === 'hypervisor' ? 'the hypervisor' : `the top of the stack, ${check.against.name},`} is ${check.found}`,
          unreachable: false,
        });
      }
      if (assignment.kind === 'replace') await step('replace', () => hostActions.replacePayload({ hostId, rolloutId, payload }));
      else await step('apply', () => hostActions.applyPayload({ hostId, rolloutId, payload }));
      applied.push({ name: payload.name, buildId: payload.buildId });
    }

    if (input.verify) {
      const verify = input.verify;
      const v = await step('verify', () => hostOps.verifyHost({ hostId, rolloutId, verify }));
      if (!v.ok) throw new StepFailed({ stage: 'verify', code: 'VERIFY_FAILED', reason: v.reason, unreachable: false });
    }
    return { hostId, outcome: 'patched', applied };
  } catch (e) {
    if (!(e instanceof StepFailed)) throw e;
    if (!former) return { hostId, outcome: 'failed', failure: e.failure, applied: [] };
    const restore = await restoreAfterFailure(input, former);
    const ours = new Set(input.payloads.map((p) => p.buildId));
    return { hostId, outcome: 'failed', failure: e.failure, applied: restore.stackNow.filter((p) => ours.has(p.buildId)), restore };
  }
}

/** Back to the former stack; a restore that cannot run at all (host gone) says so instead of throwing. */
async function restoreAfterFailure(input: HostPatchInput, former: FormerState): Promise<RestoreOutcome> {
  try {
    return await hostActions.restoreHost({
      rolloutId: input.rolloutId,
      hostId: input.hostId,
      former,
      ours: input.payloads.map((p) => p.buildId),
      ...(input.verify ? { verifyCall: input.verify.call } : {}),
    });
  } catch (e) {
    return { outcome: 'failed', steps: [], stackNow: [], formerStack: former.formerStack, reason: `the restore could not run: ${hostFailure('revert', e).reason}` };
  }
}
