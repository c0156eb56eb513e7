/**
 * Which payload build a host gets, from its live state: the heart of heterogeneous rollouts.
 *
 * Xen applies a payload only on top of the build-id it names in `depends`: the top of the host's
 * applied stack, or the hypervisor's own build-id when the stack is empty. Its `xen_depends` must
 * equal the hypervisor's build-id (checked at upload). REPLACE needs `depends` = the hypervisor.
 * Every comparison made here is returned as a DependencyCheck so callers can record it. Pure.
 */

import type { DependencyCheck } from '../domain/dependency-check.ts';
import type { PayloadMeta, StackEntry } from '../domain/payload-ref.ts';

export type { DependencyCheck, PayloadMeta, StackEntry };

export interface HostState {
  hostId: string;
  hypervisorBuildId: string;
  /** Applied payloads, bottom of the stack first. */
  applied: StackEntry[];
  /** Every loaded payload (CHECKED or APPLIED), in upload order. */
  loaded: (StackEntry & { state: 'CHECKED' | 'APPLIED'; /** Xen's safe_to_reapply, when the reader knows it. */ safeToReapply?: boolean })[];
  /** The host's boot identity, when the reader knows it: a new id means the stack was lost. */
  boot?: { id: string; at: string };
}

export type RolloutMode = 'apply' | 'replace' | 'stack';

export type Assignment =
  /** Apply these payloads in order (mode apply: one; mode stack: the rest of the chain). */
  | { kind: 'apply'; payloads: PayloadMeta[]; checks: DependencyCheck[] }
  /** REPLACE the whole stack with this payload. */
  | { kind: 'replace'; payload: PayloadMeta; checks: DependencyCheck[] }
  /** Nothing to do: the host already runs what the rollout brings. */
  | { kind: 'already'; buildIds: string[]; checks: DependencyCheck[] }
  /** No build fits: left alone and reported by the preflight. */
  | { kind: 'incompatible'; reason: string; checks: DependencyCheck[] };

export function topOf(host: HostState): { buildId: string; against: DependencyCheck['against'] } {
  const top = host.applied[host.applied.length - 1];
  return top ? { buildId: top.buildId, against: { kind: 'payload', name: top.name, buildId: top.buildId } } : { buildId: host.hypervisorBuildId, against: { kind: 'hypervisor' } };
}

function check(payload: PayloadMeta, on: DependencyCheck['on'], expected: string, found: string, against: DependencyCheck['against']): DependencyCheck {
  return { payload: { name: payload.name, buildId: payload.buildId }, expected, found, against, on, outcome: expected === found ? 'match' : 'mismatch' };
}

export function short(buildId: string): string {
  return buildId.length > 12 ? `${buildId.slice(0, 12)}…` : buildId;
}

function describeTop(against: DependencyCheck['against'], buildId: string): string {
  return against.kind === 'hypervisor' ? `the hypervisor (${short(buildId)}), the stack being empty` : `the top of the stack, ${against.name} (${short(buildId)})`;
}

/** The builds built for this host's hypervisor, plus a check per build saying so or not. */
function forThisHypervisor(payloads: PayloadMeta[], host: HostState): { fitting: PayloadMeta[]; checks: DependencyCheck[] } {
  const checks = payloads.map((p) => check(p, 'xen_depends', p.xenDepends ?? '', host.hypervisorBuildId, { kind: 'hypervisor' }));
  return { fitting: payloads.filter((p) => p.xenDepends === host.hypervisorBuildId), checks };
}

export function assignPayload(mode: RolloutMode, payloads: PayloadMeta[], host: HostState): Assignment {
  const appliedIds = new Set(host.applied.map((e) => e.buildId));
  const { fitting, checks: xenChecks } = forThisHypervisor(payloads, host);
  const top = topOf(host);
  if (fitting.length === 0) {
    return {
      kind: 'incompatible',
      reason: `no payload in the rollout was built for this hypervisor (${short(host.hypervisorBuildId)}); builds target ${[...new Set(payloads.map((p) => (p.xenDepends ? short(p.xenDepends) : 'no xen_depends')))].join(', ')}`,
      checks: xenChecks,
    };
  }

  if (mode === 'replace') {
    const already = fitting.find((p) => host.applied.length === 1 && host.applied[0]!.buildId === p.buildId);
    if (already) return { kind: 'already', buildIds: [already.buildId], checks: [] };
    const checks = fitting.map((p) => check(p, 'depends', p.depends, host.hypervisorBuildId, { kind: 'hypervisor' }));
    const chosen = fitting.find((p) => p.depends === host.hypervisorBuildId);
    if (!chosen) {
      return { kind: 'incompatible', reason: `a REPLACE payload must depend on the hypervisor's build-id ${short(host.hypervisorBuildId)}; ${fitting.map((p) => `${p.name} depends on ${short(p.depends)}`).join(', ')}`, checks };
    }
    return { kind: 'replace', payload: chosen, checks: checks.filter((c) => c.payload.buildId === chosen.buildId) };
  }

  if (mode === 'apply') {
    const already = fitting.filter((p) => appliedIds.has(p.buildId));
    if (already.length > 0) return { kind: 'already', buildIds: already.map((p) => p.buildId), checks: [] };
    const checks = fitting.map((p) => check(p, 'depends', p.depends, top.buildId, top.against));
    const matching = fitting.filter((p) => p.depends === top.buildId);
    if (matching.length === 0) {
      return {
        kind: 'incompatible',
        reason: `no build depends on ${describeTop(top.against, top.buildId)}: ${fitting.map((p) => `${p.name} depends on ${short(p.depends)}`).join(', ')}`,
        checks,
      };
    }
    const chosen = matching[0]!;
    return { kind: 'apply', payloads: [chosen], checks: checks.filter((c) => c.payload.buildId === chosen.buildId) };
  }

  // stack: the fitting builds, in plan order, form a chain; apply whatever part is missing.
  const chain = fitting;
  const lastApplied = chain.reduce((idx, p, i) => (appliedIds.has(p.buildId) ? i : idx), -1);
  if (lastApplied === chain.length - 1) return { kind: 'already', buildIds: chain.map((p) => p.buildId), checks: [] };
  const start = chain.findIndex((p) => p.depends === top.buildId);
  if (start === -1) {
    const checks = chain.map((p) => check(p, 'depends', p.depends, top.buildId, top.against));
    return { kind: 'incompatible', reason: `no payload of the stack depends on ${describeTop(top.against, top.buildId)}`, checks };
  }
  const rest = chain.slice(start);
  for (let i = 1; i < rest.length; i++) {
    if (rest[i]!.depends !== rest[i - 1]!.buildId) {
      return {
        kind: 'incompatible',
        reason: `the stack is broken: ${rest[i]!.name} depends on ${short(rest[i]!.depends)}, not on ${rest[i - 1]!.name} (${short(rest[i - 1]!.buildId)})`,
        checks: [check(rest[i]!, 'depends', rest[i]!.depends, rest[i - 1]!.buildId, { kind: 'payload', name: rest[i - 1]!.name, buildId: rest[i - 1]!.buildId })],
      };
    }
  }
  return { kind: 'apply', payloads: rest, checks: [check(rest[0]!, 'depends', rest[0]!.depends, top.buildId, top.against)] };
}
