/**
 * Where a chaos run's rollouts, repairs and rollbacks stand, read from their work lists (the
 * engine's own truth, migration 0007), so that faults can be timed by progress rather than by the
 * clock, and land on the hosts they are meant for: one already patched, one being patched, one a
 * rollback has not reached yet.
 */
import type pg from 'pg';

export interface Progress {
  /** Hosts finished (any outcome), being worked on now, and in all. */
  finished: number;
  running: number;
  total: number;
}

const progressOf = (row: { finished: string; running: string; total: string } | undefined): Progress => ({
  finished: Number(row?.finished ?? 0),
  running: Number(row?.running ?? 0),
  total: Number(row?.total ?? 0),
});

/** A rollout's work list, or one of its waves (a repair's is the wave after the plan's). */
export async function rolloutProgress(pool: pg.Pool, rolloutId: string, wave?: number): Promise<Progress> {
  const r = await pool.query<{ finished: string; running: string; total: string }>(
    `SELECT count(*) FILTER (WHERE status IN ('patched', 'already', 'failed')) AS finished, count(*) FILTER (WHERE status = 'running') AS running, count(*) AS total
       FROM rollout_targets WHERE rollout_id = $1 AND ($2::int IS NULL OR wave = $2)`,
    [rolloutId, wave ?? null],
  );
  return progressOf(r.rows[0]);
}

/** The rollbacks of a rollout, all together (a chaos run rolls each rollout back once). */
export async function rollbackProgress(pool: pg.Pool, rolloutId: string): Promise<Progress> {
  const r = await pool.query<{ finished: string; running: string; total: string }>(
    `SELECT count(*) FILTER (WHERE status = 'done') AS finished, count(*) FILTER (WHERE status = 'running') AS running, count(*) AS total FROM rollback_targets WHERE rollout_id = $1`,
    [rolloutId],
  );
  return progressOf(r.rows[0]);
}

/** A rollout's hosts in a work-list status ('planned', 'running', 'patched', ...), optionally of one wave, in host order. */
export async function rolloutHosts(pool: pg.Pool, rolloutId: string, status: string, wave?: { below?: number; is?: number }): Promise<string[]> {
  const r = await pool.query<{ host_id: string }>(
    `SELECT host_id FROM rollout_targets WHERE rollout_id = $1 AND status = $2 AND ($3::int IS NULL OR wave < $3) AND ($4::int IS NULL OR wave = $4) ORDER BY host_id`,
    [rolloutId, status, wave?.below ?? null, wave?.is ?? null],
  );
  return r.rows.map((row) => row.host_id);
}

/** A rollout's hosts in a rollback status ('planned', 'running', 'done'), in host order. */
export async function rollbackHosts(pool: pg.Pool, rolloutId: string, status: string): Promise<string[]> {
  const r = await pool.query<{ host_id: string }>('SELECT host_id FROM rollback_targets WHERE rollout_id = $1 AND status = $2 ORDER BY host_id', [rolloutId, status]);
  return r.rows.map((row) => row.host_id);
}
