/**
 * A group commit goes to PostgreSQL in two round trips, its events and work-list writes inlined as
 * literals (store.appendWithRows): every value must arrive exactly as a parameter would have
 * (quotes, backslashes, JSON, NULL, numbers), the events' hash chains must verify, each write's
 * row count must be its own (a fenced write that missed says 0), and a write that fails leaves
 * nothing written, events included.
 */
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { verifyChains } from '../../src/events/audit/verify.ts';
import type { DomainEventInput } from '../../src/events/catalogue.ts';
import { eventIdFromKey } from '../../src/events/event-id.ts';
import { finishWrite, intentWrite, touchWrite } from '../../src/events/sql/claims.ts';
import { inlineWrite, quoteLiteral } from '../../src/events/sql/row-writes.ts';
import { EventStore } from '../../src/events/store.ts';
import { createTestDatabase, type TestDatabase } from '../support/database.ts';

const ROLLOUT = 'row-writes-1';

describe('row writes in one round trip', () => {
  let db: TestDatabase;

  beforeAll(async () => {
    db = await createTestDatabase();
    await db.pool.query('INSERT INTO rollout_preflights (rollout_id, summary) VALUES ($1, $2)', [ROLLOUT, '{}']);
    for (const [i, hostId] of ['host-a', 'host-b', "host-'c'"].entries()) {
      await db.pool.query(
        `INSERT INTO rollout_targets (rollout_id, host_id, wave, step, position, assignment, build_ids, status, fence)
         VALUES ($1, $2, 0, 0, $3, 'apply', '{}', 'running', 1)`,
        [ROLLOUT, hostId, i],
      );
    }
  });

  afterAll(async () => {
    await db?.drop();
  });

  const paused = (reason: string): DomainEventInput => ({
    type: 'RolloutPaused',
    schemaVersion: 1,
    occurredAt: '2026-12-01T10:00:00.000Z',
    actor: { kind: 'user', id: "o'neil" },
    correlation: {},
    rolloutId: ROLLOUT,
    reason,
  });

  it('writes hostile text, JSON and NULL exactly, events and rows, and counts rows per write (a stale fence counts 0)', async () => {
    const nasty = `it's a \\ backslash'); DROP TABLE rollout_targets; --`;
    const former = [{ name: `o'neil \\x00 "quoted"`, buildId: 'ab'.repeat(20) }];
    const writes = [
      touchWrite(ROLLOUT, 'host-a', 1, { formerStack: former, formerLoaded: [], formerResult: { kind: 'string', value: nasty }, targetStack: former, intent: nasty, bootId: null }),
      intentWrite(ROLLOUT, "host-'c'", 1, 'upload 0102'),
      intentWrite(ROLLOUT, 'host-b', 7, 'a stale fence writes nothing'),
      finishWrite(ROLLOUT, 'host-b', 1, { status: 'patched', applied: former }),
    ];
    const store = new EventStore(db.pool);
    const events = [nasty, 'tab\there, newline\nthere, quote " and unicode \u00e9\u{1f600}', '\\\\server\\share $1 $$ E\'x\''].map((reason, i) => ({ eventId: eventIdFromKey(`row-writes/${i}`), event: paused(reason) }));
    const { results, rowCounts } = await store.appendWithRows([{ streamId: `rollout-${ROLLOUT}`, events }], writes);
    expect(rowCounts).toEqual([1, 1, 0, 1]);
    expect(results[0]!.events.map((e) => e.streamPosition)).toEqual([1, 2, 3]);
    const back = await store.readStream(`rollout-${ROLLOUT}`);
    expect(back.map((e) => (e.event as { reason: string }).reason)).toEqual(events.map((e) => (e.event as { reason: string }).reason));
    expect(back[0]!.event.actor).toEqual({ kind: 'user', id: "o'neil" });
    expect((await verifyChains(store, { streamId: `rollout-${ROLLOUT}` })).ok).toBe(true);
    const rows = (await db.pool.query('SELECT host_id, intent, former_stack, former_result, status, applied FROM rollout_targets WHERE rollout_id = $1 ORDER BY position', [ROLLOUT])).rows;
    expect(rows[0]).toMatchObject({ host_id: 'host-a', intent: nasty, former_stack: former, former_result: { kind: 'string', value: nasty } });
    expect(rows[1]).toMatchObject({ host_id: 'host-b', intent: null, status: 'patched', applied: former });
    expect(rows[2]).toMatchObject({ host_id: "host-'c'", intent: 'upload 0102' });
  });

  it('a failing write fails the transaction: none of the writes before it stays, nor the events', async () => {
    const store = new EventStore(db.pool);
    const before = await store.streamVersion(`rollout-${ROLLOUT}`);
    await expect(
      store.appendWithRows(
        [{ streamId: `rollout-${ROLLOUT}`, events: [{ eventId: eventIdFromKey('row-writes/failing'), event: paused('never recorded') }] }],
        [intentWrite(ROLLOUT, 'host-a', 1, 'first'), { text: 'UPDATE rollout_targets SET fence = $1 WHERE rollout_id = $2', values: ['not a number', ROLLOUT] }],
      ),
    ).rejects.toThrow(/integer/);
    const r = await db.pool.query("SELECT intent FROM rollout_targets WHERE rollout_id = $1 AND host_id = 'host-a'", [ROLLOUT]);
    expect(r.rows[0].intent).not.toBe('first');
    expect(await store.streamVersion(`rollout-${ROLLOUT}`)).toBe(before);
    // The connection went back to the pool usable, outside any transaction.
    expect((await db.pool.query('SELECT 1 AS one')).rows[0].one).toBe(1);
  });

  it('quotes a literal exactly as node-postgres does', () => {
    for (const s of ['', 'plain', "it's", 'back\\slash', "both ' and \\", "''\\\\''", 'E\'x\'', '\u00e9\u{1f600}\n\t']) {
      expect(quoteLiteral(s)).toBe(pg.escapeLiteral(s));
    }
  });

  it('refuses values our statements never pass, and placeholders without a value', () => {
    expect(() => inlineWrite({ text: 'SELECT $1', values: [new Date()] })).toThrow(/string, a finite number, a boolean or null, not object/);
    expect(() => inlineWrite({ text: 'SELECT $1', values: [Number.NaN] })).toThrow(/not NaN/);
    expect(() => inlineWrite({ text: 'SELECT $2', values: ['x'] })).toThrow(/refers to \$2 but has 1 value/);
    // $1 never eats the start of $10.
    expect(inlineWrite({ text: 'SELECT $10, $1', values: ['a', 2, 3, 4, 5, 6, 7, 8, 9, 'j'] })).toBe("SELECT 'j', 'a'");
  });
});
