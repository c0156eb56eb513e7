/**
 * Request and response shapes of the HTTP API that are not already the domain's own (the plan is
 * PlanSchema, progress is RolloutProgressSchema, errors are ApiErrorSchema). Request objects are
 * strict: an unknown field is refused, named.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { FastifyBaseLogger, FastifyInstance, RawServerDefault } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';

export type Api = FastifyInstance<RawServerDefault, IncomingMessage, ServerResponse, FastifyBaseLogger, ZodTypeProvider>;

/** Recorded as is and inside longer sentences, like the CLI's --reason. */
export const ReasonSchema = z.string().trim().min(1, 'say why: a reason is required and is recorded').max(1000);
export const RolloutIdSchema = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/, 'a rollout id: letters, digits, ".", "_", "-"; at most 128');
export const HostIdSchema = z.string().min(1).max(128);
export const BuildIdSchema = z.string().regex(/^(?:[0-9a-f]{2}){1,128}$/, 'a build-id in lowercase hex');
export const InstantSchema = z.string().refine((v) => /^\d{4}-\d{2}-\d{2}/.test(v) && Number.isFinite(Date.parse(v)), 'an ISO 8601 time such as 2025-03-01T10:00:00Z');
export const LimitSchema = z.coerce.number().int().min(1).max(100_000);

export const RolloutParams = z.object({ id: RolloutIdSchema }).strict();
export const HostParams = z.object({ hostId: HostIdSchema }).strict();

export const ActorOut = z.object({ kind: z.string(), id: z.string() });

/** An event as recorded, with a sentence saying what it means. */
export const RecordedEventOut = z.object({
  globalPosition: z.number(),
  streamId: z.string(),
  streamPosition: z.number(),
  eventId: z.string(),
  recordedAt: z.string(),
  description: z.string(),
  event: z.looseObject({ type: z.string(), occurredAt: z.string(), actor: ActorOut }),
});

export const EventLineOut = z.object({
  globalPosition: z.number(),
  streamId: z.string(),
  streamPosition: z.number(),
  type: z.string(),
  recordedAt: z.string(),
  actor: z.string(),
  description: z.string(),
  rolloutId: z.string().nullable(),
  hostId: z.string().nullable(),
});

export const HostViewOut = z.object({
  id: z.string(),
  labels: z.record(z.string(), z.string()),
  state: z.enum(['unknown', 'idle', 'patching', 'patched', 'already', 'failed', 'incompatible', 'rolled-back', 'not-restored', 'drift']),
  rolloutId: z.string().nullable(),
  reason: z.string().nullable(),
  stack: z.array(z.string()),
  since: z.string().nullable(),
});

const PayloadRefOut = z.object({ name: z.string(), buildId: z.string() });
export const HostStackOut = z.object({
  hostId: z.string(),
  hypervisorBuildId: z.string().nullable(),
  loaded: z.array(PayloadRefOut.extend({ state: z.string() })),
  applied: z.array(PayloadRefOut),
  anomalies: z.array(z.object({ streamPosition: z.number(), type: z.string(), description: z.string() })),
  streamPosition: z.number(),
  updatedAt: z.string().nullable(),
});

export const RolloutSummaryOut = z.looseObject({
  rolloutId: z.string(),
  planName: z.string().nullable(),
  status: z.string(),
  startedAt: z.string().nullable(),
  finishedAt: z.string().nullable(),
  startedBy: ActorOut.nullable(),
  hosts: z.object({ patched: z.number(), already: z.number(), failed: z.number(), unreachable: z.number() }),
});

export const DifferenceOut = z.object({ where: z.string(), index: z.number().optional(), replayed: z.string().nullable(), live: z.string().nullable(), description: z.string() });
