/**
 * A batch renews its hosts' leases while its own group commit writes those hosts' rows. At 10,000
 * hosts the two deadlocked (the renewal locked rows in scan order, the commit in submission
 * order); PostgreSQL aborted the commit and the hosts in it failed with "deadlock detected",
 * spending the budget on nothing the hosts did. These tests replay that meeting on real PostgreSQL.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type pg from 'pg';
import { GroupCommitter } from '../../src/events/group-commit.ts';
import { EventStore } from '../../src/events/store.ts';
import { renewLeases } from '../../src/events/sql/claims.ts';
import { createTestDatabase, type TestDatabase } from '../support/database.ts';

const ROLLOUT = 'lease-renewal-1';
const CLAIMANT = 'batch-0/attempt-1';
const HOSTS = ['host-0001', 'host-0002', 'host-0003'];

describe('lease renewal beside the batch\'s own commits', () => {
  let db: TestDatabase;
  let other: pg.PoolClient;

  beforeAll(async () => {
    db = await createTestDatabase();
    await db.pool.query('INSERT INTO rollout_preflights (rollout_id, summary) VALUES ($1, $2)', [ROLLOUT, '{}']);
    for (const [i, hostId] of HOSTS.entries()) {
      await db.pool.query(
        `INSERT INTO rollout_targets (rollout_id, host_id, wave, step, position, assignment, build_ids, status, claimed_by, lease_until)
         VALUES ($1, $2, 0, 0, $3, 'apply', '{}', 'running', $4, now())`,
        [ROLLOUT, hostId, i, CLAIMANT],
      );
    }
    other = await db.pool.connect();
  });

  afterAll(async () => {
    other?.release();
    await db?.drop();
  });

  const leases = async () =>
    Object.fromEntries(
      (await db.pool.query<{ host_id: string; lease_until: Date }>('SELECT host_id, lease_until FROM rollout_targets WHERE rollout_id = $1', [ROLLOUT])).rows.map((r) => [
        r.host_id,
        r.lease_until.getTime(),
      ]),
    );

  it('renews every lease no commit holds, without waiting for the one that holds a row (which used to deadlock)', async () => {
    const before = await leases();
    await other.query('BEGIN');
    // A commit of the batch is writing host-0002's intent right now.
    await other.query(`UPDATE rollout_targets SET intent = '{"step":"apply"}' WHERE rollout_id = $1 AND host_id = 'host-0002'`, [ROLLOUT]);
    const renewal = renewLeases(db.pool, ROLLOUT, CLAIMANT, 60_000);
    const waited = await Promise.race([renewal.then(() => false), new Promise<boolean>((r) => setTimeout(() => r(true), 3_000))]);
    expect(waited, 'the renewal waited for the commit that holds host-0002').toBe(false);
    expect(await renewal).toBe(2);
    // The commit goes on to another host of the batch: nothing holds it any more.
    await other.query(`UPDATE rollout_targets SET intent = '{"step":"apply"}' WHERE rollout_id = $1 AND host_id = 'host-0001'`, [ROLLOUT]);
    await other.query('COMMIT');
    const after = await leases();
    expect(after['host-0001']).toBeGreaterThan(before['host-0001']!);
    expect(after['host-0003']).toBeGreaterThan(before['host-0003']!);
    // Skipped this time; the next renewal, a quarter of a lease later, catches it.
    expect(after['host-0002']).toBe(before['host-0002']);
    expect(await renewLeases(db.pool, ROLLOUT, CLAIMANT, 60_000)).toBe(3);
  });

  it('a group commit PostgreSQL aborts as a deadlock victim is run again, and its submitters never see the error', async () => {
    const committer = new GroupCommitter(new EventStore(db.pool), { lingerMs: 0 });
    await other.query('BEGIN');
    // Detect late on this side, so that the committer's transaction is the one PostgreSQL aborts.
    await other.query(`SET LOCAL deadlock_timeout = '10s'`);
    await other.query(`UPDATE rollout_targets SET failure = '{"n":1}' WHERE rollout_id = $1 AND host_id = 'host-0003'`, [ROLLOUT]);
    const submitted = committer.submit(
      [
        {
          key: 'lease-renewal-test/host-0001/1',
          event: { type: 'HostRebooted', schemaVersion: 1, occurredAt: new Date().toISOString(), actor: { kind: 'system', id: 'test' }, hostId: 'host-0001', reason: 'boot 1' },
        },
      ],
      [
        { text: `UPDATE rollout_targets SET failure = '{"n":2}' WHERE rollout_id = $1 AND host_id = 'host-0001'`, values: [ROLLOUT] },
        { text: `UPDATE rollout_targets SET failure = '{"n":2}' WHERE rollout_id = $1 AND host_id = 'host-0003'`, values: [ROLLOUT] },
      ],
    );
    // Wait until the committer holds host-0001 and waits for host-0003, then close the circle.
    for (let i = 0; i < 100; i++) {
      const waiting = await db.pool.query(`SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'`);
      if (waiting.rowCount) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    await other.query(`UPDATE rollout_targets SET failure = '{"n":1}' WHERE rollout_id = $1 AND host_id = 'host-0001'`, [ROLLOUT]);
    await other.query('COMMIT');
    expect(await submitted).toEqual([1, 1]);
    const rows = await db.pool.query<{ host_id: string; failure: { n: number } }>('SELECT host_id, failure FROM rollout_targets WHERE rollout_id = $1 ORDER BY host_id', [ROLLOUT]);
    expect(rows.rows.map((r) => [r.host_id, r.failure?.n])).toEqual([
      ['host-0001', 2],
      ['host-0002', undefined],
      ['host-0003', 2],
    ]);
    const events = await db.pool.query(`SELECT count(*)::int AS n FROM events WHERE data->>'hostId' = 'host-0001'`);
    expect(events.rows[0].n).toBe(1);
  });
});
