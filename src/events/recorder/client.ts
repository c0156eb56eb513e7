/**
 * RecorderThread: the group committer's appends made on a thread of their own (recorder/thread.ts).
 *
 * Why: a worker's batch engine is one JavaScript thread, and at 1,000 hosts it was busy 80-95% of
 * a rollout, a third of that recording events (canonical JSON and hashes, the INSERT's text, the
 * PostgreSQL protocol, the socket writes). Every lane waits its turn for that thread. Here the
 * main thread validates the facts and hands each flush over; the append runs beside it.
 *
 * Semantics are the store's: the same transaction, the same errors (an outage, a conflict and a
 * bad event come back as what they are, recorder/protocol.ts). A thread that dies fails the
 * appends it held, as a bug would, and the next append starts a new one.
 */
import { Worker } from 'node:worker_threads';
import { parseEvent } from '../catalogue.ts';
import type { RowWrite } from '../sql/row-writes.ts';
import type { StreamAppend } from '../store.ts';
import { fromWireError, type AppendReply, type AppendRequest } from './protocol.ts';

/** What the group committer needs of the store (EventStore has it, in-process). */
export interface Appender {
  appendWithRows(batches: StreamAppend[], writes: readonly RowWrite[]): Promise<{ rowCounts: number[] }>;
}

export class RecorderThread implements Appender {
  private worker: Worker | null = null;
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (r: { rowCounts: number[] }) => void; reject: (e: unknown) => void }>();

  constructor(private readonly opts: { databaseUrl: string; poolMax?: number }) {}

  appendWithRows(batches: StreamAppend[], writes: readonly RowWrite[]): Promise<{ rowCounts: number[] }> {
    // Validated here, on the caller's thread, and taken as valid there: the group committer's
    // events were parsed when submitted, and parseEvent knows them (catalogue.ts) at no cost.
    let parsed: StreamAppend[];
    try {
      parsed = batches.map((b) => ({ ...b, events: b.events.map((e) => ({ eventId: e.eventId, event: parseEvent(e.event) })) }));
    } catch (e) {
      return Promise.reject(e);
    }
    const worker = this.started();
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      if (this.pending.size === 1) worker.ref();
      worker.postMessage({ id, batches: parsed, writes: [...writes] } satisfies AppendRequest);
    });
  }

  /** Ends the thread once its appends are answered. */
  async close(): Promise<void> {
    const w = this.worker;
    if (!w) return;
    while (this.pending.size > 0) await new Promise((r) => setTimeout(r, 5));
    this.worker = null;
    const exited = new Promise<void>((r) => w.once('exit', () => r()));
    w.postMessage({ close: true });
    await exited;
  }

  private started(): Worker {
    if (this.worker) return this.worker;
    const w = new Worker(new URL('./entry.mjs', import.meta.url), { workerData: { databaseUrl: this.opts.databaseUrl, poolMax: this.opts.poolMax ?? 2 } });
    w.unref();
    w.on('message', (reply: AppendReply) => {
      const p = this.pending.get(reply.id);
      if (!p) return;
      this.pending.delete(reply.id);
      if (this.pending.size === 0) w.unref();
      if (reply.ok) p.resolve({ rowCounts: reply.rowCounts });
      else p.reject(fromWireError(reply.error));
    });
    const lost = (why: string) => {
      if (this.worker === w) this.worker = null;
      const error = new Error(`the recording thread stopped (${why}); the append it held may or may not be committed`);
      for (const p of this.pending.values()) p.reject(error);
      this.pending.clear();
    };
    w.on('error', (e) => lost(e.message));
    w.on('exit', (code) => lost(`exit code ${code}`));
    this.worker = w;
    return w;
  }
}
