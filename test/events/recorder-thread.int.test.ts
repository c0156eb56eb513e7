/**
 * The recording thread (src/events/recorder/): a worker's group commit appends on a thread of its
 * own. What a user relies on is that nothing about recording changes: the same events, chained
 * and stored once; the same row writes in the same transaction; and the same errors, so that an
 * outage is waited out and a bad append fails its hosts.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GroupCommitter, isConnectionError } from '../../src/events/group-commit.ts';
import { RecorderThread } from '../../src/events/recorder/client.ts';
import { EventStore } from '../../src/events/store.ts';
import { eventIdFromKey } from '../../src/events/event-id.ts';
import { FleetpatchError } from '../../src/errors.ts';
import { verifyChains } from '../../src/events/audit/verify.ts';
import { createTestDatabase, type TestDatabase } from '../support/database.ts';

const rebooted = (hostId: string, reason: string) => ({
  type: 'HostRebooted' as const,
  schemaVersion: 1 as const,
  occurredAt: new Date().toISOString(),
  actor: { kind: 'system' as const, id: 'test' },
  hostId,
  reason,
});

describe('the recording thread', () => {
  let db: TestDatabase;
  let recorder: RecorderThread;
  beforeAll(async () => {
    db = await createTestDatabase();
    await db.pool.query('CREATE TABLE recorder_rows (host_id text PRIMARY KEY, note text)');
    await db.pool.query(`INSERT INTO recorder_rows VALUES ('h-1', NULL), ('h-2', NULL)`);
    recorder = new RecorderThread({ databaseUrl: db.url });
  });
  afterAll(async () => {
    await recorder?.close();
    await db?.drop();
  });

  it('records group-committed facts once, chained, with their row writes in the same transaction', async () => {
    const committer = new GroupCommitter(recorder, { lingerMs: 0 });
    const counts = await Promise.all(
      ['h-1', 'h-2', 'h-3'].map((h) =>
        committer.submit(
          [0, 1, 2].map((n) => ({ key: `recorder-test/${h}/${n}`, event: rebooted(h, `boot ${n}`) })),
          [{ text: 'UPDATE recorder_rows SET note = $2 WHERE host_id = $1', values: [h, `noted ${h}`] }],
        ),
      ),
    );
    // h-3 has no row: its write touched nothing, and says so.
    expect(counts).toEqual([[1], [1], [0]]);
    // Submitted again (a retried batch): nothing is written twice.
    await committer.submit([{ key: 'recorder-test/h-1/0', event: rebooted('h-1', 'boot 0') }]);
    await committer.drain();

    const store = new EventStore(db.pool);
    for (const h of ['h-1', 'h-2', 'h-3']) {
      const events = await store.readStream(`host-${h}`);
      expect(events.map((e) => [e.eventId, (e.event as { reason: string }).reason])).toEqual([0, 1, 2].map((n) => [eventIdFromKey(`recorder-test/${h}/${n}`), `boot ${n}`]));
    }
    expect((await db.pool.query('SELECT host_id, note FROM recorder_rows ORDER BY host_id')).rows).toEqual([
      { host_id: 'h-1', note: 'noted h-1' },
      { host_id: 'h-2', note: 'noted h-2' },
    ]);
    const report = await verifyChains(store);
    expect(report.ok).toBe(true);
  });

  it('hands back the store\'s own errors: a version conflict as itself, and nothing of the append written', async () => {
    const append = recorder.appendWithRows(
      [{ streamId: 'host-h-1', expectedVersion: 1, events: [{ eventId: eventIdFromKey('recorder-test/conflict'), event: rebooted('h-1', 'conflicting') }] }],
      [{ text: 'UPDATE recorder_rows SET note = $2 WHERE host_id = $1', values: ['h-2', 'must not stay'] }],
    );
    const e = await append.catch((x: unknown) => x);
    expect(e).toBeInstanceOf(FleetpatchError);
    expect((e as FleetpatchError).code).toBe('STREAM_VERSION_CONFLICT');
    expect((e as FleetpatchError).message).toMatch(/host-h-1 is at version 3, the append expected 1/);
    expect((await db.pool.query(`SELECT note FROM recorder_rows WHERE host_id = 'h-2'`)).rows[0].note).toBe('noted h-2');
  });

  it('reports a database it cannot reach as an outage, which the group commit waits out', async () => {
    const away = new RecorderThread({ databaseUrl: 'postgres://postgres@127.0.0.1:1/none' });
    try {
      const e = await away.appendWithRows([{ streamId: 'host-h-9', events: [{ eventId: eventIdFromKey('recorder-test/away'), event: rebooted('h-9', 'away') }] }], []).catch((x: unknown) => x);
      expect(e).toBeInstanceOf(Error);
      expect(isConnectionError(e)).toBe(true);
    } finally {
      await away.close();
    }
  });

  it('fails the appends a dead thread held, and starts a new thread for the next one', async () => {
    const thread = new RecorderThread({ databaseUrl: db.url });
    try {
      const held = thread.appendWithRows([{ streamId: 'host-h-7', events: [{ eventId: eventIdFromKey('recorder-test/dead/0'), event: rebooted('h-7', 'held') }] }], []);
      // What an uncaught exception or an out-of-memory in the thread would do.
      await (thread as unknown as { worker: { terminate(): Promise<number> } }).worker.terminate();
      await expect(held).rejects.toThrow(/the recording thread stopped/);
      await thread.appendWithRows([{ streamId: 'host-h-7', events: [{ eventId: eventIdFromKey('recorder-test/dead/1'), event: rebooted('h-7', 'after') }] }], []);
      const reasons = (await new EventStore(db.pool).readStream('host-h-7')).map((e) => (e.event as { reason: string }).reason);
      expect(reasons.at(-1)).toBe('after');
    } finally {
      await thread.close();
    }
  });
});
