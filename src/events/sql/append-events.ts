/**
 * The statements of an append, in the order the store runs them inside one transaction, in two
 * round trips (the store sends each group as one simple-protocol query, values inlined as literals
 * by quoteLiteral: a flush waited for by dozens of hosts cost six round trips before, and each
 * round trip on a busy machine costs milliseconds of waiting for a core, not for PostgreSQL).
 *
 * First round trip, after BEGIN:
 * 1. lockStreams: a transaction-scoped advisory lock per stream, in a fixed order (no deadlocks).
 *    It assigns no transaction id, so the id PostgreSQL hands out at the first insert is larger
 *    than that of every append that held the lock before: within a stream, the global order
 *    (transaction_id, global_position) is also the stream order.
 * 2. readAppendState: with the locks held, each stream's head, which of the event ids are already
 *    recorded, and the clock. Under READ COMMITTED every statement of a multi-statement query takes
 *    its own snapshot when it starts, so this one sees everything committed before the locks were
 *    granted.
 *
 * Second round trip: insertEvents (the events and the new heads, in one statement), when the
 * append opens streams registerStreams (their entries in the stream registry, migration 0011),
 * then whatever the caller writes in the same transaction, then COMMIT.
 */
import type pg from 'pg';
import type { ChainRecord } from '../hash-chain.ts';
import { quoteLiteral } from './row-writes.ts';

/** Advisory-lock class of event streams (two-key form: apart from every one-key lock). */
const STREAM_LOCK_CLASS = 0x66706576; // "fpev"

/** `ARRAY['a', 'b']::<type>[]`, each element a literal. */
function arrayLiteral(values: readonly string[], type: string): string {
  return `ARRAY[${values.map(quoteLiteral).join(', ')}]::${type}[]`;
}

export function lockStreamsStatement(streamIds: readonly string[]): string {
  return `SELECT pg_advisory_xact_lock(${STREAM_LOCK_CLASS}, k)
            FROM (SELECT DISTINCT hashtext(s) AS k FROM unnest(${arrayLiteral(streamIds, 'text')}) AS s ORDER BY k) AS keys`;
}

export interface StreamHead {
  streamId: string;
  position: number;
  lastHash: string;
  lastRecordedAt: Date;
}

export interface RecordedId {
  eventId: string;
  streamId: string;
  streamPosition: number;
  globalPosition: number;
  type: string;
}

export interface AppendState {
  heads: Map<string, StreamHead>;
  recorded: Map<string, RecordedId>;
  /** The database clock, to the millisecond (what timestamptz gives back to JavaScript). */
  now: Date;
}

export function readAppendStateStatement(streamIds: readonly string[], eventIds: readonly string[]): string {
  return `SELECT
       (SELECT coalesce(json_agg(json_build_object('s', stream_id, 'p', stream_position::text, 'h', encode(last_hash, 'hex'), 't', last_recorded_at)), '[]')
          FROM streams WHERE stream_id = ANY(${arrayLiteral(streamIds, 'text')})) AS heads,
       (SELECT coalesce(json_agg(json_build_object('e', event_id, 's', stream_id, 'p', stream_position::text, 'g', global_position::text, 't', type)), '[]')
          FROM events WHERE event_id = ANY(${arrayLiteral(eventIds, 'uuid')})) AS recorded,
       date_trunc('milliseconds', clock_timestamp()) AS now`;
}

export function parseAppendState(result: pg.QueryResult): AppendState {
  const row = result.rows[0] as { heads: { s: string; p: string; h: string; t: string }[]; recorded: { e: string; s: string; p: string; g: string; t: string }[]; now: Date };
  return {
    heads: new Map(row.heads.map((h) => [h.s, { streamId: h.s, position: Number(h.p), lastHash: h.h, lastRecordedAt: new Date(h.t) }])),
    recorded: new Map(row.recorded.map((r) => [r.e, { eventId: r.e, streamId: r.s, streamPosition: Number(r.p), globalPosition: Number(r.g), type: r.t }])),
    now: row.now,
  };
}

/** What the hash covers, plus the hash itself. */
export interface NewEventRow extends ChainRecord {
  hash: string;
}

export interface NewHead {
  streamId: string;
  position: number;
  lastHash: string;
  lastRecordedAt: string;
}

/**
 * Inserts the events and moves the heads. The rows travel as one JSON document (cheaper to build
 * and to parse than eleven array literals); a function scan yields them in array order, so global
 * positions follow the order of `events`.
 */
export function insertEventsStatement(events: readonly NewEventRow[], heads: readonly NewHead[]): string {
  const eventsJson = JSON.stringify(
    events.map((e) => ({
      event_id: e.eventId,
      stream_id: e.streamId,
      stream_position: e.streamPosition,
      type: e.type,
      schema_version: e.schemaVersion,
      occurred_at: e.occurredAt,
      recorded_at: e.recordedAt,
      actor: e.actor,
      correlation: e.correlation,
      data: e.data,
      hash: e.hash,
    })),
  );
  const headsJson = JSON.stringify(heads.map((h) => ({ stream_id: h.streamId, stream_position: h.position, last_hash: h.lastHash, last_recorded_at: h.lastRecordedAt })));
  return `WITH inserted AS (
       INSERT INTO events (event_id, stream_id, stream_position, type, schema_version, occurred_at, recorded_at, actor, correlation, data, hash)
       SELECT e.event_id, e.stream_id, e.stream_position, e.type, e.schema_version, e.occurred_at, e.recorded_at, e.actor, e.correlation, e.data, decode(e.hash, 'hex')
         FROM jsonb_to_recordset(${quoteLiteral(eventsJson)}::jsonb) AS e(event_id uuid, stream_id text, stream_position bigint, type text, schema_version int,
              occurred_at timestamptz, recorded_at timestamptz, actor jsonb, correlation jsonb, data jsonb, hash text)
       RETURNING event_id, global_position, transaction_id
     ), moved AS (
       INSERT INTO streams (stream_id, stream_position, last_hash, last_recorded_at)
       SELECT h.stream_id, h.stream_position, decode(h.last_hash, 'hex'), h.last_recorded_at
         FROM jsonb_to_recordset(${quoteLiteral(headsJson)}::jsonb) AS h(stream_id text, stream_position bigint, last_hash text, last_recorded_at timestamptz)
       ON CONFLICT (stream_id) DO UPDATE
         SET stream_position = EXCLUDED.stream_position, last_hash = EXCLUDED.last_hash, last_recorded_at = EXCLUDED.last_recorded_at
     )
     SELECT event_id, global_position, transaction_id FROM inserted`;
}

/**
 * Registers streams the append opens (their first events are in it) in the stream registry's hash
 * chain. It waits for the registry head's row lock, held to COMMIT: appends that open streams
 * take turns there; appends to streams that exist never send it.
 */
export function registerStreamsStatement(streamIds: readonly string[]): string {
  return `SELECT register_streams(${arrayLiteral(streamIds, 'text')})`;
}

/** What insertEventsStatement gives back: each new event's global position and transaction. */
export function parseInserted(result: pg.QueryResult): Map<string, { globalPosition: number; transactionId: string }> {
  return new Map(
    (result.rows as { event_id: string; global_position: string; transaction_id: string }[]).map((r) => [r.event_id, { globalPosition: Number(r.global_position), transactionId: r.transaction_id }]),
  );
}
