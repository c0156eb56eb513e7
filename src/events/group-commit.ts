/**
 * Group commit: many hosts' events (and the work-list rows that go with them) in one transaction.
 *
 * A rollout's batch runs dozens of hosts at once, each producing a handful of facts. Committing
 * each fact alone costs a WAL flush per fact and serialises every host on the rollout's stream;
 * here every lane submits its facts, and one flush at a time takes everything queued so far into a
 * single `appendMany` (plus the SQL rows submitted with them, in the same transaction). Under load
 * the queue fills while the previous flush runs, so the transactions grow with the fleet, not
 * their number.
 *
 * A submitter that needs its facts durable before its next step (fleetpatch's dependency check
 * before APPLY, the intent before a hypervisor call) awaits `submit`; the others submit in the
 * background (`{ background: true }`: a host's outcome, committed while its lane goes on) and
 * `drain()` before they report.
 *
 * Flushes run one at a time, and what someone waits for goes first: a flush takes the waited
 * items, and leaves the background ones for a flush of their own when nobody waits (or once the
 * oldest of them has waited `backgroundMaxWaitMs`: they are never starved). At 1,000 hosts the
 * outcomes were two thirds of every flush, and a lane waited 30-40 ms to make its intent durable
 * instead of about 20. Order is kept per ordering key (each fact's stream, plus the keys the
 * submitter names, e.g. the host whose work-list row it writes): a waited item takes into its
 * flush every background item submitted before it that shares a key with it.
 *
 * Two flushes at once on two connections, waited and background, were tried: PostgreSQL spent a
 * third more CPU on the extra transactions and the rollout was no faster on two cores.
 *
 * PostgreSQL being unreachable is not an error for the submitter: the flush is retried (with
 * backoff, for as long as it takes) and `onOutage` is told when the outage starts and ends. A
 * transaction PostgreSQL aborted for a conflict (deadlock, serialization) is run again. Any other
 * error (a bug: an event the catalogue refuses) fails the items of that flush.
 */
import type { DomainEventInput } from './catalogue.ts';
import { eventIdFromKey } from './event-id.ts';
import type { EventStore, StreamAppend } from './store.ts';
import { streamFor } from './streams.ts';
import { parseEvent } from './catalogue.ts';
import { observe } from '../runtime/observers.ts';
import type { RowWrite } from './sql/row-writes.ts';

export interface Fact {
  /** The idempotency key: the event id is derived from it, so a retry records the fact once. */
  key: string;
  event: DomainEventInput;
}


interface Item {
  /** performance.now() at submission. */
  at: number;
  facts: { eventId: string; streamId: string; event: DomainEventInput }[];
  writes: RowWrite[];
  /** Nobody waits for it: flushed after what someone waits for, never before an earlier item sharing a key. */
  background: boolean;
  /** Ordering keys: the facts' streams and the submitter's own. */
  keys: string[];
  resolve: (rowCounts: number[]) => void;
  reject: (e: unknown) => void;
}

export interface SubmitOptions {
  /** Nobody waits for these facts: they never delay a flush someone waits for. */
  background?: boolean;
  /**
   * Ordering keys besides the facts' streams: items sharing a key commit in submission order
   * (a host's work-list row writes name the host's stream, so that they keep their order even
   * when they travel without a fact of it).
   */
  keys?: readonly string[];
}

/**
 * Which queued items the next flush takes, in submission order (pure; exported for tests): every
 * item when none is waited for or when the oldest background item has waited `maxWaitMs` since
 * `now`; otherwise the waited items and every background item submitted before one of them that
 * shares a key with it (from the newest back, so that a chain of shared keys is followed).
 */
export function selectFlush<T extends Pick<Item, 'at' | 'background' | 'keys'>>(queue: readonly T[], now: number, maxWaitMs: number): T[] {
  const oldestBackground = queue.find((i) => i.background);
  if (!oldestBackground || now - oldestBackground.at >= maxWaitMs || queue.every((i) => i.background)) return [...queue];
  const keys = new Set<string>();
  const taken: T[] = [];
  for (let i = queue.length - 1; i >= 0; i--) {
    const item = queue[i]!;
    if (!item.background || item.keys.some((k) => keys.has(k))) {
      taken.push(item);
      for (const k of item.keys) keys.add(k);
    }
  }
  return taken.reverse();
}

export interface GroupCommitOptions {
  /** How long the first item waits for company when nothing is being flushed (ms). */
  lingerMs?: number;
  /** How long a background item may wait behind waited ones before a flush takes it anyway (ms, default 100). */
  backgroundMaxWaitMs?: number;
  /**
   * Told of a flush that took longer than `slowMs` (default 2,000) from its first submission to its
   * commit: every host waiting for it waited that long. Says how long it queued and how long the
   * transaction took, so that a slow rollout can be told apart from a slow PostgreSQL.
   */
  onSlow?: (flush: { queuedMs: number; commitMs: number; events: number; writes: number; attempts: number }) => void;
  slowMs?: number;
  /** Told once when PostgreSQL becomes unreachable (with the error) and once when it is back. */
  onOutage?: (state: { down: true; since: Date; error: Error } | { down: false; since: Date; downForMs: number }) => void;
}

/** Errors that mean "PostgreSQL is not there right now", as opposed to a bad statement. */
export function isConnectionError(e: unknown): boolean {
  const err = e as { code?: string; message?: string } | undefined;
  if (!err) return false;
  const code = err.code ?? '';
  if (['ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'ENOTFOUND', 'EHOSTUNREACH', 'DATABASE_UNAVAILABLE'].includes(code)) return true;
  // 08xxx connection exceptions, 57P01-03 admin shutdown / crash shutdown / cannot connect now.
  if (/^08/.test(code) || /^57P0[123]$/.test(code) || code === '53300') return true;
  return /Connection terminated|connection timeout|Client has encountered a connection error|timeout exceeded when trying to connect/i.test(err.message ?? '');
}

/**
 * Errors PostgreSQL raises when it aborted a transaction to let a concurrent one through
 * (40P01 deadlock_detected, 40001 serialization_failure): nothing of it was written, and the same
 * transaction run again succeeds. Never a reason to fail a host.
 */
export function isTransactionConflict(e: unknown): boolean {
  const code = (e as { code?: string } | undefined)?.code;
  return code === '40P01' || code === '40001';
}

/** How often a flush PostgreSQL aborted for a conflict is run again before its submitters hear of it. */
const CONFLICT_RETRIES = 8;

/** A short, jittered pause before the n-th rerun, so the two transactions do not meet again in lockstep. */
const conflictPause = (n: number) => new Promise((r) => setTimeout(r, 5 + Math.random() * 20 * n));

/**
 * Runs `fn` until PostgreSQL answers: connection errors are waited out with backoff (`onDown` is
 * told once, when the outage starts); a transaction PostgreSQL aborted for a conflict is run again
 * a few times (it wrote nothing); any other error is the caller's.
 */
export async function waitForDatabase<T>(fn: () => Promise<T>, onDown?: (since: Date) => void): Promise<T> {
  let since: Date | undefined;
  let conflicts = 0;
  for (let attempt = 0; ; attempt++) {
    try {
      return await fn();
    } catch (e) {
      if (isTransactionConflict(e) && conflicts < CONFLICT_RETRIES) {
        await conflictPause(++conflicts);
        continue;
      }
      if (!isConnectionError(e)) throw e;
      if (!since) {
        since = new Date();
        onDown?.(since);
      }
      await new Promise((r) => setTimeout(r, Math.min(5_000, 100 * 2 ** Math.min(attempt, 6))));
    }
  }
}

export class GroupCommitter {
  private queue: Item[] = [];
  private flushing: Promise<void> | null = null;
  private downSince: Date | null = null;
  private readonly lingerMs: number;
  private readonly backgroundMaxWaitMs: number;

  constructor(
    private readonly store: EventStore,
    private readonly opts: GroupCommitOptions = {},
  ) {
    this.lingerMs = opts.lingerMs ?? 2;
    this.backgroundMaxWaitMs = opts.backgroundMaxWaitMs ?? 100;
  }

  /** Whether PostgreSQL was unreachable at the last flush, and since when. */
  get outageSince(): Date | null {
    return this.downSince;
  }

  /**
   * Queues facts (validated now, so a bad one fails its submitter, not the flush) and rows;
   * resolves with each row write's row count once they are committed.
   */
  submit(facts: Fact[], writes: RowWrite[] = [], opts: SubmitOptions = {}): Promise<number[]> {
    let prepared: Item['facts'];
    try {
      prepared = facts.map((f) => {
        // Parsed once, here: the store takes the parsed event as it is (catalogue.ts).
        const event = parseEvent(f.event);
        return { eventId: eventIdFromKey(f.key), streamId: streamFor(event), event };
      });
    } catch (e) {
      return Promise.reject(e);
    }
    const keys = [...new Set([...prepared.map((f) => f.streamId), ...(opts.keys ?? [])])];
    return new Promise<number[]>((resolve, reject) => {
      this.queue.push({ at: performance.now(), facts: prepared, writes, background: opts.background === true, keys, resolve, reject });
      this.kick();
    });
  }

  /** Resolves when everything submitted so far is committed (or failed). */
  async drain(): Promise<void> {
    while (this.flushing || this.queue.length > 0) {
      this.kick();
      await this.flushing;
    }
  }

  private kick(): void {
    if (this.flushing) return;
    this.flushing = (async () => {
      if (this.lingerMs > 0) await new Promise((r) => setTimeout(r, this.lingerMs));
      while (this.queue.length > 0) {
        const items = selectFlush(this.queue, performance.now(), this.backgroundMaxWaitMs);
        const taken = new Set(items);
        this.queue = items.length === this.queue.length ? [] : this.queue.filter((i) => !taken.has(i));
        await this.flush(items);
      }
    })().finally(() => {
      this.flushing = null;
      if (this.queue.length > 0) this.kick();
    });
  }

  private async flush(items: Item[]): Promise<void> {
    // One entry per stream, facts in submission order; an id submitted twice is written once.
    const byStream = new Map<string, StreamAppend>();
    const seen = new Set<string>();
    for (const item of items) {
      for (const f of item.facts) {
        if (seen.has(f.eventId)) continue;
        seen.add(f.eventId);
        let s = byStream.get(f.streamId);
        if (!s) byStream.set(f.streamId, (s = { streamId: f.streamId, events: [] }));
        s.events.push({ eventId: f.eventId, event: f.event });
      }
    }
    const writes = items.flatMap((item) => item.writes);
    const began = performance.now();
    let conflicts = 0;
    for (let attempt = 0; ; attempt++) {
      const started = performance.now();
      try {
        // The writes travel with the events and the COMMIT, in one round trip (store.ts).
        const { rowCounts: counts } = await this.store.appendWithRows([...byStream.values()], writes);
        const now = performance.now();
        observe('eventAppend', (now - started) / 1000, seen.size, 'ok');
        // Items are flushed in submission order: the first waited longest.
        const oldest = items[0]!.at;
        if (now - oldest > (this.opts.slowMs ?? 2_000)) {
          this.opts.onSlow?.({ queuedMs: Math.round(began - oldest), commitMs: Math.round(now - began), events: seen.size, writes: writes.length, attempts: attempt + 1 });
        }
        if (this.downSince) {
          const since = this.downSince;
          this.downSince = null;
          this.opts.onOutage?.({ down: false, since, downForMs: Date.now() - since.getTime() });
        }
        let at = 0;
        for (const item of items) {
          item.resolve(counts.slice(at, at + item.writes.length));
          at += item.writes.length;
        }
        return;
      } catch (e) {
        if (isTransactionConflict(e) && conflicts < CONFLICT_RETRIES) {
          // Aborted whole by PostgreSQL for a concurrent transaction: nothing was written.
          await conflictPause(++conflicts);
          continue;
        }
        if (!isConnectionError(e)) {
          for (const item of items) item.reject(e);
          return;
        }
        if (!this.downSince) {
          this.downSince = new Date();
          this.opts.onOutage?.({ down: true, since: this.downSince, error: e as Error });
        }
        await new Promise((r) => setTimeout(r, Math.min(5_000, 100 * 2 ** Math.min(attempt, 6))));
      }
    }
  }
}
