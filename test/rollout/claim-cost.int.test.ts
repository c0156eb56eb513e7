/**
 * A claim late in a large step must cost what one early in it costs. With the planner's
 * statistics taken when every host was still planned (autovacuum analyses the work list right
 * after the preflight fills it), the claim once walked the step in position order past every
 * finished host: at 10,000 hosts, 9.5 ms of PostgreSQL's CPU per claim instead of 0.35 ms, most of
 * the database's work in a rollout. Measured here in buffers read, which do not depend on how
 * busy the machine is.
 */
import type pg from 'pg';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { CLAIM_HOSTS_SQL, CLAIM_ROLLBACK_HOSTS_SQL } from '../../src/events/sql/claims.ts';
import { createTestDatabase, type TestDatabase } from '../support/database.ts';

const HOSTS = 4_000;
let db: TestDatabase;

// A database each: the planner's statistics are what each case is about.
beforeEach(async () => {
  db = await createTestDatabase();
});

afterEach(async () => {
  await db?.drop();
});

/** Shared buffers the statement touched, from EXPLAIN ANALYZE, inside a transaction rolled back. */
async function buffersOf(sql: string, values: unknown[]): Promise<{ buffers: number; rows: number }> {
  const client = await db.pool.connect();
  try {
    await client.query('BEGIN');
    const r = await client.query<{ 'QUERY PLAN': [{ Plan: { 'Shared Hit Blocks': number; 'Shared Read Blocks': number; 'Actual Rows': number } }] }>(
      `EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) ${sql}`,
      values,
    );
    const plan = r.rows[0]!['QUERY PLAN'][0].Plan;
    return { buffers: plan['Shared Hit Blocks'] + plan['Shared Read Blocks'], rows: plan['Actual Rows'] };
  } finally {
    await client.query('ROLLBACK');
    client.release();
  }
}

async function fill(client: pg.Pool, rolloutId: string, hosts = HOSTS): Promise<void> {
  await client.query(`INSERT INTO rollout_preflights (rollout_id, summary) VALUES ($1, '{}')`, [rolloutId]);
  await client.query(
    `INSERT INTO rollout_targets (rollout_id, host_id, wave, step, position, assignment, build_ids)
     SELECT $1, 'host-' || lpad(i::text, 5, '0'), 0, 0, i, 'apply', ARRAY['ab'] FROM generate_series(0, $2 - 1) AS i`,
    [rolloutId, hosts],
  );
}

/**
 * When the planner's statistics were taken: after an earlier, small rollout, before this one's
 * rows existed (the bench's warm-up, a fleet's previous rollout); or right after they were
 * written, when every host was planned.
 */
const WHEN = ['before the work list was filled', 'when every host was planned'] as const;

async function earlierRollout(tables: string): Promise<void> {
  await fill(db.pool, 'earlier', 100);
  await db.pool.query(`UPDATE rollout_targets SET status = 'patched' WHERE rollout_id = 'earlier'`);
  await db.pool.query(`INSERT INTO rollback_targets (rollback_id, rollout_id, host_id, status) SELECT 'earlier', rollout_id, host_id, 'done' FROM rollout_targets WHERE rollout_id = 'earlier'`);
  await db.pool.query(`ANALYZE ${tables}`);
}

describe('claiming hosts from a large step', () => {
  for (const [i, when] of WHEN.entries()) {
    it(`reads as few buffers for the last hosts as for the first, with statistics taken ${when}`, async () => {
      const rollout = `big-${i}`;
      if (i === 0) await earlierRollout('rollout_targets');
      await fill(db.pool, rollout);
      if (i === 1) await db.pool.query('ANALYZE rollout_targets');
      const claim = [rollout, 0, 0, 'batch-1', 60_000, 1];
      const early = await buffersOf(CLAIM_HOSTS_SQL, claim);
      expect(early.rows).toBe(1);

      // All but the last 10 hosts finished (one claim at a time, in a real rollout), and one is
      // running on a lease that lapsed; the statistics still say what they said.
      await db.pool.query(`UPDATE rollout_targets SET status = 'patched', fence = fence + 1 WHERE rollout_id = $1 AND position < $2`, [rollout, HOSTS - 10]);
      await db.pool.query(`UPDATE rollout_targets SET status = 'running', lease_until = now() - interval '1 minute' WHERE rollout_id = $1 AND position = $2`, [rollout, HOSTS - 1]);
      const late = await buffersOf(CLAIM_HOSTS_SQL, claim);
      expect(late.rows).toBe(1);
      // A walk past 3,990 finished hosts, or through the whole work list to find the picked row,
      // read thousands of buffers. A claim reads a few dozen more than the first did: the first
      // scan after the hosts finished steps over their stale entries once (and marks them dead).
      expect(late.buffers).toBeLessThan(early.buffers + 200);
    });

    it(`does the same for a rollback of a large rollout, with statistics taken ${when}`, async () => {
      const rollout = `undo-${i}`;
      const rollback = `rb-${i}`;
      if (i === 0) await earlierRollout('rollout_targets, rollback_targets');
      await fill(db.pool, rollout);
      await db.pool.query(`INSERT INTO rollback_targets (rollback_id, rollout_id, host_id) SELECT $1, rollout_id, host_id FROM rollout_targets WHERE rollout_id = $2`, [rollback, rollout]);
      if (i === 1) await db.pool.query('ANALYZE rollout_targets, rollback_targets');
      const claim = [rollback, rollout, `rollback-${rollback}/`, `rollback-${rollback}/1`, 60_000, 1];
      const early = await buffersOf(CLAIM_ROLLBACK_HOSTS_SQL, claim);
      expect(early.rows).toBe(1);
      await db.pool.query(`UPDATE rollback_targets SET status = 'done', fence = fence + 1 WHERE rollback_id = $1 AND host_id < 'host-03990'`, [rollback]);
      const late = await buffersOf(CLAIM_ROLLBACK_HOSTS_SQL, claim);
      expect(late.rows).toBe(1);
      expect(late.buffers).toBeLessThan(early.buffers + 200);
    });
  }
});
