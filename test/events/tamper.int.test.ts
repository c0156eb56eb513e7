/**
 * Tamper evidence: changes made directly in SQL, past the append-only trigger (a superuser can
 * always disable it), are found by verifyChains at the first broken link of each stream.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { verifyChains } from '../../src/events/audit/verify.ts';
import { chainHash } from '../../src/events/hash-chain.ts';
import { toChainRecord, type EventRow } from '../../src/events/sql/event-row.ts';
import { EventStore } from '../../src/events/store.ts';
import { createTestDatabase, type TestDatabase } from '../support/database.ts';
import { HELLO, rolloutStory, withIds, xenTestRun } from './support/events.ts';

let db: TestDatabase;
let store: EventStore;

beforeAll(async () => {
  db = await createTestDatabase();
  store = new EventStore(db.pool);
  for (const host of ['update', 'delete', 'tail', 'recorded', 'forged', 'head', 'gone', 'intact']) {
    const events = withIds(host, xenTestRun(host));
    // Several appends per stream, so the chain spans transactions.
    await store.append(`host-${host}`, events.slice(0, 5), { expectedVersion: 0 });
    await store.append(`host-${host}`, events.slice(5), { expectedVersion: 5 });
  }
  await store.append('rollout-t1', withIds('t1', rolloutStory('t1')));
  await db.pool.query('ALTER TABLE events DISABLE TRIGGER USER');
});
afterAll(async () => {
  await db?.drop();
});

const tamper = (sql: string, params: unknown[] = []) => db.pool.query(sql, params);

describe('audit verify', () => {
  it('finds the first broken link of every stream changed behind its back, and nothing else', async () => {
    const clean = await verifyChains(store);
    expect(clean).toMatchObject({ ok: true, streams: 9, events: 8 * 13 + 16, breaks: [] });

    // A cover-up: the failed dependency check at position 13 rewritten as a match.
    await tamper(`UPDATE events SET data = jsonb_set(data, '{outcome}', '"match"') WHERE stream_id = 'host-update' AND stream_position = 13`);
    // An apply removed from the middle of the record.
    await tamper(`DELETE FROM events WHERE stream_id = 'host-delete' AND stream_position = 7`);
    // The last event removed.
    await tamper(`DELETE FROM events WHERE stream_id = 'host-tail' AND stream_position = 13`);
    // When it was recorded, moved.
    await tamper(`UPDATE events SET recorded_at = recorded_at - interval '1 day' WHERE stream_id = 'host-recorded' AND stream_position = 2`);
    // A rewrite that recomputes its own hash: caught by the next link.
    const { rows } = await db.pool.query<EventRow>(
      `SELECT global_position, transaction_id::text, event_id, stream_id, stream_position, type, schema_version, occurred_at, recorded_at, actor, correlation, data, hash
         FROM events WHERE stream_id = 'host-forged' AND stream_position IN (3, 4) ORDER BY stream_position`,
    );
    const forged = { ...toChainRecord(rows[1]!), data: { ...rows[1]!.data, payload: { name: 'xen_bye_world', buildId: HELLO.buildId } } };
    await tamper(`UPDATE events SET data = $1, hash = $2 WHERE stream_id = 'host-forged' AND stream_position = 4`, [
      JSON.stringify(forged.data),
      Buffer.from(chainHash(rows[0]!.hash.toString('hex'), forged), 'hex'),
    ]);
    // The stream head rewound to hide the last event... without deleting it.
    await tamper(`UPDATE streams SET stream_position = 12 WHERE stream_id = 'host-head'`);
    // A whole stream's events deleted, head left behind.
    await tamper(`DELETE FROM events WHERE stream_id = 'host-gone'`);

    const report = await verifyChains(store);
    expect(report.ok).toBe(false);
    expect(report.breaks.map((b) => [b.streamId, b.kind, b.position])).toEqual([
      ['host-delete', 'missing', 7],
      ['host-forged', 'altered', 5],
      ['host-gone', 'missing', 1],
      ['host-head', 'head', 13],
      ['host-recorded', 'altered', 2],
      ['host-tail', 'missing', 13],
      ['host-update', 'altered', 13],
    ]);
    const altered = report.breaks.find((b) => b.streamId === 'host-update');
    expect(altered).toMatchObject({ kind: 'altered', storedHash: expect.stringMatching(/^[0-9a-f]{64}$/), expectedHash: expect.stringMatching(/^[0-9a-f]{64}$/) });
    expect(altered!.kind === 'altered' && altered!.expectedHash !== altered!.storedHash).toBe(true);
    // One stream can be checked alone.
    expect(await verifyChains(store, { streamId: 'host-intact' })).toMatchObject({ ok: true, streams: 1, events: 13 });
    expect((await verifyChains(store, { streamId: 'host-delete', batchSize: 2 })).breaks).toEqual([expect.objectContaining({ kind: 'missing', position: 7 })]);
  });

  it('changes the heads digest when a whole stream is rewritten consistently', async () => {
    const before = await verifyChains(store, { streamId: 'rollout-t1' });
    // Remove the last event and rewind the head to match: every remaining link still holds.
    const prev = await db.pool.query<{ hash: Buffer; recorded_at: Date }>(`SELECT hash, recorded_at FROM events WHERE stream_id = 'rollout-t1' AND stream_position = 15`);
    await tamper(`DELETE FROM events WHERE stream_id = 'rollout-t1' AND stream_position = 16`);
    await tamper(`UPDATE streams SET stream_position = 15, last_hash = $1 WHERE stream_id = 'rollout-t1'`, [prev.rows[0]!.hash]);
    const after = await verifyChains(store, { streamId: 'rollout-t1' });
    // Every remaining link holds and the head matches the chain...
    expect(after.breaks).toEqual([]);
    expect(after.headsDigest).not.toBe(before.headsDigest);
    // ... but the head row was written by another transaction than the stream's last event.
    expect(after.ok).toBe(false);
    expect(after.orderBreaks).toEqual([expect.objectContaining({ kind: 'head-rewritten', streamId: 'rollout-t1', position: 15 })]);
  });
});
