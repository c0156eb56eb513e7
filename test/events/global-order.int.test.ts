/**
 * The global order readers can trust: events appear in readAll without gaps and never before an
 * event already read, whatever order concurrent writers commit in. A trigger in this test's own
 * database holds chosen transactions open after their insert, so commits really do happen out of
 * the order in which global positions were taken.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EventStore, START, cursorOf, type RecordedEvent } from '../../src/events/store.ts';
import { createTestDatabase, type TestDatabase } from '../support/database.ts';
import { HELLO, hostEvents, withIds } from './support/events.ts';

let db: TestDatabase;
let store: EventStore;

beforeAll(async () => {
  db = await createTestDatabase();
  store = new EventStore(db.pool);
  await db.pool.query(`
    CREATE FUNCTION test_hold_commit() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      IF NEW.stream_id LIKE 'host-slow-%' THEN PERFORM pg_sleep(0.8); END IF;
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

const committed = async () => Number((await db.pool.query('SELECT count(*) AS n FROM events')).rows[0].n);

describe('global order under concurrent writers', () => {
  it('holds back a later commit until the earlier transaction finishes, where global_position alone would skip', async () => {
    const before = await readEverything(await committed());
    const from = before.length ? cursorOf(before[before.length - 1]!) : START;
    const maxBefore = Number((await db.pool.query('SELECT coalesce(max(global_position), 0) AS m FROM events')).rows[0].m);

    const slow = store.append('host-slow-1', withIds('slow', [hostEvents('slow-1').uploaded(HELLO)]));
    await sleep(250); // the slow transaction has inserted (and taken its position) and is held open
    const fast = await store.append('host-fast-1', withIds('fast', [hostEvents('fast-1').uploaded(HELLO)]));

    // A reader going by global_position alone already sees the later event, and would move past
    // the earlier one before it commits.
    const naive = await db.pool.query<{ stream_id: string }>('SELECT stream_id FROM events WHERE global_position > $1 ORDER BY global_position', [maxBefore]);
    expect(naive.rows.map((r) => r.stream_id)).toEqual(['host-fast-1']);
    // readAll does not show it yet: an older transaction is still running.
    expect(await store.readAllAfter(from, 100)).toEqual([]);

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

    const earlier = await committed();
    const seen: RecordedEvent[] = [];
    let cursor = START;
    const reader = (async () => {
      const deadline = Date.now() + 60_000;
      while (writing || seen.length < earlier + appended) {
        if (Date.now() > deadline) throw new Error(`reader saw ${seen.length} of ${earlier + appended} events`);
        const batch = await store.readAllAfter(cursor, 25);
        if (batch.length > 0) {
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

    // Every event exactly once, in exactly the order a reader starting now gets.
    const total = earlier + appended;
    expect(await committed()).toBe(total);
    const final = await readEverything(total);
    expect(seen.length).toBe(total);
    expect(new Set(seen.map((e) => e.eventId)).size).toBe(total);
    // Printed as transaction/global position/stream@position, so a failure shows where and how.
    const fmt = (e: RecordedEvent) => `${e.transactionId}/${e.globalPosition}/${e.streamId}@${e.streamPosition}`;
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
