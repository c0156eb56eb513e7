/**
 * Rollouts from the operator's side: read a plan file, parse and store its payloads, start the
 * rollout workflow under its deterministic id, find it again, and show its progress. Used by
 * `fleetpatch rollout ...` and by the demo.
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { Client, Connection, WorkflowExecutionAlreadyStartedError, WorkflowNotFoundError, type WorkflowHandle } from '@temporalio/client';
import { WorkflowIdReusePolicy } from '@temporalio/common';
import { FleetpatchError } from '../errors.ts';
import { EventStore } from '../events/store.ts';
import { PayloadStore } from '../events/payload-store.ts';
import { parsePayload } from '../payload/index.ts';
import { parsePlan, type Plan } from '../rollout/plan.ts';
import { FINAL_STATUSES, totals, type RolloutProgress } from '../rollout/progress.ts';
import { payloadNameFromFile, resolvePlan, rolloutIdFor } from '../rollout/resolve.ts';
import type { Actor, PayloadMeta, ResolvedPlan } from '../rollout/types.ts';
import type { Pool } from '../runtime/database.ts';
import { progressQuery } from '../../workflows/messages.ts';
import type { rolloutWorkflow } from '../../workflows/rollout.ts';
import { renderTable } from './table.ts';

export const ROLLOUT_WORKFLOW_PREFIX = 'rollout-';

export function workflowIdOf(rolloutId: string): string {
  return rolloutId.startsWith(ROLLOUT_WORKFLOW_PREFIX) ? rolloutId : `${ROLLOUT_WORKFLOW_PREFIX}${rolloutId}`;
}

export function rolloutIdOf(idOrWorkflowId: string): string {
  return idOrWorkflowId.startsWith(ROLLOUT_WORKFLOW_PREFIX) ? idOrWorkflowId.slice(ROLLOUT_WORKFLOW_PREFIX.length) : idOrWorkflowId;
}

/** Reads and validates a plan file; payload files are relative to the plan's directory. */
export async function readPlanFile(file: string): Promise<{ plan: Plan; dir: string }> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    throw new FleetpatchError('USAGE', `cannot read the plan ${file}: ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (e as Error).message}`);
  }
  return { plan: parsePlan(text, file), dir: path.dirname(path.resolve(file)) };
}

/**
 * Parses every payload file of the plan exactly as Xen's upload would (an invalid payload stops
 * here, with its errno and reason, before anything is started), then stores it by build-id.
 * `store` false: parse only (the dry-run `plan` command changes nothing).
 */
export async function resolvePlanPayloads(plan: Plan, dir: string, opts: { pool?: Pool; actor: Actor; store: boolean }): Promise<ResolvedPlan> {
  const payloads = opts.pool ? new PayloadStore(new EventStore(opts.pool)) : undefined;
  return resolvePlan(plan, async (ref): Promise<PayloadMeta> => {
    if ('buildId' in ref) {
      const stored = payloads ? await payloads.meta(ref.buildId) : null;
      if (!stored) throw new FleetpatchError('PAYLOAD_NOT_FOUND', `no stored payload has build-id ${ref.buildId}; name its file instead`);
      if (!stored.depends) throw new FleetpatchError('PAYLOAD_NOT_FOUND', `stored payload ${ref.buildId} has no recorded depends`);
      return { name: stored.name, buildId: stored.buildId, depends: stored.depends, xenDepends: stored.xenDepends };
    }
    const file = path.resolve(dir, ref.file);
    let bytes: Buffer;
    try {
      bytes = await readFile(file);
    } catch (e) {
      throw new FleetpatchError('PLAN_INVALID', `payload file ${ref.file}: ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (e as Error).message}`);
    }
    const name = ref.name ?? payloadNameFromFile(file);
    let parsed;
    try {
      parsed = parsePayload(bytes, { name });
    } catch (e) {
      if (e instanceof FleetpatchError) throw new FleetpatchError(e.code, `payload file ${ref.file}: ${e.message}`, { ...e.details });
      throw e;
    }
    const meta: PayloadMeta = { name, buildId: parsed.buildIdHex, depends: parsed.dependsHex, xenDepends: parsed.xenDependsHex };
    if (opts.store && payloads) {
      await payloads.put({ name, buildId: meta.buildId, bytes, depends: meta.depends, xenDepends: meta.xenDepends }, { actor: opts.actor });
    }
    return meta;
  });
}

export async function connectClient(address: string, namespace: string): Promise<{ client: Client; close: () => Promise<void> }> {
  const connection = await Connection.connect({ address });
  return { client: new Client({ connection, namespace }), close: () => connection.close() };
}

export interface Started {
  rolloutId: string;
  workflowId: string;
  /** False when a rollout with this id already existed: nothing new was started. */
  started: boolean;
  handle: WorkflowHandle<typeof rolloutWorkflow>;
}

/**
 * Starts the rollout under its deterministic id. Temporal refuses a second start of the same id,
 * even after the first finished (REJECT_DUPLICATE), so the same plan never runs twice by accident.
 */
export async function startRollout(client: Client, taskQueue: string, plan: ResolvedPlan, opts: { requestedBy: Actor; reason?: string; rolloutId?: string }): Promise<Started> {
  const rolloutId = opts.rolloutId ?? rolloutIdFor(plan);
  const workflowId = workflowIdOf(rolloutId);
  try {
    const handle = await client.workflow.start<typeof rolloutWorkflow>('rolloutWorkflow', {
      taskQueue,
      workflowId,
      workflowIdReusePolicy: WorkflowIdReusePolicy.REJECT_DUPLICATE,
      args: [{ rolloutId, plan, requestedBy: opts.requestedBy, ...(opts.reason ? { reason: opts.reason } : {}) }],
    });
    return { rolloutId, workflowId, started: true, handle };
  } catch (e) {
    if (e instanceof WorkflowExecutionAlreadyStartedError) {
      return { rolloutId, workflowId, started: false, handle: client.workflow.getHandle<typeof rolloutWorkflow>(workflowId) };
    }
    throw e;
  }
}

/** The rollout's progress: live (query) while it runs, its result once it ended. */
export async function readProgress(client: Client, idOrWorkflowId: string): Promise<RolloutProgress> {
  const handle = client.workflow.getHandle<typeof rolloutWorkflow>(workflowIdOf(idOrWorkflowId));
  let status: string;
  try {
    status = (await handle.describe()).status.name;
  } catch (e) {
    if (e instanceof WorkflowNotFoundError) throw new FleetpatchError('ROLLOUT_NOT_FOUND', `no rollout ${rolloutIdOf(idOrWorkflowId)} (workflow ${workflowIdOf(idOrWorkflowId)})`);
    throw e;
  }
  if (status === 'RUNNING') return handle.query(progressQuery);
  if (status === 'COMPLETED') return handle.result();
  throw new FleetpatchError('ROLLOUT_STATE', `rollout ${rolloutIdOf(idOrWorkflowId)} ended as ${status.toLowerCase()} (its workflow did not complete; see the Temporal UI)`);
}

export function isFinal(p: RolloutProgress): boolean {
  return FINAL_STATUSES.includes(p.status);
}

/** Progress as lines a person reads: header, one row per wave, failures, decisions. */
export function describeProgress(p: RolloutProgress): string[] {
  const t = totals(p);
  const lines = [`rollout ${p.rolloutId} (${p.planName}): ${p.status}${p.stopReason ? ` — ${p.stopReason}` : ''}`];
  if (p.preflight) {
    const pf = p.preflight;
    lines.push(`preflight: ${pf.selected} hosts selected, ${pf.targets} to patch, ${pf.alreadyPatched} already patched, ${pf.incompatible} incompatible, ${pf.unreachable} unreachable`);
  }
  lines.push(
    ...renderTable(
      ['wave', 'status', 'planned', 'done', 'patched', 'already', 'failed', 'unreachable'],
      p.waves.map((w) => [w.name, w.status, w.planned, w.done, w.patched, w.already, w.failed, w.unreachable]),
    ),
  );
  lines.push(`total: ${t.done}/${t.planned} done, ${t.patched} patched, ${t.already} already, ${t.failed} failed`);
  if (p.awaitingApprovalAfter) lines.push(`waiting for approval after wave "${p.awaitingApprovalAfter}": fleetpatch rollout approve ${p.rolloutId} --reason "..."`);
  if (p.bakingUntil) lines.push(`baking until ${p.bakingUntil}`);
  if (p.rollback) lines.push(`rollback ${p.rollback.status}: ${p.rollback.rolledBack} rolled back, ${p.rollback.stackGrew} left alone (stack grew), ${p.rollback.failed} failed, ${p.rollback.nothingToDo} had nothing to revert`);
  if (p.failures.length > 0) {
    lines.push('failures:');
    for (const f of p.failures.slice(0, 10)) lines.push(`  ${f.hostId} (${f.wave}, ${f.stage}): ${f.code}: ${f.reason}`);
    if (p.failures.length > 10) lines.push(`  ... ${p.failures.length - 10} more (fleetpatch audit rollout ${p.rolloutId})`);
  }
  for (const d of p.decisions) lines.push(`${d.at} ${d.action} by ${d.by.id}${d.wave ? ` (wave ${d.wave})` : ''}: ${d.reason}`);
  return lines;
}
