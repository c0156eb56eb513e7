/**
 * From a validated plan to what the workflow runs: payload references replaced by their metadata
 * (name, build-id, depends, xen_depends), defaults made explicit. The caller supplies how a
 * reference is looked up (a file parsed and stored, or a build-id already in the store).
 */
import { createHash } from 'node:crypto';
import { FleetpatchError } from '../errors.ts';
import { NO_FAILURES } from '../rollout/budget.ts';
import type { PayloadMeta } from '../rollout/matching.ts';
import type { Plan } from '../rollout/plan.ts';
import type { ResolvedPlan } from '../rollout/types.ts';

export type PayloadRef = Plan['payloads'][number];

/** Xen's xen-livepatch `load` convention: the file's basename without its last extension. */
export function payloadNameFromFile(file: string): string {
  const base = file.split('/').pop()!;
  const dot = base.lastIndexOf('.');
  return dot > 0 ? base.slice(0, dot) : base;
}

export async function resolvePlan(plan: Plan, lookup: (ref: PayloadRef) => Promise<PayloadMeta>): Promise<ResolvedPlan> {
  const payloads: PayloadMeta[] = [];
  for (const ref of plan.payloads) payloads.push(await lookup(ref));
  const seen = new Map<string, string>();
  for (const p of payloads) {
    const other = seen.get(p.name);
    if (other !== undefined && other !== p.buildId) {
      throw new FleetpatchError('PLAN_INVALID', `two different payloads are named "${p.name}"; Xen identifies loaded payloads by name, so give one of them another name`);
    }
    seen.set(p.name, p.buildId);
  }
  if (plan.mode === 'stack') {
    // Within each hypervisor's chain every payload must sit on the previous one.
    const byXen = new Map<string, PayloadMeta[]>();
    for (const p of payloads) byXen.set(p.xenDepends ?? '', [...(byXen.get(p.xenDepends ?? '') ?? []), p]);
    for (const chain of byXen.values()) {
      for (let i = 1; i < chain.length; i++) {
        if (chain[i]!.depends !== chain[i - 1]!.buildId) {
          throw new FleetpatchError('PLAN_INVALID', `stack mode: ${chain[i]!.name} depends on ${chain[i]!.depends.slice(0, 12)}…, not on the payload listed before it, ${chain[i - 1]!.name} (${chain[i - 1]!.buildId.slice(0, 12)}…)`);
        }
      }
    }
  }
  return {
    name: plan.name,
    mode: plan.mode,
    payloads,
    hosts: plan.hosts,
    waves: plan.waves,
    concurrency: plan.concurrency,
    budget: { perWave: plan.budget.perWave ?? NO_FAILURES, total: plan.budget.total ?? NO_FAILURES },
    bakeMs: plan.bake,
    approvalAfter: plan.gates.map((g) => g.after),
    // Only when a gate says so, so the ids of plans that do not stay what they were.
    ...(plan.gates.some((g) => g.requireDifferentApprover) ? { distinctApproverAfter: plan.gates.filter((g) => g.requireDifferentApprover).map((g) => g.after) } : {}),
    // Only when true, so the ids of plans that do not say it stay what they were.
    ...(plan.allowUnsigned ? { allowUnsigned: true } : {}),
    ...(plan.verify ? { verify: plan.verify } : {}),
    onFailure: plan.onFailure,
    ...(plan.notify ? { notifyWebhook: plan.notify.webhook } : {}),
  };
}

/**
 * The rollout id: the plan name plus a hash of everything that decides what the rollout does, so
 * starting the same rollout twice finds the first one instead of running it again.
 */
export function rolloutIdFor(plan: ResolvedPlan): string {
  const digest = createHash('sha256').update(canonicalJson(plan)).digest('hex').slice(0, 12);
  return `${plan.name}-${digest}`;
}

export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== 'object') return JSON.stringify(value);
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  const entries = Object.entries(value as Record<string, unknown>).filter(([, v]) => v !== undefined).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`;
}
