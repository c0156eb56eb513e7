/**
 * An events row as SELECTed by every reader, and its two readings: the domain event (validated
 * against the catalogue) and the chain record (exactly what the hash covers).
 */
import type pg from 'pg';
import { FleetpatchError } from '../../errors.ts';
import { parseEvent, type DomainEvent } from '../catalogue.ts';
import type { ChainRecord } from '../hash-chain.ts';

export type Queryable = pg.Pool | pg.PoolClient;

/**
 * The columns every reader selects, in this order. No column is renamed or cast: a bare name in
 * ORDER BY means the output column, so `transaction_id::text AS transaction_id` would silently sort
 * transaction ids as text (1000 before 999). node-postgres reads xid8 as a decimal string anyway.
 */
export const EVENT_COLUMNS = `global_position, transaction_id, event_id, stream_id, stream_position,
  type, schema_version, occurred_at, recorded_at, actor, correlation, data, hash`;

export interface EventRow {
  global_position: string;
  transaction_id: string;
  event_id: string;
  stream_id: string;
  stream_position: string;
  type: string;
  schema_version: number;
  occurred_at: Date;
  recorded_at: Date;
  actor: unknown;
  correlation: unknown;
  data: Record<string, unknown>;
  hash: Buffer;
}

/** A fact as the store holds it: the event plus where and when it was recorded. */
export interface RecordedEvent<E extends DomainEvent = DomainEvent> {
  eventId: string;
  streamId: string;
  /** 1-based, without gaps within a stream. */
  streamPosition: number;
  /** Unique across the store; see GlobalCursor for the order readers can trust. */
  globalPosition: number;
  /** The PostgreSQL transaction (xid8, as decimal text) that recorded it. */
  transactionId: string;
  recordedAt: string;
  /** Hex sha256 of this link of the stream's hash chain. */
  hash: string;
  event: E;
}

export function toChainRecord(row: EventRow): ChainRecord {
  return {
    streamId: row.stream_id,
    streamPosition: Number(row.stream_position),
    eventId: row.event_id,
    type: row.type,
    schemaVersion: row.schema_version,
    occurredAt: row.occurred_at.toISOString(),
    recordedAt: row.recorded_at.toISOString(),
    actor: row.actor,
    correlation: row.correlation,
    data: row.data,
  };
}

export function toRecordedEvent(row: EventRow): RecordedEvent {
  let event: DomainEvent;
  try {
    event = parseEvent({
      ...row.data,
      type: row.type,
      schemaVersion: row.schema_version,
      occurredAt: row.occurred_at.toISOString(),
      actor: row.actor,
      correlation: row.correlation,
    });
  } catch (e) {
    throw new FleetpatchError('EVENT_INVALID', `stored event ${row.stream_id}@${row.stream_position} cannot be read: ${(e as Error).message}`, { eventId: row.event_id }, { cause: e });
  }
  return {
    eventId: row.event_id,
    streamId: row.stream_id,
    streamPosition: Number(row.stream_position),
    globalPosition: Number(row.global_position),
    transactionId: row.transaction_id,
    recordedAt: row.recorded_at.toISOString(),
    hash: row.hash.toString('hex'),
    event,
  };
}
