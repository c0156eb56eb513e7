/**
 * The HTTP API (fastify, request and response bodies validated by the same zod schemas the CLI
 * and workflows use, OpenAPI at /openapi.json), the dashboard it serves, /metrics, and the
 * server-sent events behind the dashboard.
 *
 * Requests: JSON only (application/json), at most 1 MiB (payload uploads: 3 MiB), objects strict
 * (an unknown field is refused, named), no text PostgreSQL cannot store (storable.ts), bounded in
 * time (connection.ts); every refusal is JSON from the error catalogue, also those made before any
 * route (a URL that cannot be decoded, a request too slow). Routes each name the least role they
 * need (auth.ts); `routes` lists them with their roles.
 */
import fastifySwagger from '@fastify/swagger';
import Fastify, { type FastifyReply } from 'fastify';
import { jsonSchemaTransform, serializerCompiler, validatorCompiler, type ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { FleetpatchError } from '../errors.ts';
import { authenticator, type RouteRole } from './auth.ts';
import type { ApiContext } from '../app/api-context.ts';
import { LIMITS, SECURITY_HEADERS, clientErrorHandler, limitOptions, stopReadingUnreadBody, refuseBodyWithoutUse, type ApiLimits } from './connection.ts';
import { dashboardRoutes } from './dashboard.ts';
import { ApiErrorSchema, MAX_PATH_SEGMENT, apiError, toApiError } from './errors.ts';
import { LiveView } from './live.ts';
import { LiveStreams } from './live-streams.ts';
import { apiMetrics } from './metrics.ts';
import { adminRoutes } from './routes/admin.ts';
import { auditRoutes } from './routes/audit.ts';
import { enrollRoutes } from './routes/enroll.ts';
import { fleetRoutes } from './routes/fleet.ts';
import { rolloutRoutes } from './routes/rollouts.ts';
import type { Api } from './schemas.ts';
import { refuseUnstorable } from './storable.ts';

export const BODY_LIMIT = 1024 * 1024;

export interface RouteInfo {
  method: string;
  url: string;
  role: RouteRole;
}

export interface ApiServer {
  app: Api;
  view: LiveView;
  streams: LiveStreams;
  routes: RouteInfo[];
}

export interface ApiOptions {
  /** Behind a reverse proxy: trust its X-Forwarded-* headers (true, or the proxy's addresses, comma-separated). */
  trustProxy?: boolean | string;
  /** How often the live view reads new events (ms). */
  pollMs?: number;
  /** Time limits other than the API's own (LIMITS); tests shorten them. */
  limits?: Partial<ApiLimits>;
}

export async function buildApi(ctx: ApiContext, opts: ApiOptions = {}): Promise<ApiServer> {
  const limits: ApiLimits = { ...LIMITS, ...opts.limits };
  const app = Fastify({
    bodyLimit: BODY_LIMIT,
    ...limitOptions(limits),
    trustProxy: opts.trustProxy ?? false,
    // Requests are not logged one by one; errors and decisions are, through the context's logger.
    logger: false,
    // Deeply nested or huge JSON is refused by size; prototype pollution by the parser itself.
    onProtoPoisoning: 'error',
    onConstructorPoisoning: 'error',
    // Fastify's own 503 while closing is not the catalogue's; the onRequest hook below answers instead.
    return503OnClosing: false,
    // Long enough for every schema to see (and name) a parameter that is too long; longer still is refused as a URL.
    routerOptions: { ignoreTrailingSlash: true, maxParamLength: MAX_PATH_SEGMENT },
    // Answers made before any route (the path cannot be decoded, a segment too long) in the catalogue's shape.
    frameworkErrors: (error, request, reply) => {
      const { status, body } = toApiError(error);
      stopReadingUnreadBody(request.raw, reply.raw);
      void (reply as FastifyReply).code(status).headers({ ...SECURITY_HEADERS, 'cache-control': 'no-store' }).type('application/json; charset=utf-8').send(JSON.stringify(body));
    },
    clientErrorHandler: clientErrorHandler(limits),
  }).withTypeProvider<ZodTypeProvider>();
  app.setValidatorCompiler(validatorCompiler);
  app.setSerializerCompiler(serializerCompiler);

  // JSON only: fastify's text/plain parser goes, so any other content type is a 415.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('application/json', { parseAs: 'string' }, app.getDefaultJsonParser('error', 'error'));

  const routes: RouteInfo[] = [];
  app.addHook('onRoute', (r) => {
    if (r.url.startsWith('/documentation')) return;
    for (const method of [r.method].flat()) {
      if (method === 'HEAD') continue;
      routes.push({ method, url: r.url, role: (r.config as { role?: RouteRole } | undefined)?.role ?? ('(none)' as RouteRole) });
    }
  });

  await app.register(fastifySwagger, {
    openapi: {
      openapi: '3.1.0',
      info: {
        title: 'fleetpatch API',
        version: '1',
        description: 'Rollouts of Xen live patches, their audit trail, payloads and tokens. Roles: viewer (read and audit), operator (rollouts, approvals), admin (payloads, tokens). See docs/api.md.',
      },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer', description: 'fleetpatch tokens create --name NAME --role viewer|operator|admin' } } },
      security: [{ bearer: [] }],
    },
    transform: (input) => {
      const out = jsonSchemaTransform(input);
      const role = (input.route.config as { role?: RouteRole } | undefined)?.role;
      const schema = out.schema as Record<string, unknown>;
      if (role) {
        schema['x-role'] = role;
        schema.description = `${role === 'public' ? 'Needs no token.' : `Needs role ${role} or above.`}${schema.description ? ` ${String(schema.description)}` : ''}`;
        if (role === 'public') schema.security = [];
      }
      return out;
    },
  });

  const view = new LiveView(ctx);
  const streams = new LiveStreams(ctx, view);
  let closing = false;
  app.addHook('preClose', async () => {
    closing = true;
    streams.closeAll(new FleetpatchError('SHUTTING_DOWN', 'the API is shutting down; connect again (to another instance, or once it is back)'));
  });

  // In this order: shutting down, a body no route reads, the token, then (preValidation) text that cannot be stored.
  app.addHook('onRequest', async (_request, reply) => {
    if (!closing) return;
    reply.header('connection', 'close');
    throw new FleetpatchError('SHUTTING_DOWN', 'the API is shutting down; send the request again (to another instance, or once it is back)');
  });
  app.addHook('onRequest', refuseBodyWithoutUse);
  app.addHook('onRequest', authenticator(ctx));
  app.addHook('preValidation', refuseUnstorable);
  app.addHook('onSend', async (request, reply, payload) => {
    reply.headers(SECURITY_HEADERS);
    if (!reply.hasHeader('cache-control')) reply.header('cache-control', 'no-store');
    if (stopReadingUnreadBody(request.raw, reply.raw) && !closing) reply.removeHeader('connection');
    return payload;
  });

  app.setErrorHandler((error, request, reply) => {
    const { status, body, internal } = toApiError(error);
    // A body cut off (too slow, the client gone) fails its parser; there is no one left to answer, and nothing went wrong here.
    if (request.raw.destroyed && !request.raw.complete) return reply.code(status).send();
    if (internal) ctx.logger.error({ err: internal.cause ?? internal, method: request.method, url: request.routeOptions.url ?? request.url }, 'API request failed with an unexpected error');
    return reply.code(status).type('application/json').send(body);
  });
  app.setNotFoundHandler({ preHandler: async () => undefined }, (request, reply) => {
    const known = routes.filter((r) => matches(r.url, request.url.split('?')[0]!));
    const { status, body } = known.length > 0
      ? apiError('METHOD_NOT_ALLOWED', `${request.method} ${request.url.split('?')[0]} is not a route; it takes ${known.map((r) => r.method).join(', ')}`)
      : apiError('ROUTE_NOT_FOUND', `no route ${request.method} ${request.url.split('?')[0]!.slice(0, 200)} (see /openapi.json)`);
    return reply.code(status).type('application/json').send(body);
  });

  const metrics = apiMetrics(view, ctx.workerMetrics);

  app.get('/openapi.json', { config: { role: 'public' }, schema: { hide: true } }, async () => app.swagger());
  app.get('/api/health', {
    config: { role: 'public' },
    schema: { tags: ['service'], summary: 'Whether the API can read the event store', response: { 200: z.object({ ok: z.literal(true) }), 503: ApiErrorSchema } },
    handler: async () => {
      await ctx.pool.query('SELECT 1').catch((e: unknown) => {
        throw new FleetpatchError('DATABASE_UNAVAILABLE', `PostgreSQL does not answer: ${(e as Error).message.split('\n')[0]}`);
      });
      return { ok: true as const };
    },
  });
  app.get('/api/whoami', {
    config: { role: 'viewer' },
    schema: {
      tags: ['service'],
      summary: "The token's name (the actor of its decisions) and role",
      response: { 200: z.object({ name: z.string(), role: z.enum(['viewer', 'operator', 'admin']), temporalUi: z.string().nullable() }), 401: ApiErrorSchema },
    },
    handler: async (request) => ({ name: request.principal!.name, role: request.principal!.role, temporalUi: ctx.temporal.uiUrl ?? null }),
  });
  app.get('/metrics', {
    config: { role: 'viewer' },
    schema: { tags: ['service'], summary: 'Prometheus metrics derived from the event store (docs/api.md#metrics)' },
    handler: async (_request, reply) => reply.type(metrics.contentType).send(await metrics.text()),
  });

  rolloutRoutes(app, ctx);
  auditRoutes(app, ctx);
  fleetRoutes(app, ctx, view, streams);
  adminRoutes(app, ctx);
  enrollRoutes(app, ctx);
  dashboardRoutes(app);

  await app.ready();
  return { app, view, streams, routes };
}

/** Whether a route pattern (/api/rollouts/:id) matches a path. */
function matches(pattern: string, path: string): boolean {
  const a = pattern.split('/');
  const b = path.replace(/\/$/, '').split('/');
  return a.length === b.length && a.every((s, i) => s.startsWith(':') || s === b[i]);
}

/** Builds the API and listens; the live view polls the event store until `close`. */
export async function startApi(ctx: ApiContext, listen: { host: string; port: number }, opts: ApiOptions = {}): Promise<ApiServer & { url: string; close: () => Promise<void> }> {
  const server = await buildApi(ctx, opts);
  await server.app.listen({ host: listen.host, port: listen.port });
  server.view.start(opts.pollMs ?? 500);
  const address = server.app.server.address() as { port: number };
  const host = listen.host === '0.0.0.0' || listen.host === '::' ? '127.0.0.1' : listen.host;
  return {
    ...server,
    url: `http://${host.includes(':') ? `[${host}]` : host}:${address.port}`,
    close: async () => {
      server.view.stop();
      await server.app.close();
    },
  };
}
