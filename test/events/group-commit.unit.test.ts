/**
 * The group committer says when a flush was slow: how long its first fact queued and how long the
 * transaction took. A slow rollout can then be told from a slow PostgreSQL in the worker's log.
 */
import { describe, expect, it } from 'vitest';
import { GroupCommitter } from '../../src/events/group-commit.ts';
import type { EventStore } from '../../src/events/store.ts';
import { hostEvents, HELLO } from './support/events.ts';

/** A store whose every append takes `ms`. */
function slowStore(ms: number): EventStore {
  return {
    appendWithRows: async (_batches: unknown[], writes: unknown[]) => {
      await new Promise((r) => setTimeout(r, ms));
      return { results: [], rowCounts: writes.map(() => 1) };
    },
  } as unknown as EventStore;
}

describe('a slow group commit', () => {
  it('is told, with its queueing and commit time, events and rows', async () => {
    const told: { queuedMs: number; commitMs: number; events: number; writes: number; attempts: number }[] = [];
    const committer = new GroupCommitter(slowStore(60), { slowMs: 40, onSlow: (f) => told.push(f) });
    const h = hostEvents('slow-1');
    await committer.submit([{ key: 'slow/1', event: h.uploaded(HELLO) }], [{ text: 'SELECT 1', values: [] }]);
    expect(told).toHaveLength(1);
    expect(told[0]).toMatchObject({ events: 1, writes: 1, attempts: 1 });
    expect(told[0]!.commitMs).toBeGreaterThanOrEqual(50);
  });

  it('says nothing of a flush within the bound', async () => {
    const told: unknown[] = [];
    const committer = new GroupCommitter(slowStore(1), { slowMs: 1_000, onSlow: (f) => told.push(f) });
    await committer.submit([{ key: 'fast/1', event: hostEvents('fast-1').uploaded(HELLO) }]);
    expect(told).toEqual([]);
  });
});
