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
  outcome: { status: string; applied: unknown[]; replacedStack?: unknown[] | undefined; failure?: unknown },
): Promise<void> {
  await db.query('UPDATE rollout_targets SET status = $3, applied = $4, replaced_stack = $5, failure = $6, updated_at = now() WHERE rollout_id = $1 AND host_id = $2', [
    rolloutId,
    hostId,
    outcome.status,
    JSON.stringify(outcome.applied),
    outcome.replacedStack ? JSON.stringify(outcome.replacedStack) : null,
    outcome.failure ? JSON.stringify(outcome.failure) : null,
  ]);
}

export interface PatchedHostRow {
  hostId: string;
  applied: { name: string; buildId: string }[];
  replacedStack: { name: string; buildId: string }[] | null;
}

/** Hosts this rollout applied something on, after `after` in host-id order. */
export async function selectPatchedHosts(db: Db, rolloutId: string, after: string | null, limit: number): Promise<PatchedHostRow[]> {
  const r = await db.query<{ host_id: string; applied: PatchedHostRow['applied']; replaced_stack: PatchedHostRow['replacedStack'] }>(
    `SELECT host_id, applied, replaced_stack FROM rollout_targets
     WHERE rollout_id = $1 AND jsonb_array_length(applied) > 0 AND ($2::text IS NULL OR host_id > $2)
     ORDER BY host_id LIMIT $3`,
    [rolloutId, after, limit],
  );
  return r.rows.map((row) => ({ hostId: row.host_id, applied: row.applied, replacedStack: row.replaced_stack }));
}
