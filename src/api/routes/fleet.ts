/**
 * The fleet and its hosts for the dashboard: the grid (every host, its labels and the state its
 * events say), one host in full (live stack from the host itself, stack replayed from its events,
 * every dependency check with expected, found and against whom), and the live stream of changes
 * (server-sent events).
 */
import { z } from 'zod';
import { toCatalogued } from '../../errors.ts';
import { compareStacks } from '../../events/audit/replay.ts';
import { dependencyChecks } from '../../events/audit/checks.ts';
import { hostStackAsOf } from '../../events/audit/stack-as-of.ts';
import { hostTimeline } from '../../events/audit/timeline.ts';
import { hostSnapshot } from '../../events/projections/host-stack.ts';
import { ApiErrorSchema } from '../errors.ts';
import type { ApiContext } from '../../app/api-context.ts';
import type { LiveView } from '../live.ts';
import type { LiveStreams } from '../live-streams.ts';
import { described, liveStateReader } from './audit.ts';
import { DifferenceOut, EventLineOut, HostParams, HostStackOut, HostViewOut, RecordedEventOut, RolloutIdSchema, type Api } from '../schemas.ts';

const errors = { 400: ApiErrorSchema, 401: ApiErrorSchema, 403: ApiErrorSchema, 404: ApiErrorSchema, 503: ApiErrorSchema };

export function fleetRoutes(app: Api, ctx: ApiContext, view: LiveView, streams: LiveStreams): void {
  app.get('/api/fleet', {
    config: { role: 'viewer' },
    schema: {
      tags: ['fleet'],
      summary: 'Every host with its labels and the state its events say (for the grid), and the most recent events',
      response: { 200: z.object({ hosts: z.array(HostViewOut), labels: z.array(z.string()), recent: z.array(EventLineOut) }), ...errors },
    },
    handler: async () => {
      await view.poll();
      const hosts = view.fleet();
      const labels = [...new Set(hosts.flatMap((h) => Object.keys(h.labels)))].sort();
      return { hosts, labels, recent: view.recent.slice(-50) };
    },
  });

  app.get('/api/hosts/:hostId', {
    config: { role: 'viewer' },
    schema: {
      tags: ['fleet'],
      summary: 'One host: its live stack (asked now), the stack replayed from its events, the differences, every dependency check, its timeline',
      params: HostParams,
      response: {
        200: z.object({
          host: HostViewOut.nullable(),
          live: z.union([
            z.object({ ok: z.literal(true), hypervisorBuildId: z.string().optional(), applied: z.array(z.object({ name: z.string(), buildId: z.string() })), loaded: z.array(z.looseObject({ name: z.string(), buildId: z.string(), state: z.string() })) }),
            z.object({ ok: z.literal(false), code: z.string(), reason: z.string() }),
          ]),
          replayed: HostStackOut,
          differences: z.array(DifferenceOut),
          checks: z.array(RecordedEventOut),
          timeline: z.array(RecordedEventOut),
        }),
        ...errors,
      },
    },
    handler: async (request) => {
      const id = request.params.hostId;
      const [replayed, checks, timeline, live] = await Promise.all([
        hostStackAsOf(ctx.events, id),
        dependencyChecks(ctx.events, { hostId: id }, { limit: 500 }),
        hostTimeline(ctx.events, id, { limit: 500 }),
        liveStateReader(ctx)(id).then(
          (s) => ({ ok: true as const, ...(s.hypervisorBuildId ? { hypervisorBuildId: s.hypervisorBuildId } : {}), applied: s.appliedStack, loaded: s.loaded }),
          (e: unknown) => {
            const c = toCatalogued(e);
            return { ok: false as const, code: c.code, reason: c.code === 'INTERNAL' ? 'the host could not be read' : c.message };
          },
        ),
      ]);
      const differences = live.ok ? compareStacks(hostSnapshot(replayed), { ...(live.hypervisorBuildId ? { hypervisorBuildId: live.hypervisorBuildId } : {}), appliedStack: live.applied, loaded: live.loaded as never }) : [];
      return { host: view.host(id) ?? null, live, replayed, differences, checks: checks.map(described).reverse(), timeline: timeline.map(described) };
    },
  });

  app.get('/api/stream', {
    config: { role: 'viewer' },
    schema: {
      tags: ['fleet'],
      summary:
        'Server-sent events (text/event-stream): `snapshot` (the grid) at once, then `hosts` (hosts whose state changed), `events` (new events, in the global order), `rollout` (the watched rollout\'s live progress when it changes); a comment every 15 s keeps proxies from closing it; `closed` (a catalogue error) ends it when its token is revoked or the API shuts down',
      querystring: z.object({ rollout: RolloutIdSchema.optional().describe('a rollout whose live progress to push') }).strict(),
    },
    handler: async (request, reply) => streams.serve(request, reply, request.query.rollout),
  });
}
