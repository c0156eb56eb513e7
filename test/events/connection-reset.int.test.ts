/**
 * PostgreSQL connections reset while events are appended (a server restart, a proxy dropping
 * connections): the process must not exit on the dropped client, group-committed facts must all be
 * recorded once the database answers again, and nothing may be recorded twice.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GroupCommitter } from '../../src/events/group-commit.ts';
import { EventStore } from '../../src/events/store.ts';
import { createTestDatabase, type TestDatabase } from '../support/database.ts';

describe('connections reset under append load', () => {
  let db: TestDatabase;
  beforeAll(async () => {
    db = await createTestDatabase();
  });
  afterAll(async () => {
    await db?.drop();
  });

  it('keeps the process alive and records every group-committed fact exactly once', async () => {
    const store = new EventStore(db.pool);
    const outages: string[] = [];
    const committer = new GroupCommitter(store, { onOutage: (s) => outages.push(s.down ? 'down' : 'up') });
    const uncaught: unknown[] = [];
    const onError = (e: unknown) => uncaught.push(e);
    process.on('uncaughtException', onError);
    try {
      const hosts = Array.from({ length: 40 }, (_, i) => `reset-${i}`);
      const writers = hosts.map(async (hostId) => {
        for (let n = 0; n < 25; n++) {
          await committer.submit([
            {
              key: `reset-test/${hostId}/${n}`,
              event: { type: 'HostRebooted', schemaVersion: 1, occurredAt: new Date().toISOString(), actor: { kind: 'system', id: 'test' }, hostId, reason: `boot ${n}` },
            },
          ]);
        }
      });
      // Meanwhile, terminate every other connection of this database, several times.
      const killer = (async () => {
        const admin = db.pool;
        for (let i = 0; i < 5; i++) {
          await new Promise((r) => setTimeout(r, 60));
          await admin.query(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()`).catch(() => undefined);
        }
      })();
      await Promise.all([...writers, killer]);
      await committer.drain();
      expect(uncaught).toEqual([]);
      for (const hostId of hosts) {
        const events = await store.readStream(`host-${hostId}`);
        expect(events.map((e) => (e.event as { reason?: string }).reason)).toEqual(Array.from({ length: 25 }, (_, n) => `boot ${n}`));
      }
    } finally {
      process.off('uncaughtException', onError);
    }
  });
});
