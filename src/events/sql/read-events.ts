/**
 * Reading events: one stream in order, or everything in the global order.
 *
 * The global order is (transaction_id, global_position), and readAll returns only events of
 * transactions below pg_snapshot_xmin(pg_current_snapshot()), the oldest transaction still running
 * when the statement's snapshot was taken: every transaction below it has committed (and is
 * visible in that same snapshot) or rolled back. A transaction still running, or committing later,
 * has an id at or above the horizon, so its events sort after everything a reader has already
 * been given: no gaps, no reordering, whatever the writers do concurrently. The price is that an
 * event appears in readAll only once every older transaction has finished.
 */
import { EVENT_COLUMNS, type EventRow, type Queryable } from './event-row.ts';

/** A point in the global order: readAll continues strictly after it. */
export interface GlobalCursor {
  transactionId: string;
  globalPosition: number;
}

export const START: GlobalCursor = { transactionId: '0', globalPosition: 0 };

export interface StreamRange {
  /** First position to read (inclusive, default 1). */
  from?: number;
  /** Last position to read (inclusive). */
  to?: number;
  /** Only events recorded at or before this instant (a prefix: recorded_at never decreases in a stream). */
  recordedUntil?: string;
  limit?: number;
}

export async function selectStream(db: Queryable, streamId: string, range: StreamRange = {}): Promise<EventRow[]> {
  const { rows } = await db.query<EventRow>({
    name: 'fleetpatch-select-stream',
    text: `SELECT ${EVENT_COLUMNS} FROM events
      WHERE stream_id = $1 AND stream_position >= $2
        AND ($3::bigint IS NULL OR stream_position <= $3)
        AND ($4::timestamptz IS NULL OR recorded_at <= $4)
      ORDER BY stream_position
      LIMIT $5`,
    values: [streamId, range.from ?? 1, range.to ?? null, range.recordedUntil ?? null, range.limit ?? null],
  });
  return rows;
}

export async function selectAllAfter(db: Queryable, after: GlobalCursor, limit: number): Promise<EventRow[]> {
  const { rows } = await db.query<EventRow>({
    name: 'fleetpatch-select-all-after',
    text: `SELECT ${EVENT_COLUMNS} FROM events
      WHERE (transaction_id, global_position) > ($1::xid8, $2::bigint)
        AND transaction_id < pg_snapshot_xmin(pg_current_snapshot())
      ORDER BY transaction_id, global_position
      LIMIT $3`,
    values: [after.transactionId, after.globalPosition, limit],
  });
  return rows;
}

/** The point in the global order of the event at a global position, or null. */
export async function selectCursorAt(db: Queryable, globalPosition: number): Promise<GlobalCursor | null> {
  const { rows } = await db.query<{ transaction_id: string }>('SELECT transaction_id::text FROM events WHERE global_position = $1', [globalPosition]);
  return rows[0] ? { transactionId: rows[0].transaction_id, globalPosition } : null;
}

export async function selectStreamVersion(db: Queryable, streamId: string): Promise<number> {
  const { rows } = await db.query<{ stream_position: string }>('SELECT stream_position FROM streams WHERE stream_id = $1', [streamId]);
  return rows[0] ? Number(rows[0].stream_position) : 0;
}
