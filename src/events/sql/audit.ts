/** Statements behind the audit queries (src/events/audit). */
import { EVENT_COLUMNS, type EventRow, type Queryable } from './event-row.ts';

/** A host's stream plus its outcomes recorded in rollout streams, in the global order. */
export async function selectHostTimeline(db: Queryable, hostId: string, limit: number | null): Promise<EventRow[]> {
  const { rows } = await db.query<EventRow>(
    `SELECT * FROM (
       SELECT ${EVENT_COLUMNS} FROM events WHERE stream_id = $1
       UNION ALL
       SELECT ${EVENT_COLUMNS} FROM events
        WHERE type IN ('HostPatchFinished', 'HostRollbackFinished') AND data->>'hostId' = $2
     ) AS t
     ORDER BY transaction_id, global_position
     LIMIT $3`,
    [`host-${hostId}`, hostId, limit],
  );
  return rows;
}

export interface CheckFilter {
  hostId?: string;
  buildId?: string;
  rolloutId?: string;
  outcome?: string;
}

export async function selectDependencyChecks(db: Queryable, filter: CheckFilter, limit: number): Promise<EventRow[]> {
  const where = [`type = 'DependencyChecked'`];
  const params: unknown[] = [];
  const param = (v: unknown) => {
    params.push(v);
    return `$${params.length}`;
  };
  if (filter.hostId !== undefined) where.push(`stream_id = ${param(`host-${filter.hostId}`)}`);
  if (filter.buildId !== undefined) where.push(`data->'payload'->>'buildId' = ${param(filter.buildId)}`);
  if (filter.rolloutId !== undefined) where.push(`correlation->>'rolloutId' = ${param(filter.rolloutId)}`);
  if (filter.outcome !== undefined) where.push(`data->>'outcome' = ${param(filter.outcome)}`);
  const { rows } = await db.query<EventRow>(
    `SELECT ${EVENT_COLUMNS} FROM events WHERE ${where.join(' AND ')} ORDER BY transaction_id, global_position LIMIT ${param(limit)}`,
    params,
  );
  return rows;
}

/**
 * The host streams in which a payload can have been applied by `until`: the ones that applied or
 * REPLACEd with it, and the ones with a drift observation (which may show it).
 */
export async function selectPlacementCandidates(db: Queryable, buildId: string, until: string): Promise<string[]> {
  const { rows } = await db.query<{ stream_id: string }>(
    `SELECT stream_id FROM events
      WHERE type IN ('PayloadApplied', 'PayloadReplaced') AND data->'payload'->>'buildId' = $1 AND recorded_at <= $2
     UNION
     SELECT stream_id FROM events WHERE type = 'DriftDetected' AND recorded_at <= $2`,
    [buildId, until],
  );
  return rows.map((r) => r.stream_id).sort();
}

/** Several streams' events recorded by `until`, each stream in order. */
export async function selectStreamsUntil(db: Queryable, streamIds: string[], until: string): Promise<EventRow[]> {
  const { rows } = await db.query<EventRow>(
    `SELECT ${EVENT_COLUMNS} FROM events WHERE stream_id = ANY($1::text[]) AND recorded_at <= $2 ORDER BY stream_id, stream_position`,
    [streamIds, until],
  );
  return rows;
}

/** Events in (stream, position) order after a point, for the verifier's streaming scan. */
export async function selectChainBatch(db: Queryable, after: { streamId: string; position: number } | null, onlyStream: string | null, limit: number): Promise<EventRow[]> {
  const where: string[] = [];
  const params: unknown[] = [];
  if (after) {
    params.push(after.streamId, after.position);
    where.push('(stream_id, stream_position) > ($1::text, $2::bigint)');
  }
  if (onlyStream !== null) {
    params.push(onlyStream);
    where.push(`stream_id = $${params.length}`);
  }
  params.push(limit);
  const { rows } = await db.query<EventRow>(
    `SELECT ${EVENT_COLUMNS} FROM events ${where.length ? `WHERE ${where.join(' AND ')}` : ''}
      ORDER BY stream_id, stream_position LIMIT $${params.length}`,
    params,
  );
  return rows;
}

export async function selectHeads(db: Queryable, onlyStream: string | null): Promise<Map<string, { position: number; lastHash: string }>> {
  const { rows } = await db.query<{ stream_id: string; stream_position: string; last_hash: Buffer }>(
    'SELECT stream_id, stream_position, last_hash FROM streams WHERE $1::text IS NULL OR stream_id = $1',
    [onlyStream],
  );
  return new Map(rows.map((r) => [r.stream_id, { position: Number(r.stream_position), lastHash: r.last_hash.toString('hex') }]));
}

/** A problem of the global order found in SQL (verify.ts words it). */
export interface OrderProblemRow {
  kind: 'stream-order' | 'rewritten' | 'head-rewritten' | 'future' | 'aborted';
  stream_id: string;
  stream_position: string;
  transaction_id: string;
  detail: string | null;
}

/**
 * What can be checked about each event's place in the global order, (transaction_id,
 * global_position), which the hash chain does not cover:
 * - stream-order: within a stream the global order follows the positions (appends to a stream
 *   hold its lock, so a later one has a later transaction);
 * - rewritten: the row's xmin (the transaction that wrote this row version) is not the transaction
 *   recorded in transaction_id: the row was UPDATEd (or the table restored or rewritten);
 * - head-rewritten: a stream head was written by another transaction than its last event;
 * - future / aborted: a transaction id no committed transaction can have.
 */
export async function selectOrderProblems(db: Queryable, onlyStream: string | null, limit: number): Promise<OrderProblemRow[]> {
  const { rows } = await db.query<OrderProblemRow>(
    `WITH e AS (
       SELECT stream_id, stream_position, transaction_id, global_position, xmin::text::numeric AS row_xid,
              lag(transaction_id) OVER w AS prev_tx, lag(global_position) OVER w AS prev_gp,
              row_number() OVER (PARTITION BY stream_id ORDER BY stream_position DESC) AS from_end
         FROM events WHERE $1::text IS NULL OR stream_id = $1
       WINDOW w AS (PARTITION BY stream_id ORDER BY stream_position)
     ), horizon AS (SELECT pg_snapshot_xmax(pg_current_snapshot()) AS xmax)
     (SELECT 'stream-order' AS kind, stream_id, stream_position::text, transaction_id::text, prev_tx::text AS detail
        FROM e WHERE prev_tx IS NOT NULL AND (transaction_id, global_position) <= (prev_tx, prev_gp)
       ORDER BY stream_id, stream_position LIMIT $2)
     UNION ALL
     (SELECT 'rewritten', stream_id, stream_position::text, transaction_id::text, row_xid::text
        FROM e WHERE (transaction_id::text::numeric % 4294967296) <> row_xid
       ORDER BY stream_id, stream_position LIMIT $2)
     UNION ALL
     (SELECT 'head-rewritten', e.stream_id, e.stream_position::text, e.transaction_id::text, s.xmin::text
        FROM e JOIN streams s ON s.stream_id = e.stream_id
       WHERE e.from_end = 1 AND (e.transaction_id::text::numeric % 4294967296) <> s.xmin::text::numeric
       ORDER BY e.stream_id LIMIT $2)
     UNION ALL
     (SELECT CASE WHEN transaction_id >= (SELECT xmax FROM horizon) THEN 'future' ELSE 'aborted' END,
             stream_id, stream_position::text, transaction_id::text, NULL
        FROM e
       WHERE CASE WHEN transaction_id >= (SELECT xmax FROM horizon) THEN true
                  ELSE coalesce(pg_xact_status(transaction_id) = 'aborted', false) END
       ORDER BY stream_id, stream_position LIMIT $2)`,
    [onlyStream, limit],
  );
  return rows;
}

/** How many events there are, and how many rows were written by another transaction than recorded. */
export async function countRewrittenRows(db: Queryable, onlyStream: string | null): Promise<{ total: number; rewritten: number }> {
  const { rows } = await db.query<{ total: string; rewritten: string }>(
    `SELECT count(*) AS total, count(*) FILTER (WHERE (transaction_id::text::numeric % 4294967296) <> xmin::text::numeric) AS rewritten
       FROM events WHERE $1::text IS NULL OR stream_id = $1`,
    [onlyStream],
  );
  return { total: Number(rows[0]!.total), rewritten: Number(rows[0]!.rewritten) };
}
