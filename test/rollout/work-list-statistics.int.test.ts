/**
 * After the preflight writes a rollout's work list, a host's fenced write (its intent, its former
 * state, its outcome) is a primary-key lookup, even when PostgreSQL's statistics were taken
 * before this rollout existed (after an earlier rollout, as on any fleet that has had one). With
 * those statistics the planner believed the new rollout had about one row and walked all of them
 * in wave order for every write: at 10,000 hosts, 0.7 ms and 10,188 buffers a write instead of
 * 0.09 ms and 5, which doubled PostgreSQL's CPU in the runs where it happened. Measured here in
 * rows the write looked at and threw away, through the preflight activity as a workflow runs it.
 */
import { MockActivityEnvironment } from '@temporalio/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createActivities, type Activities } from '../../activities/index.ts';
import { createActivityDeps } from '../../src/app/activity-deps.ts';
import { readPlanFile, resolvePlanPayloads } from '../../src/control/rollouts.ts';
import { startFleetServer, type RunningFleet } from '../../src/emulator/index.ts';
import { finishWrite } from '../../src/events/sql/claims.ts';
import { inlineWrite } from '../../src/events/sql/row-writes.ts';
import { createLogger } from '../../src/runtime/logger.ts';
import { createTestDatabase, type TestDatabase } from '../support/database.ts';
import { IMAGE_A, tempDir, writePayload, writePlan } from '../support/rollout.ts';
// Trusts the test signing key through FLEETPATCH_TRUSTED_KEYS, as a worker would.
import '../support/signing.ts';

const HOSTS = 2_000;
let db: TestDatabase;
let fleet: RunningFleet;
let acts: Activities;

beforeAll(async () => {
  db = await createTestDatabase();
  fleet = await startFleetServer({ hosts: HOSTS, images: [IMAGE_A], seed: 1, port: 0 });
  const logger = createLogger('warn', { destination: { write: () => undefined } });
  acts = createActivities(createActivityDeps({ pool: db.pool, fleetFile: fleet.fleetFile, logger, actionDeadlineMs: 10_000 }));
});

afterAll(async () => {
  await fleet?.close();
  await db?.drop();
});

describe('the work list after the preflight', () => {
  it('gives a host\'s fenced writes a primary-key lookup, with statistics from before the rollout existed', { timeout: 60_000 }, async () => {
    // An earlier rollout of 100 hosts, finished; the statistics are taken then.
    await db.pool.query(`INSERT INTO rollout_preflights (rollout_id, summary) VALUES ('earlier', '{}')`);
    await db.pool.query(
      `INSERT INTO rollout_targets (rollout_id, host_id, wave, step, position, assignment, build_ids, status)
       SELECT 'earlier', 'host-' || lpad(i::text, 4, '0'), 0, 0, i, 'apply', ARRAY['ab'], 'patched' FROM generate_series(0, 99) AS i`,
    );
    await db.pool.query('ANALYZE rollout_targets');

    const dir = await tempDir('work-list-statistics');
    const fix = await writePayload(dir, 'fix', { funcs: [{ target: 'xen_extra_version', returns: '-fix' }] }, IMAGE_A);
    const { plan, dir: d, file } = await readPlanFile(await writePlan(dir, { name: 'big', payloads: [{ file: fix.file }], waves: [{ name: 'all', hosts: '100%' }], concurrency: 50 }));
    const resolved = await resolvePlanPayloads(plan, d, { pool: db.pool, actor: { kind: 'user', id: 'test' }, store: true, planFile: file });
    const env = new MockActivityEnvironment({ workflowExecution: { workflowId: 'rollout-big', runId: 'run-1' }, activityId: '1', attempt: 1, heartbeatTimeoutMs: 30_000 });
    await env.run(acts.preflight, { rolloutId: 'big', plan: resolved });
    expect(Number((await db.pool.query(`SELECT count(*) AS n FROM rollout_targets WHERE rollout_id = 'big'`)).rows[0].n)).toBe(HOSTS);

    // The write a lane sends when a host is patched, for a host late in the wave order.
    const write = inlineWrite(finishWrite('big', 'host-1990', 0, { status: 'patched', applied: [{ name: 'fix', buildId: fix.buildId }] }));
    const client = await db.pool.connect();
    try {
      await client.query('BEGIN');
      type Node = { 'Node Type': string; 'Rows Removed by Filter'?: number; Plans?: Node[] };
      const r = await client.query<{ 'QUERY PLAN': [{ Plan: Node }] }>(`EXPLAIN (ANALYZE, FORMAT JSON) ${write}`);
      // Rows the statement looked at and threw away: none for a lookup, every other row of the
      // rollout (1,999) for the walk.
      const removed = (n: Node): number => (n['Rows Removed by Filter'] ?? 0) + (n.Plans ?? []).reduce((sum, c) => sum + removed(c), 0);
      expect(removed(r.rows[0]!['QUERY PLAN'][0].Plan)).toBeLessThan(10);
      const updated = await client.query(write);
      expect(updated.rowCount).toBe(1);
    } finally {
      await client.query('ROLLBACK');
      client.release();
    }
  });
});
