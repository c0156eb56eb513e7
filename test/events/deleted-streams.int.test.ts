/**
 * Streams that disappear: deleted whole (events and head) with the append-only triggers disabled,
 * a stream inserted behind the store's back, and the stream registry's own chain tampered with.
 * verifyChains names each stream, against the registry the store keeps of every stream it opened.
 */
import { copyFile, mkdtemp, readdir, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { verifyChains } from '../../src/events/audit/verify.ts';
import { chainHash, GENESIS_HASH } from '../../src/events/hash-chain.ts';
import { migrate } from '../../src/events/migrate.ts';
import { EVENT_COLUMNS, toChainRecord, type EventRow } from '../../src/events/sql/event-row.ts';
import { EventStore } from '../../src/events/store.ts';
import { createTestDatabase, type TestDatabase } from '../support/database.ts';
import { rolloutStory, withIds, xenTestRun } from './support/events.ts';

const MIGRATIONS = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'src', 'events', 'migrations');

let db: TestDatabase;
let store: EventStore;
const tamper = (sql: string, params: unknown[] = []) => db.pool.query(sql, params);

beforeAll(async () => {
  db = await createTestDatabase();
  store = new EventStore(db.pool);
  for (const host of ['gone', 'gone-too', 'kept', 'unlisted', 'newest']) {
    const events = withIds(host, xenTestRun(host));
    await store.append(`host-${host}`, events.slice(0, 5), { expectedVersion: 0 });
    await store.append(`host-${host}`, events.slice(5), { expectedVersion: 5 });
  }
  await store.append('rollout-r1', withIds('r1', rolloutStory('r1')));
});
afterAll(async () => {
  await db?.drop();
});

async function registry(): Promise<string[]> {
  return (await db.pool.query<{ stream_id: string }>('SELECT stream_id FROM stream_registry ORDER BY stream_id')).rows.map((r) => r.stream_id);
}

async function shardOf(streamId: string): Promise<number> {
  return (await db.pool.query<{ shard: number }>('SELECT stream_registry_shard($1) AS shard', [streamId])).rows[0]!.shard;
}

describe('the stream registry', () => {
  it('records every stream the store opens, once', async () => {
    expect(await registry()).toEqual(['host-gone', 'host-gone-too', 'host-kept', 'host-newest', 'host-unlisted', 'rollout-r1']);
    const report = await verifyChains(store);
    expect(report).toMatchObject({ ok: true, streams: 6, registered: 6, breaks: [], registryBreaks: [] });
  });

  it('holds under appends opening streams at once from many connections', async () => {
    const other = await createTestDatabase();
    try {
      const s = new EventStore(other.pool);
      await Promise.all(
        Array.from({ length: 12 }, async (_, w) => {
          for (let i = 0; i < 5; i++) {
            // Each append opens two streams and goes on with one opened by another writer.
            const a = `w${w}-${i}`;
            const b = `w${(w + 1) % 12}-${i}`;
            await s.appendMany([
              { streamId: `host-${a}`, events: withIds(`${a}:${w}`, xenTestRun(a).slice(0, 2)) },
              { streamId: `rollout-${a}`, events: withIds(`r${a}`, rolloutStory(a).slice(0, 1)) },
              { streamId: `host-${b}`, events: withIds(`${b}:${w}`, xenTestRun(b).slice(2, 3)) },
            ]);
          }
        }),
      );
      const report = await verifyChains(s);
      expect(report.breaks).toEqual([]);
      expect(report.registryBreaks).toEqual([]);
      expect(report).toMatchObject({ ok: true, streams: 120, registered: 120 });
    } finally {
      await other.drop();
    }
  });
});

describe('audit verify names the stream that disappeared', () => {
  it('a host stream deleted whole, events and head, with the triggers disabled', async () => {
    await tamper('ALTER TABLE events DISABLE TRIGGER USER');
    await tamper(`DELETE FROM events WHERE stream_id = 'host-gone'`);
    await tamper(`DELETE FROM streams WHERE stream_id = 'host-gone'`);
    const report = await verifyChains(store);
    expect(report.ok).toBe(false);
    expect(report.breaks).toEqual([
      { kind: 'deleted', streamId: 'host-gone', position: 0, registry: { shard: await shardOf('host-gone'), position: expect.any(Number) }, description: expect.stringContaining('neither its events nor its head are stored: the whole stream was deleted') },
    ]);
    expect(report.registryBreaks).toEqual([]);
    // Checked alone, it is reported deleted, not "no such stream".
    const alone = await verifyChains(store, { streamId: 'host-gone' });
    expect(alone).toMatchObject({ ok: false, streams: 1, breaks: [expect.objectContaining({ kind: 'deleted', streamId: 'host-gone' })] });
  });

  it('a stream deleted together with its registration breaks the registry chain at that position', async () => {
    await tamper('ALTER TABLE stream_registry DISABLE TRIGGER USER');
    await tamper(`DELETE FROM events WHERE stream_id = 'host-gone-too'`);
    await tamper(`DELETE FROM streams WHERE stream_id = 'host-gone-too'`);
    await tamper(`DELETE FROM stream_registry WHERE stream_id = 'host-gone-too'`);
    const report = await verifyChains(store);
    expect(report.ok).toBe(false);
    // The stream is not named (nothing of it is left), but its chain of the registry lost a link.
    expect(report.breaks).toEqual([expect.objectContaining({ kind: 'deleted', streamId: 'host-gone' })]);
    expect(report.registryBreaks).toEqual([expect.objectContaining({ kind: 'missing', shard: await shardOf('host-gone-too'), description: expect.stringMatching(/registrations? .*deleted/) })]);
  });

  it("the newest stream deleted with its registration and its chain's head rewound: the head was not written by its last opening", async () => {
    const shard = await shardOf('rollout-r1');
    // The link before it in its chain, or the chain's start when it was the first.
    const prev = await db.pool.query<{ position: string; hash: Buffer }>(
      `SELECT coalesce(max(registry_position), 0) AS position, coalesce((array_agg(hash ORDER BY registry_position DESC))[1], decode(repeat('00', 32), 'hex')) AS hash
         FROM stream_registry WHERE shard = $1 AND stream_id <> 'rollout-r1'`,
      [shard],
    );
    await tamper(`DELETE FROM events WHERE stream_id = 'rollout-r1'`);
    await tamper(`DELETE FROM streams WHERE stream_id = 'rollout-r1'`);
    await tamper(`DELETE FROM stream_registry WHERE stream_id = 'rollout-r1'`);
    await tamper('UPDATE stream_registry_head SET registry_position = $2, last_hash = $3 WHERE shard = $1', [shard, prev.rows[0]!.position, prev.rows[0]!.hash]);
    const report = await verifyChains(store);
    const rewound = report.registryBreaks.filter((b) => b.shard === shard && b.kind === 'head-rewritten');
    expect(rewound).toEqual([expect.objectContaining({ description: expect.stringMatching(new RegExp(`the head of registry chain ${shard} was written by transaction \\d+, not by (the one that registered its last stream|migration 0011)`)) })]);
    expect(report.breaks.map((b) => b.streamId)).not.toContain('rollout-r1');
  });

  it('a stream inserted behind the store, with a chain that holds, is not registered', async () => {
    const { rows } = await db.pool.query<EventRow>(`SELECT ${EVENT_COLUMNS} FROM events WHERE stream_id = 'host-kept' ORDER BY stream_position`);
    let previous = GENESIS_HASH;
    const forged = rows.map((r) => {
      const record = { ...toChainRecord(r), streamId: 'host-forged', eventId: (r.event_id[0] === 'f' ? 'e' : 'f') + r.event_id.slice(1) };
      previous = chainHash(previous, record);
      return { ...record, hash: previous };
    });
    for (const f of forged) {
      await tamper(
        `INSERT INTO events (event_id, stream_id, stream_position, type, schema_version, occurred_at, recorded_at, actor, correlation, data, hash)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)`,
        [f.eventId, f.streamId, f.streamPosition, f.type, f.schemaVersion, f.occurredAt, f.recordedAt, JSON.stringify(f.actor), JSON.stringify(f.correlation), JSON.stringify(f.data), Buffer.from(f.hash, 'hex')],
      );
    }
    await tamper(`INSERT INTO streams (stream_id, stream_position, last_hash, last_recorded_at) VALUES ('host-forged', $1, $2, $3)`, [forged.length, Buffer.from(previous, 'hex'), forged.at(-1)!.recordedAt]);
    const report = await verifyChains(store);
    expect(report.breaks.filter((b) => b.streamId === 'host-forged')).toEqual([expect.objectContaining({ kind: 'unregistered', streamId: 'host-forged' })]);
    expect((await verifyChains(store, { streamId: 'host-forged' })).breaks).toEqual([expect.objectContaining({ kind: 'unregistered' })]);
  });
});

describe('migration 0011', () => {
  it('registers every stream a store held before it', async () => {
    const source = await createTestDatabase();
    const target = await createTestDatabase({ migrate: false });
    const before = await mkdtemp(path.join(os.tmpdir(), 'fleetpatch-migrations-'));
    try {
      const s = new EventStore(source.pool);
      for (const host of ['a', 'b']) await s.append(`host-${host}`, withIds(`m${host}`, xenTestRun(host)));
      await s.append('rollout-m', withIds('m', rolloutStory('m')));
      // The store as migrations 1 to 10 left it, with those streams in it.
      for (const f of (await readdir(MIGRATIONS)).filter((f) => f < '0011')) await copyFile(path.join(MIGRATIONS, f), path.join(before, f));
      await migrate(target.pool, before);
      // Events and heads in one transaction, as an append writes them.
      const copy = await target.pool.connect();
      await copy.query('BEGIN');
      const events = await source.pool.query<{ j: unknown }>(`SELECT json_agg(e ORDER BY e.gp) AS j FROM (SELECT global_position AS gp, event_id, stream_id, stream_position, type, schema_version, occurred_at, recorded_at, actor, correlation, data, encode(hash, 'hex') AS hash FROM events) e`);
      await copy.query(
        `INSERT INTO events (event_id, stream_id, stream_position, type, schema_version, occurred_at, recorded_at, actor, correlation, data, hash)
         SELECT event_id, stream_id, stream_position, type, schema_version, occurred_at, recorded_at, actor, correlation, data, decode(hash, 'hex')
           FROM jsonb_to_recordset($1::jsonb) AS e(event_id uuid, stream_id text, stream_position bigint, type text, schema_version int, occurred_at timestamptz, recorded_at timestamptz, actor jsonb, correlation jsonb, data jsonb, hash text)`,
        [JSON.stringify(events.rows[0]!.j)],
      );
      const heads = await source.pool.query<{ j: unknown }>(`SELECT json_agg(h) AS j FROM (SELECT stream_id, stream_position, encode(last_hash, 'hex') AS last_hash, last_recorded_at FROM streams) h`);
      await copy.query(
        `INSERT INTO streams SELECT stream_id, stream_position, decode(last_hash, 'hex'), last_recorded_at
           FROM jsonb_to_recordset($1::jsonb) AS h(stream_id text, stream_position bigint, last_hash text, last_recorded_at timestamptz)`,
        [JSON.stringify(heads.rows[0]!.j)],
      );
      await copy.query('COMMIT');
      copy.release();
      expect((await migrate(target.pool))[0]).toBe(11); // and any later ones
      const report = await verifyChains(new EventStore(target.pool));
      expect(report).toMatchObject({ ok: true, streams: 3, registered: 3, breaks: [], registryBreaks: [] });
      // And the store goes on registering what it opens after it.
      await new EventStore(target.pool).append('host-c', withIds('mc', xenTestRun('c')));
      expect(await verifyChains(new EventStore(target.pool))).toMatchObject({ ok: true, streams: 4, registered: 4 });
    } finally {
      await rm(before, { recursive: true, force: true });
      await target.drop();
      await source.drop();
    }
  });
});
