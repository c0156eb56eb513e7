/** SQL for rollout_preflights and rollout_targets (migration 0004), each statement with its typed caller. */
import type pg from 'pg';
import type { TargetHost } from '../../rollout/preflight.ts';

type Db = pg.Pool | pg.PoolClient;

export async function selectPreflight<T>(db: Db, rolloutId: string): Promise<T | null> {
  const r = await db.query<{ summary: T }>('SELECT summary FROM rollout_preflights WHERE rollout_id = $1', [rolloutId]);
  return r.rows[0]?.summary ?? null;
}

/** Inserts the preflight and its targets unless they exist; returns false when they did. */
export async function insertPreflight(client: pg.PoolClient, rolloutId: string, summary: unknown, targets: TargetHost[]): Promise<boolean> {
  const inserted = await client.query('INSERT INTO rollout_preflights (rollout_id, summary) VALUES ($1, $2) ON CONFLICT DO NOTHING', [rolloutId, JSON.stringify(summary)]);
  if (inserted.rowCount === 0) return false;
  // unnest keeps a 10,000-host plan to a handful of statements.
  for (let i = 0; i < targets.length; i += 2000) {
    const chunk = targets.slice(i, i + 2000);
    await client.query(
      `INSERT INTO rollout_targets (rollout_id, host_id, wave, step, position, grp, assignment, build_ids)
       SELECT $1, t.host_id, t.wave, t.step, t.position, t.grp, t.assignment, string_to_array(t.build_ids, ',')
       FROM unnest($2::text[], $3::int[], $4::int[], $5::int[], $6::text[], $7::text[], $8::text[])
         AS t(host_id, wave, step, position, grp, assignment, build_ids)`,
      [
        rolloutId,
        chunk.map((t) => t.hostId),
        chunk.map((t) => t.wave),
        chunk.map((t) => t.step),
        chunk.map((t) => t.position),
        chunk.map((t) => t.group),
        chunk.map((t) => t.assignment),
        chunk.map((t) => t.buildIds.join(',')),
      ],
    );
  }
  return true;
}

/**
 * Brings the planner's statistics of the work list up to date after a rollout's hosts were
 * written. Until autovacuum gets to it, PostgreSQL believes that a rollout which did not exist at
 * the last ANALYZE has about one row, and plans each fenced write of a host (rollout, host, fence)
 * as a walk of the rollout's rows in wave order (rollout_targets_order) rather than a primary-key
 * lookup: measured at 10,000 hosts, 0.7 ms and 10,188 buffers a write instead of 0.09 ms and 5,
 * which doubled PostgreSQL's CPU in the runs where it happened. ANALYZE samples at most 30,000
 * rows, so it costs tens of milliseconds whatever the table's size.
 */
export async function refreshWorkListStatistics(db: Db): Promise<void> {
  await db.query('ANALYZE rollout_targets');
}
