/**
 * Rollouts from the operator's side, for every front end (the CLI, the HTTP API, the demo): read
 * a plan file, parse and store its payloads, start the rollout workflow under its deterministic
 * id, find it again, and read its progress.
 */
import path from 'node:path';
import { Client, WorkflowExecutionAlreadyStartedError, WorkflowNotFoundError, type WorkflowHandle } from '@temporalio/client';
import { WorkflowIdReusePolicy } from '@temporalio/common';
import { FleetpatchError, XenError, toCatalogued } from '../errors.ts';
import { EventStore } from '../events/store.ts';
import { PayloadStore } from '../events/payload-store.ts';
import { parsePayload, readSignature, verifyPayload, type PayloadSignature, type PublicKey } from '../payload/index.ts';
import { parsePlan, PayloadNameSchema, type Plan } from '../rollout/plan.ts';
import { FINAL_STATUSES, type RolloutProgress } from '../rollout/progress.ts';
import { payloadNameFromFile, resolvePlan, rolloutIdFor } from './resolve.ts';
import type { Actor, PayloadMeta, ResolvedPlan } from '../rollout/types.ts';
import type { Pool } from '../runtime/database.ts';
import { loadConfig } from '../runtime/config.ts';
import { fileExists, readInputFile, readInputText } from '../runtime/files.ts';
import { connectTemporalClient, type TemporalEndpoint } from '../runtime/temporal-connection.ts';
import { loadTrustedKeys } from './trusted-keys.ts';
import { requireRecordable } from './decision-text.ts';
import { checkPlanWebhook } from '../../activities/webhooks.ts';
import { progressQuery } from '../../workflows/messages.ts';
import type { rolloutWorkflow } from '../../workflows/rollout.ts';

export const ROLLOUT_WORKFLOW_PREFIX = 'rollout-';

export function workflowIdOf(rolloutId: string): string {
  return rolloutId.startsWith(ROLLOUT_WORKFLOW_PREFIX) ? rolloutId : `${ROLLOUT_WORKFLOW_PREFIX}${rolloutId}`;
}

export function rolloutIdOf(idOrWorkflowId: string): string {
  return idOrWorkflowId.startsWith(ROLLOUT_WORKFLOW_PREFIX) ? idOrWorkflowId.slice(ROLLOUT_WORKFLOW_PREFIX.length) : idOrWorkflowId;
}

/** Reads and validates a plan file (at most 1 MiB, a regular file); payload files are relative to the plan's directory. */
export async function readPlanFile(file: string): Promise<{ plan: Plan; dir: string; file: string }> {
  const text = await readInputText(file, 'plan');
  return { plan: parsePlan(text, file), dir: path.dirname(path.resolve(file)), file };
}

export interface ResolveOptions {
  pool?: Pool;
  actor: Actor;
  /** False: parse and check only (the dry-run `plan` command changes and records nothing). */
  store: boolean;
  /** The plan file, for messages (default: the plan's directory). */
  planFile?: string;
  /** Keys payload signatures must verify against; default: FLEETPATCH_TRUSTED_KEYS. */
  trustedKeys?: readonly PublicKey[];
}

/** One payload reference of the plan, resolved: what the workflow needs, or why it cannot be. */
type Resolved = { ok: true; meta: PayloadMeta } | { ok: false; error: FleetpatchError };

/**
 * Every payload of the plan, checked before anything starts:
 * - a file: read (a regular file of at most 2 MiB), parsed exactly as Xen's upload would, its
 *   name checked as Xen does, its signature (`signature:`, else `<file>.sig` when present) read;
 * - stored (when `store`) by build-id with that signature, then read back from the payload store
 *   and verified against the digest recorded when it was stored and against the trusted keys
 *   (unless the plan says allowUnsigned: true); a refusal is recorded as PayloadRefused;
 * - a build-id: the stored payload, verified the same way.
 * Every problem of every payload is reported at once, naming the plan file.
 */
export async function resolvePlanPayloads(plan: Plan, dir: string, opts: ResolveOptions): Promise<ResolvedPlan> {
  const payloads = opts.pool ? new PayloadStore(new EventStore(opts.pool)) : undefined;
  const source = opts.planFile ?? `the plan in ${dir}`;
  // Before any payload is stored: this process's configuration knows which ports are its services'.
  if (plan.notify) await checkPlanWebhook(plan.notify.webhook, source);
  // Read only when a signature is to be checked, so a plan with missing files says so first.
  let keys: Promise<readonly PublicKey[]> | undefined;
  const trustedKeys = () => (keys ??= opts.trustedKeys ? Promise.resolve(opts.trustedKeys) : loadTrustedKeys(loadConfig()));
  const verifyOptions = async () => ({ trustedKeys: await trustedKeys(), allowUnsigned: plan.allowUnsigned, actor: opts.actor, record: opts.store });

  const resolveOne = async (ref: Plan['payloads'][number]): Promise<PayloadMeta> => {
    if ('buildId' in ref) {
      if (!payloads) throw new FleetpatchError('PAYLOAD_NOT_FOUND', `build-id ${ref.buildId}: a stored payload needs the database`);
      const stored = (await payloads.verify(ref.buildId, await verifyOptions())).payload;
      if (!stored.depends) throw new FleetpatchError('PAYLOAD_NOT_FOUND', `stored payload ${ref.buildId} has no recorded depends`);
      return { name: stored.name, buildId: stored.buildId, depends: stored.depends, xenDepends: stored.xenDepends };
    }
    const file = path.resolve(dir, ref.file);
    const bytes = await readInputFile(file, 'payload');
    const name = ref.name ?? payloadNameFromFile(file);
    const named = PayloadNameSchema.safeParse(name);
    if (!named.success) throw new FleetpatchError('PLAN_INVALID', `the payload name "${name.slice(0, 40)}" taken from the file name is not one Xen accepts (1 to 127 bytes); give it a name: with \`name:\``);
    const parsed = parsePayload(bytes, { name });
    const signature = await readSignatureFor(file, ref.signature ? path.resolve(dir, ref.signature) : undefined);
    const meta: PayloadMeta = { name, buildId: parsed.buildIdHex, depends: parsed.dependsHex, xenDepends: parsed.xenDependsHex };
    if (opts.store && payloads) {
      await payloads.put(
        { name, buildId: meta.buildId, bytes, depends: meta.depends, xenDepends: meta.xenDepends, signature: signature ? { algorithm: signature.algorithm, keyId: signature.keyId, signature: signature.signature, sha256: signature.sha256 } : null },
        { actor: opts.actor },
      );
      await payloads.verify(meta.buildId, await verifyOptions());
    } else {
      checkFileSignature(name, meta.buildId, bytes, signature, await verifyOptions());
    }
    return meta;
  };

  const results: Resolved[] = [];
  for (const ref of plan.payloads) {
    try {
      results.push({ ok: true, meta: await resolveOne(ref) });
    } catch (e) {
      results.push({ ok: false, error: toCatalogued(e) });
    }
  }
  const problems = results.flatMap((r, i) => {
    if (r.ok) return [];
    const ref = plan.payloads[i]!;
    return [{ where: 'file' in ref ? `payloads[${i}].file ${ref.file}` : `payloads[${i}].buildId ${ref.buildId}`, error: r.error }];
  });
  if (problems.length > 0) {
    const words = (e: FleetpatchError) => (e.code === 'USAGE' || e.code === 'ARGUMENT' || e.code === 'PLAN_INVALID' ? e.message : e instanceof XenError ? e.describe() : `${e.code}: ${e.message}`);
    const message = `${source}: ${problems.map((p) => `${p.where}: ${words(p.error)}`).join('; ')}`;
    // One problem keeps its own code (EINVAL, SIGNATURE_INVALID, PAYLOAD_TAMPERED, ...); several are PLAN_INVALID.
    const only = problems.length === 1 ? problems[0]!.error : undefined;
    const code = only && only.code !== 'USAGE' && only.code !== 'ARGUMENT' ? only.code : 'PLAN_INVALID';
    throw new FleetpatchError(code, message, { plan: source, problems: problems.map((p) => ({ where: p.where, code: p.error.code, message: p.error.message, ...p.error.details })) });
  }
  const metas = results.map((r) => (r as { meta: PayloadMeta }).meta);
  let i = 0;
  const resolved = await resolvePlan(plan, async () => metas[i++]!);
  return resolved;
}

/** The payload's detached signature: the one the plan names, else `<file>.sig` when there is one. */
async function readSignatureFor(file: string, named: string | undefined): Promise<PayloadSignature | null> {
  const sigFile = named ?? `${file}.sig`;
  if (!named && !(await fileExists(sigFile, 'signature'))) return null;
  return readSignature(await readInputText(sigFile, 'signature'));
}

/** The dry run's signature check: the file's own signature against the trusted keys, nothing recorded. */
function checkFileSignature(name: string, buildId: string, bytes: Uint8Array, signature: PayloadSignature | null, opts: { trustedKeys: readonly PublicKey[]; allowUnsigned: boolean }): void {
  if (!signature) {
    if (opts.allowUnsigned) return;
    throw new FleetpatchError('SIGNATURE_INVALID', `payload ${name} (build-id ${buildId}) is not signed; sign it (fleetpatch payload sign) with a trusted key, or say allowUnsigned: true in the plan`, { buildId });
  }
  if (opts.allowUnsigned && !opts.trustedKeys.some((k) => k.keyId === signature.keyId)) return;
  try {
    verifyPayload(bytes, signature, opts.trustedKeys);
  } catch (e) {
    throw new FleetpatchError('SIGNATURE_INVALID', `payload ${name} (build-id ${buildId}): ${(e as Error).message}`, { buildId, keyId: signature.keyId });
  }
}

/** A Temporal client for the endpoint (Services.temporal): TLS and API key as configured. */
export async function connectClient(endpoint: TemporalEndpoint): Promise<{ client: Client; close: () => Promise<void> }> {
  const { namespace } = endpoint;
  const connection = await connectTemporalClient(endpoint);
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
  requireRecordable('rollout start', opts.requestedBy, opts.reason);
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
