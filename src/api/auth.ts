/**
 * Bearer tokens on every route but the public ones (the dashboard's files, /openapi.json,
 * /api/health): `Authorization: Bearer <token>`, looked up by its sha256 and compared in constant
 * time (src/access/tokens.ts). Each route names the least role it needs; roles are cumulative
 * (viewer < operator < admin). The token's name is the actor of every decision made with it.
 */
import type { FastifyReply, FastifyRequest } from 'fastify';
import { allows, type Role } from '../access/tokens.ts';
import { FleetpatchError } from '../errors.ts';
import type { Actor } from '../rollout/types.ts';
import type { ApiContext } from '../app/api-context.ts';

export type RouteRole = Role | 'public';

declare module 'fastify' {
  interface FastifyContextConfig {
    /** The least role a route needs; 'public' needs no token. Every route must say. */
    role?: RouteRole;
  }
  interface FastifyRequest {
    principal?: { name: string; role: Role };
  }
}

const BEARER = /^Bearer ([^\s]+)$/i;

/** The bearer token a request presents, if it presents one. */
export function presentedToken(request: FastifyRequest): string | undefined {
  const header = request.headers.authorization;
  return typeof header === 'string' ? BEARER.exec(header.trim())?.[1] : undefined;
}

export function authenticator(ctx: ApiContext) {
  return async (request: FastifyRequest, reply: FastifyReply): Promise<void> => {
    const needed = request.routeOptions.config?.role;
    // No route matched: the not-found handler answers (which routes exist is public: /openapi.json).
    if (needed === 'public' || request.routeOptions.url === undefined) return;
    // A route that names no role is a bug, and is refused (below) rather than left open.
    const token = presentedToken(request);
    if (!token) {
      reply.header('www-authenticate', 'Bearer realm="fleetpatch"');
      throw new FleetpatchError('AUTH_REQUIRED', 'send an API token: Authorization: Bearer <token> (fleetpatch tokens create --name NAME --role viewer|operator|admin)');
    }
    const principal = await ctx.tokens.authenticate(token);
    if (!principal) {
      reply.header('www-authenticate', 'Bearer realm="fleetpatch", error="invalid_token"');
      throw new FleetpatchError('AUTH_REQUIRED', 'the API token is unknown or revoked');
    }
    request.principal = principal;
    if (!needed || !allows(principal.role, needed)) {
      throw new FleetpatchError('FORBIDDEN', `token "${principal.name}" has role ${principal.role}; ${request.method} ${request.routeOptions.url} needs ${needed ?? 'a role this route does not name'}`, { role: principal.role, needed: needed ?? null });
    }
  };
}

/** Who acts: the token's name (a person or a program the token was made for). */
export function actorOf(request: FastifyRequest): Actor {
  if (!request.principal) throw new FleetpatchError('AUTH_REQUIRED', 'this route needs an API token');
  return { kind: 'user', id: request.principal.name };
}
