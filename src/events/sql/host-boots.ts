/** SQL for host_boots (migration 0009), each statement with its typed caller. */
import type { Queryable } from './event-row.ts';

/** Hosts among `seen` whose boot id differs from the one last seen (hosts never seen are not "changed"). */
export async function selectChangedBoots(db: Queryable, seen: readonly { hostId: string; bootId: string }[]): Promise<{ hostId: string; previous: string }[]> {
  const r = await db.query<{ host_id: string; previous: string }>(
    `SELECT h.host_id, h.boot_id AS previous
       FROM unnest($1::text[], $2::text[]) AS s(host_id, boot_id)
       JOIN host_boots h ON h.host_id = s.host_id
      WHERE h.boot_id <> s.boot_id`,
    [seen.map((s) => s.hostId), seen.map((s) => s.bootId)],
  );
  return r.rows.map((row) => ({ hostId: row.host_id, previous: row.previous }));
}

export async function upsertBoots(db: Queryable, seen: readonly { hostId: string; bootId: string; bootedAt: string | null }[]): Promise<void> {
  await db.query(
    `INSERT INTO host_boots (host_id, boot_id, booted_at, seen_at)
     SELECT host_id, boot_id, booted_at, now() FROM unnest($1::text[], $2::text[], $3::timestamptz[]) AS s(host_id, boot_id, booted_at)
     ON CONFLICT (host_id) DO UPDATE SET boot_id = EXCLUDED.boot_id, booted_at = EXCLUDED.booted_at, seen_at = now()`,
    [seen.map((s) => s.hostId), seen.map((s) => s.bootId), seen.map((s) => s.bootedAt)],
  );
}
