/**
 * What the batch engine records of one host (activities/host-engine.ts): its facts, each with an
 * idempotency key of (rollout, host, repair, build-id, step, ordinal), and the row writes of its
 * work-list entry (the intent before every hypervisor call, the former state held until the first
 * change), handed to the group committer either to wait for (durable before the next call) or in
 * the background (a host's outcome).
 *
 * A repair is a run of its own on hosts the rollout already finished, and so is a rollback: their
 * facts carry the repair's name (the rollback's id) in their keys, so none of them can be taken
 * for the rollout's (or an earlier repair's, or the restore after a failed patch's) and dropped as
 * already recorded, while a retried batch of the same run computes the same keys again and writes
 * nothing twice.
 */
import type { Actor, Correlation, DomainEventInput } from '../src/events/catalogue.ts';
import type { Fact, GroupCommitter } from '../src/events/group-commit.ts';
import type { RowWrite } from '../src/events/sql/row-writes.ts';
import { intentWrite } from '../src/events/sql/claims.ts';
import type { RecordedEvent } from '../src/events/store.ts';
import { hostStream } from '../src/events/streams.ts';
import type { StackEntry } from '../src/rollout/matching.ts';

/** What the lane running a host wants to hear of it. */
export interface LaneHooks {
  /**
   * A long hypervisor action (APPLY, REPLACE, REVERT) is under way on the host: the lane claims
   * its next host meanwhile, so the claim's wait hides behind the action's.
   */
  acting?: () => void;
}

export interface EngineIdentity {
  actor: Actor;
  correlation: Correlation;
}

/** Whose facts these are: the rollout's own run, one of its repairs ("repair-2"), or one of its rollbacks (by id). */
export interface RecordScope {
  rolloutId: string;
  repair?: string;
  rollback?: string;
}

/**
 * Facts of one host, with their idempotency keys. Ordinals count each kind of step per build-id
 * within the rollout, starting from what the host's stream already holds for it.
 */
export class HostRecorder {
  private readonly ordinals = new Map<string, number>();
  private pending: Fact[] = [];
  readonly rolloutId: string;
  /** The repair these facts belong to; absent for the rollout's own run. */
  readonly repair: string | undefined;
  /** The key segment of a repair or a rollback: their facts are theirs, never the rollout's. */
  private readonly run: string | undefined;

  constructor(
    private readonly committer: GroupCommitter,
    private readonly id: EngineIdentity,
    scope: RecordScope,
    readonly hostId: string,
    /** The lane's hooks, for the steps that reach the host (act). */
    readonly lane: LaneHooks = {},
  ) {
    this.rolloutId = scope.rolloutId;
    this.repair = scope.repair;
    this.run = scope.repair ?? (scope.rollback ? `rollback:${scope.rollback}` : undefined);
  }

  /**
   * Continues the ordinals from the facts this rollout already recorded for the host: a step that
   * happened, and one the host refused (its attempt took an ordinal too, and its check was
   * recorded under it). Learning the same stream again (a restore reconciles after the patch did)
   * moves no ordinal: each continues from at least the count recorded, never from that count
   * added twice, which would let a later holder's count fall below an ordinal this one used.
   */
  learn(events: readonly RecordedEvent[]): void {
    const counted = new Map<string, number>();
    for (const { event } of events) {
      if (event.correlation?.rolloutId !== this.rolloutId) continue;
      const kind = event.type === 'PayloadActionFailed' ? FAILED_KIND_OF[event.action] : KIND_OF[event.type];
      const payload = (event as { payload?: StackEntry }).payload;
      if (kind && payload) counted.set(`${kind}/${payload.buildId}`, (counted.get(`${kind}/${payload.buildId}`) ?? 0) + 1);
    }
    for (const [k, n] of counted) this.ordinals.set(k, Math.max(n, this.ordinals.get(k) ?? 0));
  }

  /** The ordinal the next step of this kind on this payload takes. */
  next(kind: string, buildId: string): number {
    const n = this.peek(kind, buildId);
    this.ordinals.set(`${kind}/${buildId}`, n + 1);
    return n;
  }

  /** The ordinal `next` would give, without taking it. */
  peek(kind: string, buildId: string): number {
    return this.ordinals.get(`${kind}/${buildId}`) ?? 0;
  }

  /**
   * The APPLY or REPLACE whose check an upload already made and made durable (with the intent to
   * take both steps): that step needs no second durable write. Taken once; any other step drops it.
   */
  ahead: { kind: 'apply' | 'replace'; buildId: string; against: string | null; n: number } | null = null;

  /** A fact's idempotency key; a repair's name follows the host (no step of the rollout's is named so). */
  key(...parts: (string | number)[]): string {
    return [this.rolloutId, this.hostId, ...(this.run ? [this.run] : []), ...parts].join('/');
  }

  /** The key of the host's outcome (HostPatchFinished): one per host for the rollout, one per host for each repair. */
  finishedKey(): string {
    return `host-finished/${this.rolloutId}/${this.hostId}${this.repair ? `/${this.repair}` : ''}`;
  }

  event(body: Record<string, unknown>): DomainEventInput {
    return { ...body, schemaVersion: 1, occurredAt: new Date().toISOString(), actor: this.id.actor, correlation: this.id.correlation } as DomainEventInput;
  }

  /** Queues a fact; it is committed with the next durable write (or the batch's drain). */
  add(key: string, body: Record<string, unknown>): void {
    this.pending.push({ key, event: this.event(body) });
  }

  /**
   * Commits the queued facts with `writes` and waits for it; false when a fenced
   * write missed. With nothing to commit it only waits for what this host submitted before: no
   * empty transaction.
   */
  async durable(writes: RowWrite[] = []): Promise<boolean> {
    if (this.pending.length === 0 && writes.length === 0) {
      await this.last;
      return true;
    }
    const counts = await this.submit(writes, false);
    return counts.every((n) => n > 0);
  }

  /**
   * The host's former state and target, which must be durable before its first change, not
   * sooner: written with the intent of that change, as one row update in the same commit.
   */
  touchWith(write: (intent: string) => RowWrite): void {
    this.touch = write;
  }

  /** The row write that records the intent of the next hypervisor call (and the held touch). */
  intent(fence: number, what: string): RowWrite {
    const touch = this.touch;
    this.touch = null;
    return touch ? touch(what) : intentWrite(this.rolloutId, this.hostId, fence, what);
  }

  /**
   * Hands the queued facts (with `writes`) to the committer in the background: nobody waits for
   * them before the next hypervisor call (a host's outcome, the last facts of a restore).
   */
  flushLater(writes: RowWrite[] = []): Promise<number[]> {
    return this.submit(writes, true);
  }

  private submit(writes: RowWrite[], background: boolean): Promise<number[]> {
    const facts = this.pending;
    this.pending = [];
    // The host's stream orders its row writes too, even in a submission without a fact of it.
    const submitted = this.committer.submit(facts, writes, { background, keys: [hostStream(this.hostId)] });
    // A host's submissions share its stream key, so they commit in the order they were made:
    // once the last one settled, every earlier one has.
    this.last = submitted.catch(() => undefined);
    return submitted;
  }

  private touch: ((intent: string) => RowWrite) | null = null;
  private last: Promise<unknown> = Promise.resolve();
}

const FAILED_KIND_OF: Partial<Record<string, string>> = { upload: 'uploaded', apply: 'applied', revert: 'reverted', replace: 'replaced', unload: 'unloaded' };

const KIND_OF: Partial<Record<string, string>> = {
  PayloadUploaded: 'uploaded',
  PayloadApplied: 'applied',
  PayloadReplaced: 'replaced',
  PayloadReverted: 'reverted',
  PayloadUnloaded: 'unloaded',
};
