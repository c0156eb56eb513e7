/**
 * A host agent request, from the parts HTTP gives (method, path segments, query, body) to a typed
 * request a host can run: route matching, and every parameter checked the way the agent contract
 * and Xen's sysctl bounds say. Pure: the servers (the emulator's and the dom0 agent's) read
 * sockets, this decides, so both read a request the same way.
 *
 * Parsing happens in two steps on purpose: the route is known before the fault injector is asked
 * (faults count requests per route kind), the parameters are checked after it, so a malformed
 * request to an unreachable host still looks unreachable.
 */
import { FleetpatchError, XenError } from '../errors.ts';
import { ActionRequestBodySchema, RebootRequestBodySchema, MAX_DOWN_MS, LIVEPATCH_LIST_MAX } from './contract.ts';

/** LIST's idx and nr are uint32 in Xen's sysctl. */
const U32_MAX = 0xffff_ffff;

export type Route =
  | { kind: 'list' }
  | { kind: 'upload'; name: string }
  | { kind: 'get'; name: string }
  | { kind: 'action'; name: string }
  | { kind: 'functions' }
  | { kind: 'call'; fn: string }
  | { kind: 'dump' }
  | { kind: 'reboot' };

/** Which body a route reads before the fault injector is asked: payload bytes, a JSON object, or none. */
export function bodyOf(route: Route): 'bytes' | 'json' | 'none' {
  return route.kind === 'upload' ? 'bytes' : route.kind === 'action' || route.kind === 'reboot' ? 'json' : 'none';
}

export type HostRequest =
  | { kind: 'list'; idx: number; nr: number }
  | { kind: 'get'; name: string }
  | { kind: 'upload'; name: string; bytes: Uint8Array }
  | { kind: 'action'; name: string; cmd: string; timeoutNs?: number; nodeps?: boolean; waitMs?: number }
  | { kind: 'functions' }
  | { kind: 'call'; fn: string }
  | { kind: 'dump' }
  | { kind: 'reboot'; downMs: number };

/** A refusal of the agent protocol: a catalogue code (its HTTP status comes from the catalogue) and the reason. */
export function refuse(code: 'REQUEST_INVALID' | 'REQUEST_TOO_LARGE' | 'ROUTE_NOT_FOUND' | 'METHOD_NOT_ALLOWED' | 'HOST_UNAUTHORIZED' | 'HOST_FORBIDDEN', message: string): FleetpatchError {
  return new FleetpatchError(code, message);
}

/** The route of `/hosts/:id/<rest>`; ROUTE_NOT_FOUND or METHOD_NOT_ALLOWED otherwise. */
export function matchRoute(method: string, rest: readonly string[]): Route {
  const [a, b, c, ...more] = rest;
  const route = ((): { route: Route; method: string } | null => {
    if (a === 'livepatch' && b === undefined) return { route: { kind: 'list' }, method: 'GET' };
    if (a === 'livepatch' && b !== undefined && c === undefined) {
      return method === 'POST' ? { route: { kind: 'upload', name: b }, method: 'POST' } : { route: { kind: 'get', name: b }, method: 'GET' };
    }
    if (a === 'livepatch' && b !== undefined && c === 'action' && more.length === 0) return { route: { kind: 'action', name: b }, method: 'POST' };
    if (a === 'functions' && b === undefined) return { route: { kind: 'functions' }, method: 'GET' };
    if (a === 'functions' && b !== undefined && c === undefined) return { route: { kind: 'call', fn: b }, method: 'GET' };
    if (a === 'dump' && b === undefined) return { route: { kind: 'dump' }, method: 'GET' };
    if (a === 'reboot' && b === undefined) return { route: { kind: 'reboot' }, method: 'POST' };
    return null;
  })();
  if (!route) throw refuse('ROUTE_NOT_FOUND', `no such route: /hosts/:id/${rest.join('/')}`);
  if (route.method !== method) throw refuse('METHOD_NOT_ALLOWED', `${method} is not allowed here; use ${route.method}`);
  return route.route;
}

/** What the server read of the body: the bytes (up to the route's limit) and whether there was more. */
export interface Body {
  readonly bytes: Uint8Array;
  readonly truncated: boolean;
  readonly size: number;
}

/** The most an upload body may hold: Xen refuses bigger payloads with EINVAL. */
export const MAX_UPLOAD_BYTES = 2 * 1024 * 1024;
/** The most a JSON body may hold. */
export const MAX_JSON_BYTES = 256 * 1024;

/** A JSON body as an object: REQUEST_TOO_LARGE, or REQUEST_INVALID when it is not one. An empty body is `{}`. */
export function jsonObject(body: Body): Record<string, unknown> {
  if (body.truncated) throw refuse('REQUEST_TOO_LARGE', `the JSON body is larger than ${MAX_JSON_BYTES} bytes`);
  if (body.bytes.length === 0) return {};
  let doc: unknown;
  try {
    doc = JSON.parse(new TextDecoder().decode(body.bytes));
  } catch {
    throw refuse('REQUEST_INVALID', 'the body is not JSON');
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) throw refuse('REQUEST_INVALID', 'the body must be a JSON object');
  return doc as Record<string, unknown>;
}

function u32Param(query: URLSearchParams, key: string, dflt: number): number {
  const raw = query.get(key);
  if (raw === null || raw === '') return dflt;
  if (!/^\d{1,10}$/.test(raw) || Number(raw) > U32_MAX) throw new XenError('EINVAL', `LIST ${key} must be an unsigned 32-bit integer (got "${raw.slice(0, 40)}")`);
  return Number(raw);
}

/** The request with its parameters checked (REQUEST_INVALID, or Xen's EINVAL where Xen decides). */
export function parseRequest(route: Route, query: URLSearchParams, body: Body | null): HostRequest {
  switch (route.kind) {
    case 'list':
      return { kind: 'list', idx: u32Param(query, 'idx', 0), nr: u32Param(query, 'nr', LIVEPATCH_LIST_MAX) };
    case 'upload':
      if (body!.truncated) {
        throw new XenError('EINVAL', `${route.name}: the payload is ${body!.size} bytes; Xen accepts at most 2 MiB (${MAX_UPLOAD_BYTES})`, { payload: route.name, size: body!.size });
      }
      return { kind: 'upload', name: route.name, bytes: body!.bytes };
    case 'action': {
      const parsed = ActionRequestBodySchema.safeParse(jsonObject(body!));
      if (!parsed.success) throw refuse('REQUEST_INVALID', parsed.error.issues[0]!.message);
      const { cmd, timeoutNs, nodeps, waitMs } = parsed.data;
      return { kind: 'action', name: route.name, cmd, ...(timeoutNs !== undefined ? { timeoutNs } : {}), ...(nodeps !== undefined ? { nodeps } : {}), ...(waitMs ? { waitMs } : {}) };
    }
    case 'reboot': {
      const parsed = RebootRequestBodySchema.safeParse(jsonObject(body!));
      if (!parsed.success) throw refuse('REQUEST_INVALID', `"downMs" must be a number of milliseconds from 0 to ${MAX_DOWN_MS} (a day)`);
      return { kind: 'reboot', downMs: parsed.data.downMs ?? 0 };
    }
    default:
      return route;
  }
}
