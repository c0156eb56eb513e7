/**
 * rollbackWorkflow: bring every host a rollout touched back to the stack it had before, and say
 * plainly which hosts could not be. Each host is restored by the same restoreHost activity the
 * per-host failure path uses (revert ours top first, reload what Xen will not re-apply, re-apply
 * the former stack bottom up, unload what is ours, and check that the verified function returns
 * what it returned before). A host whose stack has grown above ours with someone else's payload is
 * reported ("stack-grew"), never forced: reverting under another payload is what Xen refuses and
 * what an operator must decide.
 *
 * The rollback records its own start and end on the rollout's stream, with who asked and why, so
 * an automatic rollback and one a person requests later read the same in the audit. Hosts are
 * paged from PostgreSQL; the workflow continues as new like the rollout does.
 */
import { allHandlersFinished, condition, continueAsNew, defineQuery, executeChild, ParentClosePolicy, setHandler, workflowInfo } from '@temporalio/workflow';
import type { Actor, FormerState, HostRollbackInput, HostRollbackResult, StackEntry } from '../src/rollout/types.ts';
import { bookkeeping, hostActions } from './activities.ts';
import { hostFailure } from './failures.ts';
import { runBounded } from './pool.ts';

export interface RollbackInput {
  rolloutId: string;
  /** Who decided to roll back (the system for an automatic rollback) and why. */
  requestedBy: Actor;
  reason: string;
  /** Build-ids the rollout brought: the only payloads the rollback reverts and unloads. */
  ours: string[];
  /** The plan's verify function: it must return what it returned before the rollout. */
  verifyCall?: string;
  concurrency: number;
  /** Set by the rollout workflow when it rolls back itself: it records the outcome too. */
  webhook?: string;
}

export interface RollbackProblem {
  hostId: string;
  outcome: HostRollbackResult['outcome'];
  reason: string;
  stackNow: StackEntry[];
  formerStack: StackEntry[];
}

export interface RollbackSummary {
  /** Hosts the rollout touched. */
  hosts: number;
  rolledBack: number;
  nothingToDo: number;
  stackGrew: number;
  unrecoverable: number;
  failed: number;
  /** rolled-back only when every touched host is back to its former stack. */
  outcome: 'rolled-back' | 'rollback-incomplete';
  /** Every host that is not back (up to 200), with where it stands, where it should, and why. */
  problems: RollbackProblem[];
  /** Paging cursor: the last host id handled. */
  after: string | null;
}

export const rollbackProgressQuery = defineQuery<RollbackSummary>('rollbackProgress');

const HOSTS_PER_RUN = 500;
export const PROBLEM_SAMPLE = 200;

export function incomplete(s: Pick<RollbackSummary, 'stackGrew' | 'unrecoverable' | 'failed'>): boolean {
  return s.stackGrew + s.unrecoverable + s.failed > 0;
}

export async function rollbackWorkflow(input: RollbackInput, carried?: RollbackSummary): Promise<RollbackSummary> {
  const key = workflowInfo().workflowId;
  const record = (what: string, body: Parameters<typeof bookkeeping.recordRolloutEvent>[0]['body']) =>
    bookkeeping.recordRolloutEvent({ rolloutId: input.rolloutId, key: `${key}/${what}`, body, actor: input.requestedBy, ...(input.webhook ? { webhook: input.webhook } : {}) });

  let summary: RollbackSummary;
  if (carried) summary = carried;
  else {
    const hosts = await bookkeeping.countTouchedHosts({ rolloutId: input.rolloutId });
    summary = { hosts, rolledBack: 0, nothingToDo: 0, stackGrew: 0, unrecoverable: 0, failed: 0, outcome: 'rolled-back', problems: [], after: null };
    await record('rollback-started', { type: 'RollbackStarted', rolloutId: input.rolloutId, reason: input.reason, hosts });
  }
  setHandler(rollbackProgressQuery, () => summary);

  let handled = 0;
  for (;;) {
    const hosts = await bookkeeping.listTouchedHosts({ rolloutId: input.rolloutId, after: summary.after, limit: Math.min(500, HOSTS_PER_RUN - handled) });
    if (hosts.length === 0) break;
    await runBounded(hosts, input.concurrency, async () => true, async (host) => {
      const r = await rollbackHostChild({ rolloutId: input.rolloutId, hostId: host.hostId, former: formerOf(host), ours: input.ours, ...(input.verifyCall ? { verifyCall: input.verifyCall } : {}) });
      count(summary, r);
    });
    summary.after = hosts[hosts.length - 1]!.hostId;
    handled += hosts.length;
    if (handled >= HOSTS_PER_RUN || workflowInfo().continueAsNewSuggested) {
      await condition(allHandlersFinished);
      return continueAsNew<typeof rollbackWorkflow>(input, summary);
    }
  }
  summary.outcome = incomplete(summary) ? 'rollback-incomplete' : 'rolled-back';
  await record('rollback-finished', {
    type: 'RollbackFinished',
    rolloutId: input.rolloutId,
    rolledBack: summary.rolledBack,
    stackGrew: summary.stackGrew,
    failed: summary.failed,
    nothingToDo: summary.nothingToDo,
    unrecoverable: summary.unrecoverable,
    outcome: summary.outcome,
  });
  return summary;
}

function formerOf(h: FormerState): FormerState {
  return { formerStack: h.formerStack, formerLoaded: h.formerLoaded, formerResult: h.formerResult };
}

function count(summary: RollbackSummary, r: HostRollbackResult): void {
  const field = ({ 'rolled-back': 'rolledBack', 'nothing-to-do': 'nothingToDo', 'stack-grew': 'stackGrew', unrecoverable: 'unrecoverable', failed: 'failed' } as const)[r.outcome];
  summary[field]++;
  if (r.outcome !== 'rolled-back' && r.outcome !== 'nothing-to-do' && summary.problems.length < PROBLEM_SAMPLE) {
    summary.problems.push({ hostId: r.hostId, outcome: r.outcome, reason: r.reason ?? '', stackNow: r.stackNow, formerStack: r.formerStack });
  }
}

async function rollbackHostChild(input: HostRollbackInput): Promise<HostRollbackResult> {
  try {
    return await executeChild(hostRollbackWorkflow, {
      workflowId: `${workflowInfo().workflowId}/host/${input.hostId}`,
      args: [input],
      parentClosePolicy: ParentClosePolicy.TERMINATE,
    });
  } catch (e) {
    return { hostId: input.hostId, outcome: 'failed', reverted: [], reapplied: [], stackNow: [], formerStack: input.former.formerStack, reason: hostFailure('revert', e).reason };
  }
}

/** One host: restored to its former stack by restoreHost, then the outcome recorded. */
export async function hostRollbackWorkflow(input: HostRollbackInput): Promise<HostRollbackResult> {
  const result = await rollbackHost(input);
  await bookkeeping.finishHostRollback({ rolloutId: input.rolloutId, result });
  return result;
}

async function rollbackHost(input: HostRollbackInput): Promise<HostRollbackResult> {
  const { hostId } = input;
  try {
    const r = await hostActions.restoreHost({ rolloutId: input.rolloutId, hostId, former: input.former, ours: input.ours, ...(input.verifyCall ? { verifyCall: input.verifyCall } : {}) });
    return {
      hostId,
      outcome: r.outcome === 'restored' ? 'rolled-back' : r.outcome,
      reverted: r.steps.filter((s) => s.kind === 'revert').map((s) => s.payload),
      reapplied: r.steps.filter((s) => s.kind === 'apply').map((s) => s.payload),
      stackNow: r.stackNow,
      formerStack: r.formerStack,
      ...(r.reason ? { reason: r.reason } : {}),
    };
  } catch (e) {
    return { hostId, outcome: 'failed', reverted: [], reapplied: [], stackNow: [], formerStack: input.former.formerStack, reason: `the restore could not run: ${hostFailure('revert', e).reason}` };
  }
}
