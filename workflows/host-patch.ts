/**
 * hostPatchWorkflow: one host, one rollout. Read the live state, choose the build whose depends
 * matches it, upload, check the dependency against the live top of stack (recorded), apply (or
 * REPLACE), verify, and on a failure after apply revert what this workflow applied, top first.
 * Each step is a durable activity; a crashed worker resumes at the step it was in.
 */
import { assignPayload } from '../src/rollout/matching.ts';
import type { HostFailure, HostPatchInput, HostPatchResult, PayloadMeta, StackEntry } from '../src/rollout/types.ts';
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
  const { hostId } = input;
  const applied: StackEntry[] = [];
  /** Uploaded by this workflow: unloaded again if the host fails before they are applied. */
  const uploaded: StackEntry[] = [];
  let replacedStack: StackEntry[] | undefined;
  try {
    const state = await step('read', () => hostOps.readHost({ hostId }));
    const assignment = assignPayload(input.mode, input.payloads, state);
    if (assignment.kind === 'already') return { hostId, outcome: 'already', applied: [] };
    if (assignment.kind === 'incompatible') {
      // Compatible at preflight, not any more: the host changed under us. Record the checks that
      // show it and fail the host; it counts against the budget.
      await bookkeeping.recordDependencyChecks({ hostId, rolloutId: input.rolloutId, phase: 'apply', checks: assignment.checks });
      throw new StepFailed({ stage: 'check', code: 'EINVAL', reason: assignment.reason, unreachable: false });
    }

    const toApply: PayloadMeta[] = assignment.kind === 'replace' ? [assignment.payload] : assignment.payloads;
    for (const payload of toApply) {
      const up = await step('upload', () => hostOps.uploadPayload({ hostId, rolloutId: input.rolloutId, payload }));
      if (up.uploaded) uploaded.push({ name: payload.name, buildId: payload.buildId });
      const check = await step('check', () =>
        hostOps.checkDependency({ hostId, rolloutId: input.rolloutId, payload, against: assignment.kind === 'replace' ? 'hypervisor' : 'top' }),
      );
      if (check.outcome !== 'match') {
        throw new StepFailed({
          stage: 'check',
          code: 'EINVAL',
          reason: `${payload.name} depends on build-id ${check.expected}, but ${check.against.kind === 'hypervisor' ? 'the hypervisor' : `the top of the stack, ${check.against.name},`} is ${check.found}`,
          unreachable: false,
        });
      }
      if (assignment.kind === 'replace') {
        const r = await step('replace', () => hostActions.replacePayload({ hostId, rolloutId: input.rolloutId, payload }));
        replacedStack = r.replaced;
      } else {
        await step('apply', () => hostActions.applyPayload({ hostId, rolloutId: input.rolloutId, payload }));
      }
      applied.push({ name: payload.name, buildId: payload.buildId });
    }

    if (input.verify) {
      const verify = input.verify;
      const v = await step('verify', () => hostOps.verifyHost({ hostId, rolloutId: input.rolloutId, verify }));
      if (!v.ok) throw new StepFailed({ stage: 'verify', code: 'VERIFY_FAILED', reason: v.reason, unreachable: false });
    }
    return { hostId, outcome: 'patched', applied, ...(replacedStack ? { replacedStack } : {}) };
  } catch (e) {
    if (!(e instanceof StepFailed)) throw e;
    const revertedAfterFailure = applied.length > 0 ? await revertOwn(input, applied, replacedStack) : undefined;
    // What was uploaded here but never applied goes too (best effort: the failure is the news).
    for (const payload of uploaded.filter((u) => !applied.some((a) => a.buildId === u.buildId)).reverse()) {
      await hostOps.unloadPayload({ hostId, rolloutId: input.rolloutId, payload }).catch(() => undefined);
    }
    return {
      hostId,
      outcome: 'failed',
      failure: e.failure,
      applied: revertedAfterFailure ? [] : applied,
      ...(replacedStack && !revertedAfterFailure ? { replacedStack } : {}),
      ...(revertedAfterFailure !== undefined ? { revertedAfterFailure } : {}),
    };
  }
}

/**
 * Undo what this workflow applied, top first. A REPLACE cannot be undone into the former stack
 * here (payloads with .data cannot be re-applied); the host keeps the replacement reverted and the
 * rollback workflow reports what it could restore. Returns whether everything was reverted.
 */
async function revertOwn(input: HostPatchInput, applied: StackEntry[], replacedStack: StackEntry[] | undefined): Promise<boolean> {
  for (const payload of [...applied].reverse()) {
    try {
      const r = await hostActions.revertPayload({ hostId: input.hostId, rolloutId: input.rolloutId, payload });
      if (r.outcome === 'not-top') return false;
      // Unloaded too: a payload with .data could never be applied again while it stays loaded,
      // and the next attempt uploads it afresh.
      await hostOps.unloadPayload({ hostId: input.hostId, rolloutId: input.rolloutId, payload });
    } catch {
      return false;
    }
  }
  if (replacedStack && replacedStack.length > 0) {
    try {
      await hostActions.reapplyStack({ hostId: input.hostId, rolloutId: input.rolloutId, stack: replacedStack });
    } catch {
      return false;
    }
  }
  return true;
}
