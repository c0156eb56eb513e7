/**
 * The rollout's live view as zod schemas: the shapes of progress.ts (RolloutProgress and what it
 * holds) and of the preflight's summary (types.ts), which are inferred from these. The HTTP API
 * answers with exactly these schemas and documents them in its OpenAPI document.
 *
 * A module of its own so that workflow code, which imports progress.ts, does not bundle zod:
 * progress.ts and types.ts import these schemas as types only.
 */
import { z } from 'zod';

import { ActorSchema } from '../domain/actor.ts';
import { DecisionSchema } from '../domain/decision.ts';
import { PayloadRefSchema as StackEntrySchema } from '../domain/payload-ref.ts';
import { RollbackCountsSchema, RollbackProblemSchema } from '../domain/rollback-counts.ts';

export { ActorSchema, DecisionSchema, StackEntrySchema };

export const RolloutStatusSchema = z.enum([
  'preflight',
  'running',
  'baking',
  'awaiting-approval',
  'paused',
  'rolling-back',
  'succeeded',
  'failed',
  'rolled-back',
  /** A rollback ran and some hosts it touched are not back to their former stack. */
  'rollback-incomplete',
  'aborted',
]);

export const WaveProgressSchema = z.object({
  name: z.string(),
  status: z.enum(['pending', 'running', 'succeeded', 'failed', 'skipped']),
  planned: z.number(),
  done: z.number(),
  patched: z.number(),
  already: z.number(),
  failed: z.number(),
  unreachable: z.number(),
});


export const PreflightSummarySchema = z.object({
    selected: z.number(),
    /** Hosts that need the patch and are planned into waves (unreachable ones included). */
    targets: z.number(),
    alreadyPatched: z.number(),
    incompatible: z.number(),
    unreachable: z.number(),
    unknownHostIds: z.array(z.string()),
    waves: z.array(z.object({ name: z.string(), concurrency: z.number(), steps: z.array(z.object({ group: z.string().nullable(), size: z.number() })) })),
    /** A few incompatible hosts with the reason in words, for the report. */
    incompatibleSamples: z.array(z.object({ hostId: z.string(), reason: z.string() })),
    /**
     * REPLACE reverts a host's whole stack; a payload with writable data comes back only through a
     * fresh upload, which needs bytes fleetpatch never had for payloads loaded outside it. Hosts
     * carrying such payloads (count, and a few with the payloads named), so an operator can store
     * their files first (`fleetpatch payload store`).
     */
    unrestorable: z.number().optional(),
    unrestorableSamples: z.array(z.object({ hostId: z.string(), payloads: z.array(z.string()) })).optional(),
  });

export const RollbackProgressSchema = RollbackCountsSchema.extend({
  /** `failed`: its workflow stopped on an error before every host had an outcome (`error` says why). */
  status: z.enum(['running', 'finished', 'failed']),
  requestedBy: ActorSchema,
  reason: z.string(),
  /** Hosts not back to their former stack: where each stands, where it should, and why. */
  problems: z.array(RollbackProblemSchema),
  /** When it was asked for after the rollout ended (a later `rollout rollback`). */
  startedAt: z.string().optional(),
  error: z.string().optional(),
});

/**
 * A repair of the ended rollout (`rollout repair`): its hosts, those that had lost the payload, and
 * what patching them again did. It runs as a wave of its own, named like the repair.
 */
export const RepairProgressSchema = z.object({
  name: z.string(),
  /** `failed`: its workflow stopped on an error (`stopReason` says why). */
  status: z.enum(['running', 'finished', 'failed']),
  requestedBy: ActorSchema,
  reason: z.string(),
  startedAt: z.string(),
  /** Hosts the rollout had patched, read again; those that no longer ran the payload. */
  checked: z.number(),
  lost: z.number(),
  patched: z.number(),
  failed: z.number(),
  /** Why it stopped before patching every lost host (a failure budget), or why its workflow failed. */
  stopReason: z.string().optional(),
});

export const RolloutProgressSchema = z.object({
    rolloutId: z.string(),
    planName: z.string(),
    status: RolloutStatusSchema,
    startedAt: z.string(),
    finishedAt: z.string().optional(),
    preflight: PreflightSummarySchema.optional(),
    waves: z.array(WaveProgressSchema),
    /** Where the next host comes from: wave, step within the wave, offset within the step. */
    cursor: z.object({ wave: z.number(), step: z.number(), offset: z.number() }),
    failures: z.array(z.object({ hostId: z.string(), wave: z.string(), stage: z.string(), code: z.string(), reason: z.string(), restore: z.string().optional() })),
    decisions: z.array(DecisionSchema),
    /** Why the rollout stopped, in words, when it did not succeed. */
    stopReason: z.string().optional(),
    /** Set while the rollout waits on its infrastructure (e.g. "PostgreSQL unreachable since ..."). */
    waiting: z.string().optional(),
    awaitingApprovalAfter: z.string().optional(),
    bakingUntil: z.string().optional(),
    rollback: RollbackProgressSchema.optional(),
    /** Repairs after the rollout ended, oldest first (read by `rollout status`, not kept by the workflow). */
    repairs: z.array(RepairProgressSchema).optional(),
    /** Continue-as-new generations so far (for diagnostics). */
    generation: z.number(),
    /** Failures a person accepted by resuming after the budget paused the rollout. */
    accepted: z.object({ wave: z.number(), waveFailures: z.number(), totalFailures: z.number() }).optional(),
  });
