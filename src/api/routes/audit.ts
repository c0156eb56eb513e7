/**
 * Every audit query the CLI has, over HTTP: a host's timeline, its stack as of a time or position,
 * dependency checks, where a payload runs, a rollout's report, hash-chain verification, replay
 * against the live host (GET compares; POST also records drift), and the events themselves.
 */
import { z } from 'zod';
import { FleetpatchError } from '../../errors.ts';
import { describeEvent } from '../../events/audit/describe.ts';
import { CHECK_OUTCOMES, dependencyChecks } from '../../events/audit/checks.ts';
import { replayHost, type ReadLiveState } from '../../events/audit/replay.ts';
import { rolloutReport } from '../../events/audit/rollout-report.ts';
import { hostStackAsOf, type AsOf } from '../../events/audit/stack-as-of.ts';
import { hostTimeline } from '../../events/audit/timeline.ts';
import { verifyChains } from '../../events/audit/verify.ts';
import { whereIsPayload } from '../../events/audit/where.ts';
import type { RecordedEvent } from '../../events/store.ts';
import { hostStateFromList } from '../../agent/live-state.ts';
import { ApiErrorSchema } from '../errors.ts';
import { actorOf } from '../auth.ts';
import type { ApiContext } from '../../app/api-context.ts';
import { BuildIdSchema, DifferenceOut, HostIdSchema, HostStackOut, InstantSchema, LimitSchema, RecordedEventOut, RolloutParams, RolloutSummaryOut, type Api } from '../schemas.ts';

const errors = { 400: ApiErrorSchema, 401: ApiErrorSchema, 403: ApiErrorSchema, 404: ApiErrorSchema, 409: ApiErrorSchema, 503: ApiErrorSchema };

export function described(e: RecordedEvent) {
  return { globalPosition: e.globalPosition, streamId: e.streamId, streamPosition: e.streamPosition, eventId: e.eventId, recordedAt: e.recordedAt, description: describeEvent(e.event), event: e.event };
}

/** The live state of a host through its agent (the fleet file says how to reach it). */
export function liveStateReader(ctx: ApiContext): ReadLiveState {
  return async (hostId) => {
    const fleet = await ctx.fleet();
    if (!fleet) throw new FleetpatchError('FLEET_FILE_INVALID', 'the API has no fleet file (FLEETPATCH_FLEET_FILE) to reach the hosts');
    const state = hostStateFromList(hostId, await fleet.host(hostId).listAll());
    return { hypervisorBuildId: state.hypervisorBuildId, appliedStack: state.applied, loaded: state.loaded };
  };
}

const ReplayOut = z.object({
  hostId: z.string(),
  replayed: HostStackOut,
  live: z.object({ hypervisorBuildId: z.string().optional(), appliedStack: z.array(z.object({ name: z.string(), buildId: z.string() })), loaded: z.array(z.looseObject({ name: z.string(), buildId: z.string(), state: z.string() })) }),
  differences: z.array(DifferenceOut),
  drift: z.object({ eventId: z.string(), streamPosition: z.number(), alreadyRecorded: z.boolean() }).nullable(),
});

export function auditRoutes(app: Api, ctx: ApiContext): void {
  app.get('/api/audit/timeline', {
    config: { role: 'viewer' },
    schema: {
      tags: ['audit'],
      summary: 'Every step on a host and its outcome in each rollout, in the global order',
      querystring: z.object({ host: HostIdSchema, limit: LimitSchema.optional() }).strict(),
      response: { 200: z.array(RecordedEventOut), ...errors },
    },
    handler: async (request) => (await hostTimeline(ctx.events, request.query.host, request.query.limit ? { limit: request.query.limit } : {})).map(described),
  });

  app.get('/api/audit/stack', {
    config: { role: 'viewer' },
    schema: {
      tags: ['audit'],
      summary: "A host's loaded payloads and applied stack replayed from its events: now, as recorded by a time, or as of a stream position",
      querystring: z
        .object({ host: HostIdSchema, at: InstantSchema.optional(), position: z.coerce.number().int().min(0).max(Number.MAX_SAFE_INTEGER).optional() })
        .strict()
        .refine((q) => q.at === undefined || q.position === undefined, { message: 'give at or position, not both', path: ['position'] }),
      response: { 200: z.object({ asOf: z.union([z.literal('now'), z.object({ at: z.string() }), z.object({ position: z.number() })]), state: HostStackOut }), ...errors },
    },
    handler: async (request) => {
      const q = request.query;
      const asOf: AsOf = q.at !== undefined ? { at: q.at } : q.position !== undefined ? { position: q.position } : 'now';
      return { asOf, state: await hostStackAsOf(ctx.events, q.host, asOf) };
    },
  });

  app.get('/api/audit/checks', {
    config: { role: 'viewer' },
    schema: {
      tags: ['audit'],
      summary: 'Recorded build-id dependency checks (expected, found, against whom, outcome), filtered',
      querystring: z
        .object({ host: HostIdSchema.optional(), payload: BuildIdSchema.optional(), rollout: z.string().max(200).optional(), outcome: z.enum(CHECK_OUTCOMES).optional(), limit: LimitSchema.optional() })
        .strict(),
      response: { 200: z.array(RecordedEventOut), ...errors },
    },
    handler: async (request) => {
      const q = request.query;
      const filter = { ...(q.host ? { hostId: q.host } : {}), ...(q.payload ? { buildId: q.payload } : {}), ...(q.rollout ? { rolloutId: q.rollout } : {}), ...(q.outcome ? { outcome: q.outcome } : {}) };
      return (await dependencyChecks(ctx.events, filter, { limit: q.limit ?? 1000 })).map(described);
    },
  });

  app.get('/api/audit/where', {
    config: { role: 'viewer' },
    schema: {
      tags: ['audit'],
      summary: 'Which hosts have a payload loaded or applied: now, or as recorded by a time',
      querystring: z.object({ payload: BuildIdSchema, at: InstantSchema.optional() }).strict(),
      response: { 200: z.array(z.object({ buildId: z.string(), hostId: z.string(), name: z.string(), state: z.string(), stackIndex: z.number().nullable(), stackHeight: z.number() })), ...errors },
    },
    handler: async (request) => whereIsPayload(ctx.events, request.query.payload, request.query.at ? { at: request.query.at } : {}),
  });

  app.get('/api/audit/rollouts/:id', {
    config: { role: 'viewer' },
    schema: {
      tags: ['audit'],
      summary: "A rollout's report from its events: waves, every host's outcome, decisions (who, why), rollback, failed checks",
      params: RolloutParams,
      response: {
        200: z.object({
          summary: RolloutSummaryOut,
          hosts: z.array(z.looseObject({ hostId: z.string() })),
          rollbacks: z.array(z.looseObject({ hostId: z.string() })),
          failedChecks: z.array(RecordedEventOut),
          checksTotal: z.number(),
        }),
        ...errors,
      },
    },
    handler: async (request) => {
      const r = await rolloutReport(ctx.events, request.params.id);
      return { summary: { ...r.summary }, hosts: r.hosts.map((h) => ({ ...h })), rollbacks: r.rollbacks.map((b) => ({ ...b })), failedChecks: r.failedChecks.map(described), checksTotal: r.checksTotal };
    },
  });

  app.get('/api/audit/verify', {
    config: { role: 'viewer' },
    schema: {
      tags: ['audit'],
      summary: 'Recompute every hash chain (or one stream\'s), re-hash every stored payload, check the global order',
      querystring: z.object({ stream: z.string().regex(/^(host|rollout|payload|access)-.{1,200}$/s, 'a stream name: host-<id>, rollout-<id>, payload-<build-id> or access-<token name>').optional() }).strict(),
      response: { 200: z.looseObject({ ok: z.boolean(), streams: z.number(), events: z.number(), headsDigest: z.string() }), ...errors },
    },
    handler: async (request) => ({ ...(await verifyChains(ctx.events, request.query.stream ? { streamId: request.query.stream } : {})) }),
  });

  app.get('/api/audit/replay', {
    config: { role: 'viewer' },
    schema: {
      tags: ['audit'],
      summary: 'Replay a host\'s events and compare with the live host (records nothing; POST records drift)',
      querystring: z.object({ host: HostIdSchema }).strict(),
      response: { 200: ReplayOut, ...errors },
    },
    handler: async (request) => replayHost(ctx.events, request.query.host, liveStateReader(ctx), { actor: actorOf(request), record: false }),
  });

  app.post('/api/audit/replay', {
    config: { role: 'operator' },
    schema: {
      tags: ['audit'],
      summary: 'Replay a host\'s events, compare with the live host, and record any difference as DriftDetected',
      body: z.object({ host: HostIdSchema }).strict(),
      response: { 200: ReplayOut, ...errors },
    },
    handler: async (request) => replayHost(ctx.events, request.body.host, liveStateReader(ctx), { actor: actorOf(request), record: true }),
  });

  app.get('/api/audit/events', {
    config: { role: 'viewer' },
    schema: {
      tags: ['audit'],
      summary: 'Events: one stream in order, or the whole store in its global order after a position',
      querystring: z
        .object({
          stream: z.string().min(1).max(300).optional(),
          after: z.coerce.number().int().min(0).max(Number.MAX_SAFE_INTEGER).optional().describe('global position of the last event already read (whole store)'),
          limit: LimitSchema.optional(),
        })
        .strict(),
      response: { 200: z.array(RecordedEventOut), ...errors },
    },
    handler: async (request) => {
      const q = request.query;
      const limit = Math.min(q.limit ?? 500, 10_000);
      const events = q.stream !== undefined ? (await ctx.events.readStream(q.stream)).slice(-limit) : await ctx.events.readAll(q.after ?? 0, limit);
      return events.map(described);
    },
  });
}
