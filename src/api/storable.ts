/**
 * Text PostgreSQL cannot store (a NUL, a lone UTF-16 surrogate: src/domain/text.ts) is refused
 * before any route sees it: in the path's parameters, the query and the JSON body alike, keys
 * included, with 400 BODY_INVALID naming the field. One hook for every route, so a route added
 * later cannot forget, and nothing unstorable reaches a query or an event to fail there as a 500,
 * or worse, in the middle of a rollout.
 */
import type { FastifyRequest } from 'fastify';
import { findUnstorable, formatPath } from '../domain/text.ts';
import { FleetpatchError } from '../errors.ts';

/** The request's parts in the order a person reads a request, named as schema errors name them. */
const PARTS = [
  ['params', (r: Pick<FastifyRequest, 'params' | 'query' | 'body'>) => r.params],
  ['querystring', (r: Pick<FastifyRequest, 'params' | 'query' | 'body'>) => r.query],
  ['body', (r: Pick<FastifyRequest, 'params' | 'query' | 'body'>) => r.body],
] as const;

/** The offending characters written as escapes, so the field's name itself is printable and storable. */
function printable(name: string): string {
  return name.replace(/\0|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

/** The first field of a request holding text that cannot be stored, and why. */
export function unstorableField(request: Pick<FastifyRequest, 'params' | 'query' | 'body'>): { field: string; problem: string } | undefined {
  for (const [part, of] of PARTS) {
    const found = findUnstorable(of(request));
    if (!found) continue;
    const path = found.path.length === 0 ? '' : formatPath(found.path.map((p) => (typeof p === 'string' ? printable(p) : p)));
    return { field: path === '' ? part : path.startsWith('[') ? `${part}${path}` : `${part}.${path}`, problem: found.problem };
  }
  return undefined;
}

/** preValidation hook: refuses the request before its schema, its handler or PostgreSQL see it. */
export async function refuseUnstorable(request: FastifyRequest): Promise<void> {
  const found = unstorableField(request);
  if (found) throw new FleetpatchError('BODY_INVALID', `${found.field}: ${found.problem}`, { field: found.field });
}
