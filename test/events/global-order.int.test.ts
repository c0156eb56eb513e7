/**
 * The global order readers can trust: events appear in readAll without gaps and never before an
 * event already read, whatever order concurrent writers commit in. A trigger in this test's own
 * database holds chosen transactions open after their insert (until the test opens a gate, or for
 * a random moment), so commits really do happen out of the order in which positions were taken.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { dependencyChecks } from '../../src/events/audit/checks.ts';
import { hostTimeline } from '../../src/events/audit/timeline.ts';
import { eventIdFromKey } from '../../src/events/event-id.ts';
import { EventStore, START, cursorOf, type RecordedEvent } from '../../src/events/store.ts';
import { createTestDatabase, type TestDatabase } from '../support/database.ts';
import { HELLO, hostEvents, withIds } from './support/events.ts';

let db: TestDatabase;
let store: EventStore;
const GATE = 4242;

beforeAll(async () => {
  db = await createTestDatabase();
  store = new EventStore(db.pool);
  await db.pool.query(`
    CREATE FUNCTION test_hold_commit() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      -- Wait at the gate: an advisory lock the test holds until it lets the transaction commit.
      IF NEW.stream_id LIKE 'host-slow-%' THEN PERFORM pg_advisory_lock_shared(${GATE}); PERFORM pg_advisory_unlock_shared(${GATE}); END IF;
      IF NEW.stream_id LIKE 'host-jitter-%' THEN PERFORM pg_sleep(random() * 0.015); END IF;
      RETURN NULL;
    END $$;
    CREATE TRIGGER test_hold_commit AFTER INSERT ON events FOR EACH ROW EXECUTE FUNCTION test_hold_commit();`);
});
afterAll(async () => {
  await db?.drop();
});

/**
 * Everything in the global order, once at least `expected` events are visible: pg_snapshot_xmin is
 * cluster-wide, so any transaction elsewhere on the server (another test creating its database)
 * can hold readAll back for a moment; it never reorders it.
 */
async function readEverything(expected: number): Promise<RecordedEvent[]> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    const out: RecordedEvent[] = [];
    let cursor = START;
    for (;;) {
      const batch = await store.readAllAfter(cursor, 500);
      out.push(...batch);
      if (batch.length < 500) break;
      cursor = cursorOf(batch[batch.length - 1]!);
    }
    if (out.length >= expected || Date.now() > deadline) return out;
    await sleep(20);
  }
}

/** Printed as transaction/global position/stream@position, so a failure shows where and how. */
const fmt = (e: RecordedEvent) => `${e.transactionId}/${e.globalPosition}/${e.streamId}@${e.streamPosition}`;
const after = (e: RecordedEvent, c: { transactionId: string; globalPosition: number }) =>
  BigInt(e.transactionId) > BigInt(c.transactionId) || (e.transactionId === c.transactionId && e.globalPosition > c.globalPosition);
const committed = async () => Number((await db.pool.query('SELECT count(*) AS n FROM events')).rows[0].n);

describe('global order under concurrent writers', () => {
  it('orders transaction ids as numbers, 9 before 10, in readAll, timelines and checks', async () => {
    // Two facts of one host written with chosen transaction ids (old ones, below any horizon): the
    // one of transaction 10 inserted first, so only a numeric order puts transaction 9 first.
    const check = {
      hostId: 'xid-order',
      payload: HELLO,
      phase: 'apply',
      on: 'depends',
      expected: HELLO.buildId,
      found: HELLO.buildId,
      against: { kind: 'hypervisor' },
      outcome: 'match',
    };
    for (const [xid, position] of [
      [10, 2],
      [9, 1],
    ] as const) {
      await db.pool.query(
        `INSERT INTO events (transaction_id, event_id, stream_id, stream_position, type, schema_version, occurred_at, recorded_at, actor, correlation, data, hash)
         VALUES ($1::text::xid8, $2, 'host-xid-order', $3, 'DependencyChecked', 1, now(), now(), '{"kind":"system","id":"test"}', '{}', $4, sha256('x'))`,
        [String(xid), eventIdFromKey(`xid-order:${position}`), position, JSON.stringify(check)],
      );
    }
    const all = await readEverything(await committed());
    expect(all.filter((e) => e.streamId === 'host-xid-order').map((e) => [e.transactionId, e.streamPosition])).toEqual([
      ['9', 1],
      ['10', 2],
    ]);
    expect((await hostTimeline(store, 'xid-order')).map((e) => e.streamPosition)).toEqual([1, 2]);
    expect((await dependencyChecks(store, { hostId: 'xid-order' })).map((e) => e.streamPosition)).toEqual([1, 2]);
    expect((await store.readAllAfter({ transactionId: '9', globalPosition: all[0]!.globalPosition }, 10)).map((e) => e.transactionId)[0]).toBe('10');
  });

  it('holds back a later commit until the earlier transaction finishes, where global_position alone would skip', async () => {
    const before = await readEverything(await committed());
    const from = before.length ? cursorOf(before[before.length - 1]!) : START;
    const maxBefore = Number((await db.pool.query('SELECT coalesce(max(global_position), 0) AS m FROM events')).rows[0].m);

    const gate = await db.pool.connect();
    await gate.query('SELECT pg_advisory_lock($1)', [GATE]);
    const slow = store.append('host-slow-1', withIds('slow', [hostEvents('slow-1').uploaded(HELLO)]));
    // Wait until the slow transaction has inserted its event (taking its position) and waits at the gate.
    for (let waited = 0; ; waited += 10) {
      const { rows } = await db.pool.query(`SELECT count(*) AS n FROM pg_locks WHERE locktype = 'advisory' AND objid = $1 AND objsubid = 1 AND NOT granted
           AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`, [GATE]);
      if (Number(rows[0].n) > 0) break;
      if (waited > 10_000) throw new Error('the slow append never reached the gate');
      await sleep(10);
    }
    const fast = await store.append('host-fast-1', withIds('fast', [hostEvents('fast-1').uploaded(HELLO)]));

    // A reader going by global_position alone already sees the later event, and would move past
    // the earlier one before it commits.
    const naive = await db.pool.query<{ stream_id: string }>('SELECT stream_id FROM events WHERE global_position > $1 ORDER BY global_position', [maxBefore]);
    expect(naive.rows.map((r) => r.stream_id)).toEqual(['host-fast-1']);
    // readAll does not show it yet: an older transaction is still running.
    expect(await store.readAllAfter(from, 100)).toEqual([]);

    await gate.query('SELECT pg_advisory_unlock($1)', [GATE]);
    gate.release();
    const slowResult = await slow;
    expect(slowResult.events[0]!.globalPosition).toBeLessThan(fast.events[0]!.globalPosition);
    const after = (await readEverything(before.length + 2)).slice(before.length);
    expect(after.map((e) => e.streamId)).toEqual(['host-slow-1', 'host-fast-1']);
  });

  it('never shows a reader a gap or a reordering while many writers commit out of order', async () => {
    const WRITERS = 8;
    const APPENDS = 30;
    const STREAMS = 12;
    let appended = 0;
    let writing = true;

    // Which global position each append took, in the order the appends committed.
    const commits: number[] = [];
    const writer = async (w: number) => {
      for (let i = 0; i < APPENDS; i++) {
        const host = `jitter-${(w * 7 + i * 5) % STREAMS}`;
        const h = hostEvents(host);
        const events = withIds(`w${w}-${i}`, Array.from({ length: 1 + ((w + i) % 3) }, (_, k) => h.uploaded({ name: `w${w}i${i}k${k}`, buildId: HELLO.buildId })));
        if (i % 5 === 4) {
          // A multi-stream batch: two streams in one transaction.
          const other = `jitter-${(w + i + 1) % STREAMS}`;
          const ho = hostEvents(other);
          const extra = withIds(`w${w}-${i}-o`, [ho.uploaded({ name: `w${w}i${i}o`, buildId: HELLO.buildId })]);
          const r =
            other === host
              ? [await store.append(`host-${host}`, [...events, ...extra])]
              : await store.appendMany([{ streamId: `host-${host}`, events }, { streamId: `host-${other}`, events: extra }]);
          commits.push(r[0]!.events[0]!.globalPosition);
          appended += events.length + extra.length;
        } else {
          const r = await store.append(`host-${host}`, events);
          commits.push(r.events[0]!.globalPosition);
          appended += events.length;
        }
      }
    };

    const backwards: { cursor: string; got: string[] }[] = [];
    const earlier = await committed();
    const seen: RecordedEvent[] = [];
    let cursor = START;
    const reader = (async () => {
      const deadline = Date.now() + 60_000;
      while (writing || seen.length < earlier + appended) {
        if (Date.now() > deadline) throw new Error(`reader saw ${seen.length} of ${earlier + appended} events`);
        const batch = await store.readAllAfter(cursor, 25);
        if (batch.length > 0) {
          // Every batch continues strictly after the cursor it was asked for, in strictly increasing order.
          const before = batch.filter((e, i) => !after(e, i === 0 ? cursor : cursorOf(batch[i - 1]!)));
          if (before.length > 0) backwards.push({ cursor: `${cursor.transactionId}/${cursor.globalPosition}`, got: batch.map(fmt) });
          seen.push(...batch);
          cursor = cursorOf(batch[batch.length - 1]!);
        } else {
          await sleep(3);
        }
      }
    })();
    await Promise.all(Array.from({ length: WRITERS }, (_, w) => writer(w)));
    writing = false;
    await reader;

    expect(backwards).toEqual([]);
    // Every event exactly once, in exactly the order a reader starting now gets.
    const total = earlier + appended;
    expect(await committed()).toBe(total);
    const final = await readEverything(total);
    expect(seen.length).toBe(total);
    expect(new Set(seen.map((e) => e.eventId)).size).toBe(total);
    const duplicates = (list: RecordedEvent[]) => list.filter((e, i) => list.findIndex((x) => x.eventId === e.eventId) !== i).map(fmt);
    expect({ length: final.length, duplicates: duplicates(final) }).toEqual({ length: total, duplicates: [] });
    expect(seen.map(fmt)).toEqual(final.map(fmt));

    // Within each stream, positions arrive 1, 2, 3, ... (the global order keeps stream order).
    const next = new Map<string, number>();
    for (const e of seen) {
      expect(e.streamPosition).toBe((next.get(e.streamId) ?? 0) + 1);
      next.set(e.streamId, e.streamPosition);
    }
    // Appends committed out of the order in which they took their global positions (many times):
    // a reader going by global_position alone would have skipped events here.
    expect(commits.some((p, i) => i > 0 && p < commits[i - 1]!)).toBe(true);
  });
});
