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

export async function selectStepHosts(db: Db, rolloutId: string, wave: number, step: number, offset: number, limit: number): Promise<string[]> {
  const r = await db.query<{ host_id: string }>(
    'SELECT host_id FROM rollout_targets WHERE rollout_id = $1 AND wave = $2 AND step = $3 AND position >= $4 ORDER BY position LIMIT $5',
    [rolloutId, wave, step, offset, limit],
  );
  return r.rows.map((row) => row.host_id);
}

export async function updateHostOutcome(
  db: Db,
  rolloutId: string,
  hostId: string,
  outcome: { status: string; applied: unknown[]; failure?: unknown; restore?: unknown },
): Promise<void> {
  await db.query('UPDATE rollout_targets SET status = $3, applied = $4, failure = $5, restore = COALESCE($6, restore), updated_at = now() WHERE rollout_id = $1 AND host_id = $2', [
    rolloutId,
    hostId,
    outcome.status,
    JSON.stringify(outcome.applied),
    outcome.failure ? JSON.stringify(outcome.failure) : null,
    outcome.restore ? JSON.stringify(outcome.restore) : null,
  ]);
}

export interface FormerStateRow {
  formerStack: { name: string; buildId: string }[];
  formerLoaded: { name: string; buildId: string }[];
  formerResult: { kind: 'string' | 'integer' | 'undefined'; value: string | null; why?: string } | null;
}

/**
 * Marks the host touched and keeps its former state: first write wins, so a retried step (or a
 * second run of the same host) never overwrites what the host ran before the rollout with an
 * intermediate state. Returns the state kept; null when the host is not one of the rollout's targets.
 */
export async function markTouched(db: Db, rolloutId: string, hostId: string, former: FormerStateRow): Promise<FormerStateRow | null> {
  const r = await db.query<{ former_stack: FormerStateRow['formerStack']; former_loaded: FormerStateRow['formerLoaded']; former_result: FormerStateRow['formerResult'] }>(
    `UPDATE rollout_targets
        SET former_stack = COALESCE(former_stack, $3), former_loaded = COALESCE(former_loaded, $4),
            former_result = COALESCE(former_result, $5), touched_at = COALESCE(touched_at, now()), updated_at = now()
      WHERE rollout_id = $1 AND host_id = $2
      RETURNING former_stack, former_loaded, former_result`,
    [rolloutId, hostId, JSON.stringify(former.formerStack), JSON.stringify(former.formerLoaded), former.formerResult ? JSON.stringify(former.formerResult) : null],
  );
  const row = r.rows[0];
  return row ? { formerStack: row.former_stack, formerLoaded: row.former_loaded, formerResult: row.former_result } : null;
}

export interface TouchedHostRow extends FormerStateRow {
  hostId: string;
}

/** Hosts this rollout touched (changed something on, or was about to), after `after` in host-id order. */
export async function selectTouchedHosts(db: Db, rolloutId: string, after: string | null, limit: number): Promise<TouchedHostRow[]> {
  const r = await db.query<{ host_id: string; former_stack: FormerStateRow['formerStack']; former_loaded: FormerStateRow['formerLoaded']; former_result: FormerStateRow['formerResult'] }>(
    `SELECT host_id, former_stack, former_loaded, former_result FROM rollout_targets
     WHERE rollout_id = $1 AND touched_at IS NOT NULL AND ($2::text IS NULL OR host_id > $2)
     ORDER BY host_id LIMIT $3`,
    [rolloutId, after, limit],
  );
  return r.rows.map((row) => ({ hostId: row.host_id, formerStack: row.former_stack, formerLoaded: row.former_loaded ?? [], formerResult: row.former_result }));
}

export async function countTouchedHosts(db: Db, rolloutId: string): Promise<number> {
  const r = await db.query<{ n: string }>('SELECT count(*) AS n FROM rollout_targets WHERE rollout_id = $1 AND touched_at IS NOT NULL', [rolloutId]);
  return Number(r.rows[0]?.n ?? 0);
}

/** The last restore's verdict for a host, and its status after a rollback. */
export async function updateRestore(db: Db, rolloutId: string, hostId: string, restore: unknown, status?: string): Promise<void> {
  await db.query('UPDATE rollout_targets SET restore = $3, status = COALESCE($4, status), updated_at = now() WHERE rollout_id = $1 AND host_id = $2', [
    rolloutId,
    hostId,
    JSON.stringify(restore),
    status ?? null,
  ]);
}
