/**
 * What the main thread and the recording thread (recorder/thread.ts) say to each other: an append
 * with its row writes, and its row counts or its error. Errors cross as plain data and are made
 * whole again on the main thread, so that the group committer tells an outage, a conflict and a
 * bug apart exactly as it does for an append made in-process.
 */
import { FleetpatchError, type ErrorCode } from '../../errors.ts';
import type { RowWrite } from '../sql/row-writes.ts';
import type { StreamAppend } from '../store.ts';

export interface AppendRequest {
  id: number;
  batches: StreamAppend[];
  writes: RowWrite[];
}

export interface WireError {
  message: string;
  name?: string;
  /** A pg error's SQLSTATE, a socket error's code, or a FleetpatchError's catalogue code. */
  code?: string;
  constraint?: string;
  fleetpatch?: { details: Record<string, unknown> };
}

export type AppendReply = { id: number; ok: true; rowCounts: number[] } | { id: number; ok: false; error: WireError };

export function toWireError(e: unknown): WireError {
  if (e instanceof FleetpatchError) return { message: e.message, name: e.name, code: e.code, fleetpatch: { details: { ...e.details } } };
  const err = e as { message?: unknown; name?: unknown; code?: unknown; constraint?: unknown } | undefined;
  return {
    message: typeof err?.message === 'string' ? err.message : String(e),
    ...(typeof err?.name === 'string' ? { name: err.name } : {}),
    ...(typeof err?.code === 'string' ? { code: err.code } : {}),
    ...(typeof err?.constraint === 'string' ? { constraint: err.constraint } : {}),
  };
}

export function fromWireError(w: WireError): Error {
  if (w.fleetpatch && w.code) return new FleetpatchError(w.code as ErrorCode, w.message, w.fleetpatch.details);
  const e = new Error(w.message) as Error & { code?: string; constraint?: string };
  if (w.name) e.name = w.name;
  if (w.code) e.code = w.code;
  if (w.constraint) e.constraint = w.constraint;
  return e;
}
