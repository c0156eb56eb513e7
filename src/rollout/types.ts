/**
 * Shapes that cross the workflow boundary: workflow inputs, activity inputs and results, progress.
 * Pure types (plus tiny pure helpers), so workflow code can import them. Only build-ids and names
 * travel through Temporal histories, never payload bytes.
 */
import type { z } from 'zod';
import type { Budget } from './budget.ts';
import type { Actor } from '../domain/actor.ts';
import type { ErrorCode } from '../errors.ts';
import type { PreflightSummarySchema } from './progress-schema.ts';
import type { DependencyCheck, HostState, PayloadMeta, RolloutMode, StackEntry } from './matching.ts';
import type { HostSelector, WaveSpec } from './waves.ts';

export type { Actor, Budget, DependencyCheck, HostState, PayloadMeta, RolloutMode, StackEntry, HostSelector, WaveSpec };


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
  /** Of those, the gates whose approval must come from someone other than who started the rollout. */
  distinctApproverAfter?: string[];
  /** The plan says `allowUnsigned: true`: payloads need no signature by a trusted key. */
  allowUnsigned?: boolean;
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
  /** Always a catalogue code: what is not fleetpatch's or Xen's is INTERNAL (the reason keeps its words). */
  code: ErrorCode;
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
  /** What this rollout applied on the host and is still applied, bottom to top (REPLACE: the one payload). */
  applied: StackEntry[];
  /** A failed host is restored to its former stack at once; this says how that went. */
  restore?: RestoreOutcome;
  /** The batch lost its claim on the host (another batch finishes it): not an outcome to count. */
  lostClaim?: boolean;
}

/** What calling a hypervisor function returned, as the host reported it. */
export interface CallOutcome {
  kind: 'string' | 'integer' | 'undefined';
  /** The string or the number (as text); null when the host could not tell. */
  value: string | null;
  why?: string;
}

/** The host as it was just before a rollout changed anything on it: what a restore brings back. */
export interface FormerState {
  /** The applied stack, bottom first. */
  formerStack: StackEntry[];
  /** Every payload loaded (any state): a restore never unloads these for good. */
  formerLoaded: StackEntry[];
  /** What the plan's verify function returned then (null: the plan verifies nothing). */
  formerResult: CallOutcome | null;
}

export interface RestoreHostInput {
  rolloutId: string;
  hostId: string;
  former: FormerState;
  /** Build-ids the rollout brings: the only payloads a restore may revert and unload for good. */
  ours: string[];
  /** The plan's verify function: after the restore it must return what it returned before. */
  verifyCall?: string;
}

export interface RestoreStepDone {
  kind: 'revert' | 'unload' | 'upload' | 'apply';
  payload: StackEntry;
}

export interface RestoreOutcome {
  /**
   * restored: the host runs its former stack again, nothing of ours is loaded, the verify function
   * returns what it did before; nothing-to-do: it already did. The others say why it could not be:
   * someone else's payload sits above ours (stack-grew), a payload of the former stack cannot be
   * loaded again (unrecoverable), or a step was refused or did not give the former result (failed).
   */
  outcome: 'restored' | 'nothing-to-do' | 'stack-grew' | 'unrecoverable' | 'failed';
  steps: RestoreStepDone[];
  /** The applied stack the host reported at the end, bottom first. */
  stackNow: StackEntry[];
  formerStack: StackEntry[];
  reason?: string;
}

/** Restored or found as it was: the host is back where the rollout found it. */
export function isBack(r: Pick<RestoreOutcome, 'outcome'>): boolean {
  return r.outcome === 'restored' || r.outcome === 'nothing-to-do';
}

export interface HostRollbackInput {
  rolloutId: string;
  hostId: string;
  former: FormerState;
  ours: string[];
  verifyCall?: string;
}

export interface HostRollbackResult {
  hostId: string;
  outcome: 'rolled-back' | 'nothing-to-do' | 'stack-grew' | 'unrecoverable' | 'failed';
  /** Payloads reverted, in order. */
  reverted: StackEntry[];
  /** Payloads of the former stack applied again, bottom first. */
  reapplied: StackEntry[];
  stackNow: StackEntry[];
  formerStack: StackEntry[];
  reason?: string;
}

export type PreflightSummary = z.infer<typeof PreflightSummarySchema>;
export type PreflightWave = PreflightSummary['waves'][number];
export type PreflightStep = PreflightWave['steps'][number];

export interface ListedHost {
  hostId: string;
}
