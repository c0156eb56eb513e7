/**
 * Shapes that cross the workflow boundary: workflow inputs, activity inputs and results, progress.
 * Pure types (plus tiny pure helpers), so workflow code can import them. Only build-ids and names
 * travel through Temporal histories, never payload bytes.
 */
import type { Budget } from './budget.ts';
import type { DependencyCheck, HostState, PayloadMeta, RolloutMode, StackEntry } from './matching.ts';
import type { HostSelector, WaveSpec } from './waves.ts';

export type { Budget, DependencyCheck, HostState, PayloadMeta, RolloutMode, StackEntry, HostSelector, WaveSpec };

/** Who did something: a person (by name), a workflow, or fleetpatch itself. */
export interface Actor {
  kind: 'user' | 'workflow' | 'system';
  id: string;
}

export interface VerifySpec {
  /** The function whose emulated result proves the patch is live, e.g. xen_extra_version. */
  call: string;
  expect: string;
}

/** A validated plan with its payload files resolved to stored payloads (build-ids, not bytes). */
export interface ResolvedPlan {
  name: string;
  mode: RolloutMode;
  payloads: PayloadMeta[];
  hosts: HostSelector;
  waves: WaveSpec[];
  concurrency: number;
  budget: { perWave: Budget; total: Budget };
  bakeMs: number;
  /** Names of the waves after which a person must approve before the next wave starts. */
  approvalAfter: string[];
  verify?: VerifySpec;
  onFailure: 'rollback' | 'pause';
  notifyWebhook?: string;
}

export interface RolloutInput {
  rolloutId: string;
  plan: ResolvedPlan;
  requestedBy: Actor;
  reason?: string;
}

/** Where a host patch failed, in words, with the errno or fleetpatch code behind it. */
export interface HostFailure {
  stage: 'read' | 'upload' | 'check' | 'apply' | 'replace' | 'verify' | 'revert';
  code: string;
  reason: string;
  unreachable: boolean;
}

export interface HostPatchInput {
  rolloutId: string;
  hostId: string;
  mode: RolloutMode;
  payloads: PayloadMeta[];
  verify?: VerifySpec;
  wave: number;
  waveName: string;
}

export interface HostPatchResult {
  hostId: string;
  outcome: 'patched' | 'already' | 'failed';
  failure?: HostFailure;
  /** What this rollout applied on the host, bottom to top (REPLACE: the one payload). */
  applied: StackEntry[];
  /** For REPLACE: the stack the host had before, bottom to top. */
  replacedStack?: StackEntry[];
  /** True when a failure after apply was cleaned up by reverting what was applied. */
  revertedAfterFailure?: boolean;
}

export interface HostRollbackInput {
  rolloutId: string;
  hostId: string;
  mode: RolloutMode;
  /** Payloads the rollout applied on this host, bottom to top. */
  applied: StackEntry[];
  replacedStack?: StackEntry[];
  verify?: VerifySpec;
}

export interface HostRollbackResult {
  hostId: string;
  outcome: 'rolled-back' | 'nothing-to-do' | 'stack-grew' | 'failed';
  reverted: StackEntry[];
  /** REPLACE rollbacks: what could be re-applied of the former stack. */
  reapplied: StackEntry[];
  reason?: string;
}

export interface PreflightStep {
  group: string | null;
  size: number;
}

export interface PreflightWave {
  name: string;
  concurrency: number;
  steps: PreflightStep[];
}

/** What the preflight found; the per-host detail is stored in PostgreSQL, not in history. */
export interface PreflightSummary {
  selected: number;
  /** Hosts that need the patch and are planned into waves (unreachable ones included). */
  targets: number;
  alreadyPatched: number;
  incompatible: number;
  unreachable: number;
  unknownHostIds: string[];
  waves: PreflightWave[];
  /** A few incompatible hosts with the reason in words, for the report. */
  incompatibleSamples: { hostId: string; reason: string }[];
}

export interface ListedHost {
  hostId: string;
}
