/**
 * The three statements of an append, in the order the store runs them inside one transaction.
 *
 * 1. lockStreams: a transaction-scoped advisory lock per stream, in a fixed order (no deadlocks).
 *    It assigns no transaction id, so the id PostgreSQL hands out at the first insert is larger
 *    than that of every append that held the lock before: within a stream, the global order
 *    (transaction_id, global_position) is also the stream order.
 * 2. readAppendState: with the locks held (READ COMMITTED: a fresh snapshot), each stream's head,
 *    which of the event ids are already recorded, and the clock.
 * 3. insertEvents: the events and the new heads, in one statement.
 */
import type { ChainRecord } from '../hash-chain.ts';
import type { Queryable } from './event-row.ts';

/** Advisory-lock class of event streams (two-key form: apart from every one-key lock). */
const STREAM_LOCK_CLASS = 0x66706576; // "fpev"

export async function lockStreams(db: Queryable, streamIds: string[]): Promise<void> {
  await db.query({
    name: 'fleetpatch-lock-streams',
    text: `SELECT pg_advisory_xact_lock($1::int4, k)
             FROM (SELECT DISTINCT hashtext(s) AS k FROM unnest($2::text[]) AS s ORDER BY k) AS keys`,
    values: [STREAM_LOCK_CLASS, streamIds],
  });
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

export async function readAppendState(db: Queryable, streamIds: string[], eventIds: string[]): Promise<AppendState> {
  const { rows } = await db.query<{ heads: { s: string; p: string; h: string; t: string }[]; recorded: { e: string; s: string; p: string; g: string; t: string }[]; now: Date }>({
    name: 'fleetpatch-read-append-state',
    text: `SELECT
       (SELECT coalesce(json_agg(json_build_object('s', stream_id, 'p', stream_position::text, 'h', encode(last_hash, 'hex'), 't', last_recorded_at)), '[]')
          FROM streams WHERE stream_id = ANY($1::text[])) AS heads,
       (SELECT coalesce(json_agg(json_build_object('e', event_id, 's', stream_id, 'p', stream_position::text, 'g', global_position::text, 't', type)), '[]')
          FROM events WHERE event_id = ANY($2::uuid[])) AS recorded,
       date_trunc('milliseconds', clock_timestamp()) AS now`,
    values: [streamIds, eventIds],
  });
  const row = rows[0]!;
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
export async function insertEvents(db: Queryable, events: NewEventRow[], heads: NewHead[]): Promise<Map<string, { globalPosition: number; transactionId: string }>> {
  const { rows } = await db.query<{ event_id: string; global_position: string; transaction_id: string }>({
    name: 'fleetpatch-insert-events',
    text: `WITH inserted AS (
       INSERT INTO events (event_id, stream_id, stream_position, type, schema_version, occurred_at, recorded_at, actor, correlation, data, hash)
       SELECT e.event_id, e.stream_id, e.stream_position, e.type, e.schema_version, e.occurred_at, e.recorded_at, e.actor, e.correlation, e.data, decode(e.hash, 'hex')
         FROM jsonb_to_recordset($1::jsonb) AS e(event_id uuid, stream_id text, stream_position bigint, type text, schema_version int,
              occurred_at timestamptz, recorded_at timestamptz, actor jsonb, correlation jsonb, data jsonb, hash text)
       RETURNING event_id, global_position, transaction_id
     ), moved AS (
       INSERT INTO streams (stream_id, stream_position, last_hash, last_recorded_at)
       SELECT h.stream_id, h.stream_position, decode(h.last_hash, 'hex'), h.last_recorded_at
         FROM jsonb_to_recordset($2::jsonb) AS h(stream_id text, stream_position bigint, last_hash text, last_recorded_at timestamptz)
       ON CONFLICT (stream_id) DO UPDATE
         SET stream_position = EXCLUDED.stream_position, last_hash = EXCLUDED.last_hash, last_recorded_at = EXCLUDED.last_recorded_at
     )
     SELECT event_id, global_position, transaction_id FROM inserted`,
    values: [
      JSON.stringify(
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
      ),
      JSON.stringify(heads.map((h) => ({ stream_id: h.streamId, stream_position: h.position, last_hash: h.lastHash, last_recorded_at: h.lastRecordedAt }))),
    ],
  });
  return new Map(rows.map((r) => [r.event_id, { globalPosition: Number(r.global_position), transactionId: r.transaction_id }]));
}
