/**
 * rollbackWorkflow: revert what a rollout applied, on every host it patched, top of stack first,
 * each host verified and recorded. A host whose stack has grown above our payload since is
 * reported ("stack-grew"), never forced: reverting under someone else's payload is what Xen
 * refuses (EBUSY) and what an operator must decide. Pages through PostgreSQL and continues as new
 * like the rollout does.
 */
import { allHandlersFinished, condition, continueAsNew, executeChild, ParentClosePolicy, setHandler, defineQuery, workflowInfo } from '@temporalio/workflow';
import type { HostRollbackInput, HostRollbackResult, RolloutMode, VerifySpec } from '../src/rollout/types.ts';
import { bookkeeping, hostActions, hostOps } from './activities.ts';
import { hostFailure } from './failures.ts';
import { runBounded } from './pool.ts';

export interface RollbackInput {
  rolloutId: string;
  mode: RolloutMode;
  reason: string;
  verify?: VerifySpec;
  concurrency: number;
}

export interface RollbackSummary {
  rolledBack: number;
  nothingToDo: number;
  stackGrew: number;
  failed: number;
  /** A bounded sample of hosts that could not be rolled back, with the reason. */
  problems: { hostId: string; outcome: string; reason: string }[];
  /** Paging cursor: the last host id handled. */
  after: string | null;
}

export const rollbackProgressQuery = defineQuery<RollbackSummary>('rollbackProgress');

const HOSTS_PER_RUN = 500;

export async function rollbackWorkflow(input: RollbackInput, carried?: RollbackSummary): Promise<RollbackSummary> {
  const summary: RollbackSummary = carried ?? { rolledBack: 0, nothingToDo: 0, stackGrew: 0, failed: 0, problems: [], after: null };
  setHandler(rollbackProgressQuery, () => summary);
  let handled = 0;
  for (;;) {
    const hosts = await bookkeeping.listPatchedHosts({ rolloutId: input.rolloutId, after: summary.after, limit: Math.min(500, HOSTS_PER_RUN - handled) });
    if (hosts.length === 0) break;
    await runBounded(hosts, input.concurrency, async () => true, async (host) => {
      const r = await rollbackHostChild({ ...host, rolloutId: input.rolloutId, mode: input.mode, ...(input.verify ? { verify: input.verify } : {}) });
      if (r.outcome === 'rolled-back') summary.rolledBack++;
      else if (r.outcome === 'nothing-to-do') summary.nothingToDo++;
      else {
        if (r.outcome === 'stack-grew') summary.stackGrew++;
        else summary.failed++;
        if (summary.problems.length < 50) summary.problems.push({ hostId: r.hostId, outcome: r.outcome, reason: r.reason ?? '' });
      }
    });
    summary.after = hosts[hosts.length - 1]!.hostId;
    handled += hosts.length;
    if (handled >= HOSTS_PER_RUN || workflowInfo().continueAsNewSuggested) {
      await condition(allHandlersFinished);
      return continueAsNew<typeof rollbackWorkflow>(input, summary);
    }
  }
  return summary;
}

async function rollbackHostChild(input: HostRollbackInput): Promise<HostRollbackResult> {
  try {
    return await executeChild(hostRollbackWorkflow, {
      workflowId: `${workflowInfo().workflowId}/host/${input.hostId}`,
      args: [input],
      parentClosePolicy: ParentClosePolicy.TERMINATE,
    });
  } catch (e) {
    return { hostId: input.hostId, outcome: 'failed', reverted: [], reapplied: [], reason: hostFailure('revert', e).reason };
  }
}

/**
 * One host: revert our payloads top first (each only when it is the top of the live stack), then
 * for a REPLACE rollout re-apply the stack the replacement swapped out, where Xen allows it.
 */
export async function hostRollbackWorkflow(input: HostRollbackInput): Promise<HostRollbackResult> {
  const result = await rollbackHost(input);
  await bookkeeping.finishHostRollback({ rolloutId: input.rolloutId, result });
  return result;
}

async function rollbackHost(input: HostRollbackInput): Promise<HostRollbackResult> {
  const { hostId } = input;
  const reverted: HostRollbackResult['reverted'] = [];
  let reapplied: HostRollbackResult['reapplied'] = [];
  try {
    const state = await hostOps.readHost({ hostId });
    const ours = input.applied.filter((p) => state.applied.some((a) => a.buildId === p.buildId));
    if (ours.length === 0 && !(input.replacedStack && input.replacedStack.length > 0 && state.applied.length === 0)) {
      return { hostId, outcome: 'nothing-to-do', reverted, reapplied, reason: 'none of the rollout payloads is applied any more' };
    }
    const top = state.applied[state.applied.length - 1];
    const ourTop = ours[ours.length - 1];
    if (ourTop && top && top.buildId !== ourTop.buildId) {
      return { hostId, outcome: 'stack-grew', reverted, reapplied, reason: `${top.name} (${top.buildId.slice(0, 12)}) is now above ${ourTop.name} on the stack; not forced` };
    }
    for (const payload of [...ours].reverse()) {
      const r = await hostActions.revertPayload({ hostId, rolloutId: input.rolloutId, payload });
      if (r.outcome === 'not-top') {
        return { hostId, outcome: 'stack-grew', reverted, reapplied, reason: r.reason };
      }
      reverted.push(payload);
    }
    if (input.mode === 'replace' && input.replacedStack && input.replacedStack.length > 0) {
      const r = await hostActions.reapplyStack({ hostId, rolloutId: input.rolloutId, stack: input.replacedStack });
      reapplied = r.reapplied;
      if (r.notReapplied.length > 0) {
        return { hostId, outcome: 'failed', reverted, reapplied, reason: `could not restore the former stack: ${r.notReapplied.map((n) => `${n.name}: ${n.reason}`).join('; ')}` };
      }
    }
    const check = await hostOps.verifyReverted({ hostId, rolloutId: input.rolloutId, reverted, ...(input.verify ? { verify: input.verify } : {}) });
    if (!check.ok) return { hostId, outcome: 'failed', reverted, reapplied, reason: check.reason };
    // Reverted payloads would stay loaded (Xen never unloads by itself): leave the host clean.
    for (const payload of reverted) await hostOps.unloadPayload({ hostId, rolloutId: input.rolloutId, payload });
    return { hostId, outcome: 'rolled-back', reverted, reapplied };
  } catch (e) {
    return { hostId, outcome: 'failed', reverted, reapplied, reason: hostFailure('revert', e).reason };
  }
}
