/**
 * Statements that check stored payload bytes against what the event store recorded about them
 * (payload-store.ts reads one payload, audit verify all of them).
 */
import { EVENT_COLUMNS, type EventRow, type Queryable } from './event-row.ts';
import type { PayloadRow } from './payloads.ts';

/** The rows of one stream in position order, and its head. */
export async function selectStreamWithHead(db: Queryable, streamId: string): Promise<{ rows: EventRow[]; head: { position: number; lastHash: string } | null }> {
  const [events, head] = await Promise.all([
    db.query<EventRow>(`SELECT ${EVENT_COLUMNS} FROM events WHERE stream_id = $1 ORDER BY stream_position`, [streamId]),
    db.query<{ stream_position: string; last_hash: Buffer }>('SELECT stream_position, last_hash FROM streams WHERE stream_id = $1', [streamId]),
  ]);
  const h = head.rows[0];
  return { rows: events.rows, head: h ? { position: Number(h.stream_position), lastHash: h.last_hash.toString('hex') } : null };
}

export interface RecordedDigest {
  buildId: string;
  name: string;
  sha256: string;
  size: number;
}

/** What every PayloadStored event recorded (one payload when `onlyBuildId` is given). */
export async function selectRecordedDigests(db: Queryable, onlyBuildId: string | null): Promise<Map<string, RecordedDigest>> {
  const { rows } = await db.query<{ build_id: string; name: string; sha256: string; size: string }>(
    `SELECT data->'payload'->>'buildId' AS build_id, data->'payload'->>'name' AS name, data->>'sha256' AS sha256, data->>'size' AS size
       FROM events
      WHERE type = 'PayloadStored' AND ($1::text IS NULL OR stream_id = 'payload-' || $1)
      ORDER BY stream_id, stream_position`,
    [onlyBuildId],
  );
  const out = new Map<string, RecordedDigest>();
  for (const r of rows) if (!out.has(r.build_id)) out.set(r.build_id, { buildId: r.build_id, name: r.name, sha256: r.sha256, size: Number(r.size) });
  return out;
}

/** Stored payloads with their bytes, in build-id order, a batch at a time. */
export async function selectPayloadBatch(db: Queryable, afterBuildId: string | null, onlyBuildId: string | null, limit: number): Promise<(PayloadRow & { bytes: Buffer })[]> {
  const { rows } = await db.query<PayloadRow & { bytes: Buffer }>(
    `SELECT build_id, name, sha256, size, depends, xen_depends, signature, signature_algorithm, signature_key_id, stored_at, bytes
       FROM payloads
      WHERE ($1::text IS NULL OR build_id > $1) AND ($2::text IS NULL OR build_id = $2)
      ORDER BY build_id
      LIMIT $3`,
    [afterBuildId, onlyBuildId, limit],
  );
  return rows;
}
