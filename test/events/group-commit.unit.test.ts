/**
 * The group committer says when a flush was slow: how long its first fact queued and how long the
 * transaction took. A slow rollout can then be told from a slow PostgreSQL in the worker's log.
 * It commits first what a lane waits for, and never commits a fact before an earlier one of its host.
 */
import { describe, expect, it } from 'vitest';
import { GroupCommitter, selectFlush } from '../../src/events/group-commit.ts';
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

/** A store that records, per flush, the events' (stream, type) in the order they were appended; each flush takes `ms`. */
function recordingStore(ms: number) {
  const flushes: string[][] = [];
  const store = {
    appendWithRows: async (batches: { streamId: string; events: { event: { type: string } }[] }[], writes: unknown[]) => {
      flushes.push(batches.flatMap((b) => b.events.map((e) => `${b.streamId}:${e.event.type}`)));
      await new Promise((r) => setTimeout(r, ms));
      return { results: [], rowCounts: writes.map(() => 1) };
    },
  } as unknown as EventStore;
  return { store, flushes };
}

describe('what a lane waits for goes first', () => {
  it('commits a waited fact in a flush of its own, ahead of other hosts\' background outcomes queued before it', async () => {
    const { store, flushes } = recordingStore(20);
    const committer = new GroupCommitter(store, { lingerMs: 0 });
    // A flush is under way, so that the rest queue behind it.
    const first = committer.submit([{ key: 'p/0', event: hostEvents('h0').uploaded(HELLO) }]);
    const background = ['h1', 'h2', 'h3'].map((h) => committer.submit([{ key: `p/${h}`, event: hostEvents(h).applied(HELLO) }], [], { background: true }));
    const waited = committer.submit([{ key: 'p/h4', event: hostEvents('h4').uploaded(HELLO) }]);
    await first;
    await waited;
    expect(flushes).toEqual([['host-h0:PayloadUploaded'], ['host-h4:PayloadUploaded']]);
    await Promise.all(background);
    await committer.drain();
    expect(flushes[2]).toEqual(['host-h1:PayloadApplied', 'host-h2:PayloadApplied', 'host-h3:PayloadApplied']);
  });

  it('takes along the background facts of the same host submitted before it, in their order', async () => {
    const { store, flushes } = recordingStore(20);
    const committer = new GroupCommitter(store, { lingerMs: 0 });
    const first = committer.submit([{ key: 'q/0', event: hostEvents('h0').uploaded(HELLO) }]);
    void committer.submit([{ key: 'q/h1-a', event: hostEvents('h1').applied(HELLO) }], [], { background: true });
    void committer.submit([{ key: 'q/h2-a', event: hostEvents('h2').applied(HELLO) }], [], { background: true });
    const waited = committer.submit([{ key: 'q/h1-r', event: hostEvents('h1').reverted(HELLO) }]);
    await first;
    await waited;
    expect(flushes[1]).toEqual(['host-h1:PayloadApplied', 'host-h1:PayloadReverted']);
    await committer.drain();
    expect(flushes[2]).toEqual(['host-h2:PayloadApplied']);
  });

  it('orders by the keys a submitter names, for row writes that travel without a fact of the host', async () => {
    const { store, flushes } = recordingStore(20);
    const committer = new GroupCommitter(store, { lingerMs: 0 });
    const first = committer.submit([{ key: 'k/0', event: hostEvents('h0').uploaded(HELLO) }]);
    const outcome = committer.submit([{ key: 'k/h1', event: hostEvents('h1').applied(HELLO) }], [{ text: 'SELECT 1', values: [] }], { background: true, keys: ['host-h9'] });
    const row = committer.submit([], [{ text: 'SELECT 2', values: [] }], { keys: ['host-h9'] });
    await first;
    await row;
    // The row write waited for the background outcome that names the same key: one flush, in order.
    expect(flushes[1]).toEqual(['host-h1:PayloadApplied']);
    await outcome;
  });

  it('does not starve background facts: once the oldest has waited long enough, a flush takes everything', () => {
    const q = [
      { at: 0, background: true, keys: ['host-a'] },
      { at: 5, background: false, keys: ['host-b'] },
    ];
    expect(selectFlush(q, 50, 100)).toEqual([q[1]]);
    expect(selectFlush(q, 100, 100)).toEqual(q);
    expect(selectFlush([q[0]!], 1, 100)).toEqual([q[0]]);
  });

  it('follows a chain of shared keys back to the oldest background item it must not overtake', () => {
    const q = [
      { at: 0, background: true, keys: ['host-c'] },
      { at: 1, background: true, keys: ['host-b', 'host-c'] },
      { at: 2, background: true, keys: ['host-x'] },
      { at: 3, background: false, keys: ['host-b'] },
    ];
    expect(selectFlush(q, 10, 100)).toEqual([q[0], q[1], q[3]]);
  });
});
