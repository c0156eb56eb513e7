import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isFleetpatchError, type ErrorCode } from '../../src/errors.ts';
import { eventIdFromKey } from '../../src/events/event-id.ts';
import { EventStore } from '../../src/events/store.ts';
import { verifyChains } from '../../src/events/audit/verify.ts';
import { createTestDatabase, type TestDatabase } from '../support/database.ts';
import { BYE, HELLO, XEN, hostEvents, rolloutStory, withIds } from './support/events.ts';

let db: TestDatabase;
let store: EventStore;

beforeAll(async () => {
  db = await createTestDatabase();
  store = new EventStore(db.pool);
});
afterAll(async () => {
  await db?.drop();
});

async function refusal(p: Promise<unknown>): Promise<{ code: ErrorCode; message: string; details: Readonly<Record<string, unknown>> }> {
  try {
    await p;
  } catch (e) {
    if (isFleetpatchError(e)) return { code: e.code, message: e.message, details: e.details };
    throw e;
  }
  throw new Error('expected a refusal');
}

const count = async (streamId: string) => Number((await db.pool.query('SELECT count(*) FROM events WHERE stream_id = $1', [streamId])).rows[0].count);

describe('EventStore.append', () => {
  it('appends at the expected version and reads the stream back as written', async () => {
    const h = hostEvents('a1');
    const events = withIds('a1', [h.checked(HELLO, XEN, XEN, { kind: 'hypervisor' }), h.uploaded(HELLO), h.applied(HELLO)]);
    const r = await store.append('host-a1', events, { expectedVersion: 0 });
    expect(r).toMatchObject({ streamId: 'host-a1', nextExpectedVersion: 3, alreadyRecorded: false });
    expect(r.events.map((e) => e.streamPosition)).toEqual([1, 2, 3]);
    const back = await store.readStream('host-a1');
    expect(back.map((e) => e.event)).toEqual(events.map((e) => expect.objectContaining({ ...e.event, correlation: {} })));
    expect(back.map((e) => e.eventId)).toEqual(events.map((e) => e.eventId));
    expect(back[0]!.event).toMatchObject({ type: 'DependencyChecked', on: 'depends', outcome: 'match' });
    expect(await store.streamVersion('host-a1')).toBe(3);
    const more = await store.append('host-a1', withIds('a1-more', [h.uploaded(BYE)]), { expectedVersion: 3 });
    expect(more.events[0]!.streamPosition).toBe(4);
    expect((await store.readStream('host-a1', { from: 2, to: 3 })).map((e) => e.streamPosition)).toEqual([2, 3]);
  });

  it('refuses an append when the stream moved on, typed, and writes nothing', async () => {
    const h = hostEvents('a2');
    await store.append('host-a2', withIds('a2', [h.uploaded(HELLO)]), { expectedVersion: 0 });
    const err = await refusal(store.append('host-a2', withIds('a2-late', [h.applied(HELLO)]), { expectedVersion: 0 }));
    expect(err.code).toBe('STREAM_VERSION_CONFLICT');
    expect(err.details).toMatchObject({ streamId: 'host-a2', expectedVersion: 0, actualVersion: 1 });
    expect(await count('host-a2')).toBe(1);
  });

  it('lets exactly one of several concurrent appends at the same version win', async () => {
    const h = hostEvents('a3');
    const results = await Promise.allSettled(Array.from({ length: 6 }, (_, i) => store.append('host-a3', withIds(`a3-${i}`, [h.uploaded({ name: `p${i}`, buildId: HELLO.buildId })]), { expectedVersion: 0 })));
    expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
    for (const r of results) if (r.status === 'rejected') expect((r.reason as { code: string }).code).toBe('STREAM_VERSION_CONFLICT');
    expect(await count('host-a3')).toBe(1);
  });

  it('answers "already recorded" to a retried append, even with a stale expected version', async () => {
    const h = hostEvents('a4');
    const events = withIds('a4', [h.uploaded(HELLO), h.applied(HELLO)]);
    const first = await store.append('host-a4', events, { expectedVersion: 0 });
    const retry = await store.append('host-a4', events, { expectedVersion: 0 });
    expect(retry.alreadyRecorded).toBe(true);
    expect(retry.events).toEqual(first.events.map((e) => ({ ...e, alreadyRecorded: true })));
    expect(retry.nextExpectedVersion).toBe(2);
    // Concurrent retries of one activity: one write, every answer a success.
    const again = withIds('a4-again', [h.uploaded(BYE)]);
    const racing = await Promise.all(Array.from({ length: 5 }, () => store.append('host-a4', again)));
    expect(racing.filter((r) => !r.alreadyRecorded)).toHaveLength(1);
    expect(new Set(racing.map((r) => r.events[0]!.globalPosition)).size).toBe(1);
    expect(await count('host-a4')).toBe(3);
  });

  it('writes only the new events of a partly recorded append', async () => {
    const h = hostEvents('a5');
    const events = withIds('a5', [h.uploaded(HELLO), h.applied(HELLO)]);
    await store.append('host-a5', events.slice(0, 1));
    const r = await store.append('host-a5', events);
    expect(r.events.map((e) => [e.streamPosition, e.alreadyRecorded])).toEqual([
      [1, true],
      [2, false],
    ]);
  });

  it('refuses an id reused for another fact, an event in the wrong stream, and an invalid event', async () => {
    const h = hostEvents('a6');
    const id = eventIdFromKey('a6-reused');
    await store.append('host-a6', [{ eventId: id, event: h.uploaded(HELLO) }]);
    expect((await refusal(store.append('host-a6', [{ eventId: id, event: h.applied(HELLO) }]))).message).toMatch(/already recorded for another fact/);
    expect((await refusal(store.append('host-other', [{ eventId: eventIdFromKey('a6-x'), event: h.applied(HELLO) }]))).message).toMatch(/belongs to stream host-a6/);
    const bad = await refusal(store.append('host-a6', [{ eventId: eventIdFromKey('a6-y'), event: { ...h.applied(HELLO), payload: { name: '', buildId: 'zz' } } as never }]));
    expect(bad.code).toBe('EVENT_INVALID');
    expect((await refusal(store.append('host-a6', [{ eventId: 'not-a-uuid', event: h.applied(HELLO) }]))).code).toBe('EVENT_INVALID');
    expect(await count('host-a6')).toBe(1);
  });

  it('appends many streams in one transaction: all or nothing', async () => {
    const story = rolloutStory('b1');
    const h1 = hostEvents('b1-h1', undefined, 'b1');
    const h2 = hostEvents('b1-h2', undefined, 'b1');
    const ok = await store.appendMany([
      { streamId: 'rollout-b1', events: withIds('b1', story.slice(0, 2)), expectedVersion: 0 },
      { streamId: 'host-b1-h1', events: withIds('b1-h1', [h1.uploaded(HELLO), h1.applied(HELLO)]) },
      { streamId: 'host-b1-h2', events: withIds('b1-h2', [h2.uploaded(HELLO)]) },
    ]);
    expect(ok.map((r) => r.nextExpectedVersion)).toEqual([2, 2, 1]);
    // One stale batch refuses the whole append.
    const err = await refusal(
      store.appendMany([
        { streamId: 'host-b1-h2', events: withIds('b1-h2-more', [h2.applied(HELLO)]), expectedVersion: 1 },
        { streamId: 'rollout-b1', events: withIds('b1-more', story.slice(2, 3)), expectedVersion: 0 },
      ]),
    );
    expect(err.code).toBe('STREAM_VERSION_CONFLICT');
    expect(await count('host-b1-h2')).toBe(1);
    expect(await count('rollout-b1')).toBe(2);
  });

  it('records when, per stream never going backwards, and chains hashes that verify', async () => {
    const h = hostEvents('c1');
    for (let i = 0; i < 5; i++) await store.append('host-c1', withIds(`c1-${i}`, [h.uploaded({ name: `p${i}`, buildId: HELLO.buildId })]));
    const events = await store.readStream('host-c1');
    const times = events.map((e) => Date.parse(e.recordedAt));
    expect(times).toEqual([...times].sort((a, b) => a - b));
    expect(new Set(events.map((e) => e.hash)).size).toBe(5);
    const report = await verifyChains(store, { streamId: 'host-c1' });
    expect(report).toMatchObject({ ok: true, streams: 1, events: 5, breaks: [] });
  });

  it('is append-only: UPDATE, DELETE and TRUNCATE are refused by the database', async () => {
    await store.append('host-d1', withIds('d1', [hostEvents('d1').uploaded(HELLO)]));
    await expect(db.pool.query(`UPDATE events SET data = '{}' WHERE stream_id = 'host-d1'`)).rejects.toThrow(/append-only/);
    await expect(db.pool.query(`DELETE FROM events WHERE stream_id = 'host-d1'`)).rejects.toThrow(/append-only/);
    await expect(db.pool.query('TRUNCATE events')).rejects.toThrow(/append-only/);
    expect(await count('host-d1')).toBe(1);
  });

  it('reads everything in the global order, continuing after a global position', async () => {
    const all = await store.readAll(0, 100_000);
    expect(all.length).toBeGreaterThan(10);
    const keys = all.map((e) => [BigInt(e.transactionId), e.globalPosition] as const);
    for (let i = 1; i < keys.length; i++) {
      const [t0, p0] = keys[i - 1]!;
      const [t1, p1] = keys[i]!;
      expect(t1 > t0 || (t1 === t0 && p1 > p0)).toBe(true);
    }
    const after = await store.readAll(all[4]!.globalPosition, 3);
    expect(after.map((e) => e.eventId)).toEqual(all.slice(5, 8).map((e) => e.eventId));
    expect((await refusal(store.readAll(987_654_321))).code).toBe('EVENT_NOT_FOUND');
  });
});
