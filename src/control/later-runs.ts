/**
 * What ran for a rollout after it ended, read from Temporal: its rollbacks asked for later
 * (`<workflow id>/rollback-by-<who>-<ms>`) and its repairs (`<workflow id>/repair-N`), found by
 * their ids' common prefix. The rollback the rollout ran itself (`<workflow id>/rollback`) is in
 * the rollout's own progress already. Temporal's list is eventually consistent: a run started a
 * moment ago may show up a moment later.
 */
import { WorkflowFailedError, type Client, type WorkflowExecutionInfo } from '@temporalio/client';
import { defaultPayloadConverter } from '@temporalio/common';
import { foldLaterRuns, type LaterRun, type RolloutProgress } from '../rollout/progress.ts';
import { rollbackProgressQuery, type RollbackInput, type RollbackSummary } from '../../workflows/rollback.ts';
import type { RepairInput, RepairSummary } from '../../workflows/repair.ts';
import { isFinal, readProgress, workflowIdOf } from './rollouts.ts';

/** The rollout's progress with its later rollbacks and repairs folded in (rollout-summary's order: oldest first). */
export async function withLaterRuns(client: Client, p: RolloutProgress, deadlineMs: number): Promise<RolloutProgress> {
  const runs = await client.connection.withDeadline(Date.now() + deadlineMs, () => laterRuns(client, p.rolloutId));
  return runs.length === 0 ? p : foldLaterRuns(p, runs);
}

/** The rollout's progress as `watch` follows it: live while it runs, then with what ran after it. */
export async function latestProgress(client: Client, id: string, deadlineMs = 10_000): Promise<RolloutProgress> {
  const p = await readProgress(client, id);
  return isFinal(p) ? withLaterRuns(client, p, deadlineMs) : p;
}

export async function laterRuns(client: Client, rolloutId: string): Promise<LaterRun[]> {
  const prefix = `${workflowIdOf(rolloutId)}/`;
  const found: WorkflowExecutionInfo[] = [];
  for await (const w of client.workflow.list({ query: `WorkflowId STARTS_WITH "${prefix.replace(/["\\]/g, '\\$&')}"` })) {
    if (w.workflowId === `${prefix}rollback`) continue;
    if (w.type === 'rollbackWorkflow' || w.type === 'repairWorkflow') found.push(w);
  }
  return Promise.all(found.map((w) => readRun(client, w)));
}

async function readRun(client: Client, w: WorkflowExecutionInfo): Promise<LaterRun> {
  const handle = client.workflow.getHandle(w.workflowId, w.runId);
  const startedAt = w.startTime.toISOString();
  const state = w.status.name === 'RUNNING' ? 'running' : w.status.name === 'COMPLETED' ? 'finished' : 'ended';
  const endedAs = state === 'ended' ? await howItEnded(handle.result(), w.status.name) : undefined;
  if (w.type === 'rollbackWorkflow') {
    const input = await startInput<RollbackInput>(client, w);
    const counts: RollbackSummary | undefined =
      state === 'finished' ? await handle.result() : state === 'running' ? await handle.query(rollbackProgressQuery).catch(() => undefined) : undefined;
    return { kind: 'rollback', startedAt, requestedBy: input.requestedBy, reason: input.reason, state, ...(counts ? { counts } : {}), ...(endedAs ? { endedAs } : {}) };
  }
  const input = await startInput<RepairInput>(client, w);
  const result: RepairSummary | undefined = state === 'finished' ? await handle.result() : undefined;
  return {
    kind: 'repair',
    name: `repair-${input.repair}`,
    startedAt,
    requestedBy: input.requestedBy,
    reason: input.reason,
    state,
    ...(result ? { result: { checked: result.checked, lost: result.lost, patched: result.patched, failed: result.failed, ...(result.budgetReason ? { budgetReason: result.budgetReason } : {}) } } : {}),
    ...(endedAs ? { endedAs } : {}),
  };
}

/** A workflow that ended without a result, in Temporal's words (its failure, or how it was stopped). */
async function howItEnded(result: Promise<unknown>, status: string): Promise<string> {
  try {
    await result;
    return `its workflow ended as ${status.toLowerCase()}`;
  } catch (e) {
    const cause = e instanceof WorkflowFailedError ? e.cause : undefined;
    return `its workflow ended as ${status.toLowerCase()}${cause?.message ? `: ${cause.message}` : ''}`;
  }
}

/** A workflow's input, from the first event of its history (one event is read, not the history). */
async function startInput<T>(client: Client, w: WorkflowExecutionInfo): Promise<T> {
  const r = await client.workflowService.getWorkflowExecutionHistory({ namespace: client.options.namespace, execution: { workflowId: w.workflowId, runId: w.runId }, maximumPageSize: 1 });
  const payload = r.history?.events?.[0]?.workflowExecutionStartedEventAttributes?.input?.payloads?.[0];
  if (!payload) throw new Error(`workflow ${w.workflowId} has no recorded input`);
  return defaultPayloadConverter.fromPayload<T>(payload);
}
