/**
 * The event store: append-only, PostgreSQL-backed.
 *
 * - append/appendMany check the stream version the caller expects (STREAM_VERSION_CONFLICT when the
 *   stream moved on), validate every event against the catalogue and its stream, chain hashes per
 *   stream, and write a whole batch (many streams) in one transaction. An append that opens a
 *   stream registers it in the stream registry (migration 0011) in that transaction, so that the
 *   stream's existence is on record apart from its own rows.
 * - Event ids are the caller's, usually deterministic (event-id.ts): an id already stored is not
 *   written again and comes back as `alreadyRecorded`, so a retried activity never records twice.
 *   The first write wins; a reused id for another stream or type is EVENT_INVALID (a bug).
 * - readAll gives the global order readers can trust under concurrent writers (read-events.ts).
 */
import type pg from 'pg';
import { FleetpatchError } from '../errors.ts';
import { findUnstorable, formatPath } from '../domain/text.ts';
import { parseEvent, splitEvent, type DomainEvent, type DomainEventInput } from './catalogue.ts';
import { UUID_PATTERN } from './event-id.ts';
import { chainHash, GENESIS_HASH } from './hash-chain.ts';
import { streamFor } from './streams.ts';
import { insertEventsStatement, lockStreamsStatement, parseAppendState, parseInserted, readAppendStateStatement, registerStreamsStatement, type NewEventRow, type NewHead } from './sql/append-events.ts';
import { inlineWrite, runStatements, type RowWrite } from './sql/row-writes.ts';
import { toRecordedEvent, type RecordedEvent } from './sql/event-row.ts';
import { selectAllAfter, selectCursorAt, selectStream, selectStreamVersion, START, type GlobalCursor, type StreamRange } from './sql/read-events.ts';

export type { GlobalCursor, RecordedEvent, StreamRange };
export { START };

/** The version a stream must have for the append to go ahead: a number (0 = no events yet) or 'any'. */
export type ExpectedVersion = number | 'any';

export interface EventToAppend {
  /** A UUID; deterministic for anything a retry could record again (event-id.ts). */
  eventId: string;
  event: DomainEventInput;
}

export interface StreamAppend {
  streamId: string;
  events: EventToAppend[];
  expectedVersion?: ExpectedVersion;
}

export interface AppendedEvent {
  eventId: string;
  streamPosition: number;
  globalPosition: number;
  /** True when this event id was already stored (by an earlier attempt): nothing was written. */
  alreadyRecorded: boolean;
}

export interface AppendResult {
  streamId: string;
  /** The stream's version after this append: pass it as expectedVersion next time. */
  nextExpectedVersion: number;
  events: AppendedEvent[];
  /** True when every event was already recorded. */
  alreadyRecorded: boolean;
}

export interface AppendOptions {
  /**
   * Runs inside the append's transaction after the events are written and before COMMIT, so a
   * dependent write (e.g. payload bytes) lands atomically with them. Throwing rolls both back.
   */
  withinTransaction?: (client: pg.PoolClient, results: AppendResult[]) => Promise<void>;
}

const UNIQUE_VIOLATION = '23505';

interface PreparedBatch {
  streamId: string;
  expectedVersion: ExpectedVersion;
  events: { eventId: string; event: DomainEvent }[];
}

export class EventStore {
  constructor(readonly pool: pg.Pool) {}

  async append(streamId: string, events: EventToAppend[], options: { expectedVersion?: ExpectedVersion } & AppendOptions = {}): Promise<AppendResult> {
    const { expectedVersion, ...rest } = options;
    const [result] = await this.appendMany([{ streamId, events, ...(expectedVersion !== undefined ? { expectedVersion } : {}) }], rest);
    return result!;
  }

  /** Appends to several streams in one transaction: all of it is recorded, or none. */
  async appendMany(batches: StreamAppend[], options: AppendOptions = {}): Promise<AppendResult[]> {
    return (await this.run(prepare(batches), [], options.withinTransaction)).results;
  }

  /**
   * appendMany, plus row writes (statements of our own, src/events/sql/row-writes.ts) in the same
   * transaction and the same round trip as the events and the COMMIT: what a group commit sends.
   * Returns each write's row count.
   */
  async appendWithRows(batches: StreamAppend[], writes: readonly RowWrite[]): Promise<{ results: AppendResult[]; rowCounts: number[] }> {
    return this.run(prepare(batches), writes);
  }

  /**
   * One append transaction. Without `within`, the events, the writes and the COMMIT go in one
   * round trip; with it, `within` runs after the events are written, then COMMIT.
   */
  private async run(prepared: PreparedBatch[], writes: readonly RowWrite[], within?: AppendOptions['withinTransaction']): Promise<{ results: AppendResult[]; rowCounts: number[] }> {
    const tail = writes.map(inlineWrite);
    const client = await this.pool.connect();
    try {
      // A concurrent append of the same event id that committed while we waited for the locks
      // shows up as a unique violation; the second attempt sees it as already recorded.
      for (let attempt = 1; ; attempt++) {
        try {
          const appended = await appendInTransaction(client, prepared, tail, !within);
          if (within) {
            await within(client, appended.results);
            await client.query('COMMIT');
          }
          return appended;
        } catch (e) {
          await client.query('ROLLBACK').catch(() => undefined);
          const pgError = e as { code?: string; constraint?: string };
          if (attempt === 1 && pgError.code === UNIQUE_VIOLATION && pgError.constraint === 'events_event_id_key') continue;
          throw e;
        }
      }
    } finally {
      client.release();
    }
  }

  /** A stream's events in order, validated against the catalogue. */
  async readStream(streamId: string, range: StreamRange = {}): Promise<RecordedEvent[]> {
    return (await selectStream(this.pool, streamId, range)).map(toRecordedEvent);
  }

  /** The number of events in a stream (0 when it has none). */
  async streamVersion(streamId: string): Promise<number> {
    return selectStreamVersion(this.pool, streamId);
  }

  /**
   * Events in the global order, strictly after the event at `afterGlobalPosition` (0: from the
   * start). Pass the globalPosition of the last event you got to read on. Safe with concurrent
   * writers: never a gap, never an event that sorts before one already returned.
   */
  async readAll(afterGlobalPosition = 0, limit = 1000): Promise<RecordedEvent[]> {
    let cursor = START;
    if (afterGlobalPosition > 0) {
      const found = await selectCursorAt(this.pool, afterGlobalPosition);
      if (!found) throw new FleetpatchError('EVENT_NOT_FOUND', `no event has global position ${afterGlobalPosition}`);
      cursor = found;
    }
    return this.readAllAfter(cursor, limit);
  }

  /** readAll from a cursor kept by the caller (projections keep one per projection). */
  async readAllAfter(cursor: GlobalCursor, limit = 1000, db: pg.Pool | pg.PoolClient = this.pool): Promise<RecordedEvent[]> {
    return (await selectAllAfter(db, cursor, limit)).map(toRecordedEvent);
  }
}

export function cursorOf(event: Pick<RecordedEvent, 'transactionId' | 'globalPosition'>): GlobalCursor {
  return { transactionId: event.transactionId, globalPosition: event.globalPosition };
}

/** Validation that needs no database: catalogue, stream, ids, versions. */
function prepare(batches: StreamAppend[]): PreparedBatch[] {
  const streams = new Set<string>();
  const ids = new Set<string>();
  return batches.map((b) => {
    if (streams.has(b.streamId)) throw new FleetpatchError('EVENT_INVALID', `stream ${b.streamId} appears twice in one append; put its events in one batch`);
    streams.add(b.streamId);
    const expectedVersion = b.expectedVersion ?? 'any';
    if (expectedVersion !== 'any' && !(Number.isSafeInteger(expectedVersion) && expectedVersion >= 0)) {
      throw new FleetpatchError('EVENT_INVALID', `expected version ${String(expectedVersion)} of ${b.streamId} is not a version (a whole number >= 0, or 'any')`);
    }
    const events = b.events.map(({ eventId, event }) => {
      if (!UUID_PATTERN.test(eventId)) throw new FleetpatchError('EVENT_INVALID', `event id "${eventId}" is not a lowercase UUID`);
      if (ids.has(eventId)) throw new FleetpatchError('EVENT_INVALID', `event id ${eventId} appears twice in one append`);
      ids.add(eventId);
      const parsed = parseEvent(event);
      refuseUnstorable(eventId, parsed);
      const belongs = streamFor(parsed);
      if (belongs !== b.streamId) throw new FleetpatchError('EVENT_INVALID', `a ${parsed.type} event belongs to stream ${belongs}, not ${b.streamId}`, { eventId });
      return { eventId, event: parsed };
    });
    return { streamId: b.streamId, expectedVersion, events };
  });
}

/**
 * The last line of defence behind the catalogue (whose texts refuse NUL and lone surrogates): an
 * event holding text PostgreSQL cannot store, say one changed after it was validated, is refused
 * here naming its type and field, before the transaction, not by PostgreSQL's "unsupported
 * Unicode escape sequence" halfway through a batch.
 */
function refuseUnstorable(eventId: string, event: DomainEvent): void {
  const found = findUnstorable(event);
  if (!found) return;
  const field = formatPath(found.path);
  throw new FleetpatchError('EVENT_INVALID', `a ${event.type} event cannot be stored: ${field} ${found.problem}`, { eventId, type: event.type, field });
}

/**
 * Opens the transaction, writes the events and runs `writes` (statements, values inlined) behind
 * them, then COMMIT if `commit`: two round trips in all (src/events/sql/append-events.ts).
 * Without `commit` the transaction is still open when this returns.
 */
async function appendInTransaction(client: pg.PoolClient, batches: PreparedBatch[], writes: readonly string[], commit: boolean): Promise<{ results: AppendResult[]; rowCounts: number[] }> {
  const streamIds = batches.map((b) => b.streamId);
  const eventIds = batches.flatMap((b) => b.events.map((e) => e.eventId));
  const opened = await runStatements(client, ['BEGIN', lockStreamsStatement(streamIds), readAppendStateStatement(streamIds, eventIds)]);
  const state = parseAppendState(opened[2]!);

  const rows: NewEventRow[] = [];
  const heads: NewHead[] = [];
  /** Streams whose first events this append writes: registered with them (stream registry). */
  const newStreams: string[] = [];
  const planned = batches.map((b) => {
    const head = state.heads.get(b.streamId);
    const current = head?.position ?? 0;
    const fresh = b.events.filter((e) => {
      const stored = state.recorded.get(e.eventId);
      if (!stored) return true;
      if (stored.streamId !== b.streamId || stored.type !== e.event.type) {
        throw new FleetpatchError(
          'EVENT_INVALID',
          `event id ${e.eventId} is already recorded for another fact (${stored.type} in ${stored.streamId}), not ${e.event.type} in ${b.streamId}: two steps computed the same id`,
          { eventId: e.eventId },
        );
      }
      return false;
    });
    if (fresh.length > 0 && b.expectedVersion !== 'any' && b.expectedVersion !== current) {
      throw new FleetpatchError('STREAM_VERSION_CONFLICT', `stream ${b.streamId} is at version ${current}, the append expected ${b.expectedVersion}`, {
        streamId: b.streamId,
        expectedVersion: b.expectedVersion,
        actualVersion: current,
      });
    }
    // recorded_at never goes backwards within a stream, even if the database clock does.
    const recordedAt = new Date(Math.max(state.now.getTime(), head?.lastRecordedAt.getTime() ?? 0)).toISOString();
    let previousHash = head?.lastHash ?? GENESIS_HASH;
    let position = current;
    const positions = new Map<string, number>();
    for (const { eventId, event } of fresh) {
      position++;
      const { envelope, data } = splitEvent(event);
      const record = {
        streamId: b.streamId,
        streamPosition: position,
        eventId,
        type: envelope.type,
        schemaVersion: envelope.schemaVersion,
        occurredAt: envelope.occurredAt,
        recordedAt,
        actor: envelope.actor,
        correlation: envelope.correlation,
        data,
      };
      previousHash = chainHash(previousHash, record);
      rows.push({ ...record, hash: previousHash });
      positions.set(eventId, position);
    }
    if (fresh.length > 0) heads.push({ streamId: b.streamId, position, lastHash: previousHash, lastRecordedAt: recordedAt });
    if (fresh.length > 0 && !head) newStreams.push(b.streamId);
    return { batch: b, positions, version: position };
  });

  const insert = rows.length > 0 ? [insertEventsStatement(rows, heads), ...(newStreams.length > 0 ? [registerStreamsStatement(newStreams)] : [])] : [];
  const answered = await runStatements(client, [...insert, ...writes, ...(commit ? ['COMMIT'] : [])]);
  const inserted = rows.length > 0 ? parseInserted(answered[0]!) : new Map<string, { globalPosition: number; transactionId: string }>();
  const rowCounts = answered.slice(insert.length, insert.length + writes.length).map((r) => r.rowCount ?? 0);
  const results = planned.map(({ batch, positions, version }) => {
    const events = batch.events.map(({ eventId }): AppendedEvent => {
      const stored = state.recorded.get(eventId);
      if (stored) return { eventId, streamPosition: stored.streamPosition, globalPosition: stored.globalPosition, alreadyRecorded: true };
      return { eventId, streamPosition: positions.get(eventId)!, globalPosition: inserted.get(eventId)!.globalPosition, alreadyRecorded: false };
    });
    return { streamId: batch.streamId, nextExpectedVersion: version, events, alreadyRecorded: events.every((e) => e.alreadyRecorded) };
  });
  return { results, rowCounts };
}
