/**
 * The live view behind the dashboard, its server-sent events and the event-derived metrics: one
 * poller per API process reads the event store in its global order (readAllAfter, from a cursor
 * it keeps) and folds every new event into
 * - each host's state for the fleet grid (idle, patching, patched, failed, rolled back, drift, ...)
 *   and its applied stack as the events say (the host-stack reducer),
 * - each rollout's summary (the rollout-summary reducer): status, hosts patched/failed/rolled back,
 * - counts of dependency-check outcomes and of events by type,
 * and tells its subscribers what changed. Rollouts a page watches are also asked for their live
 * progress (the workflow's query) and pushed when it changes. A revoked token is told too
 * (`revoked`, its name): the API may run in another process than `fleetpatch tokens revoke`, and the
 * event store is what both see, so its open live streams close within a poll of the revocation.
 */
import { EventEmitter } from 'node:events';
import type { DomainEvent } from '../events/catalogue.ts';
import { describeEvent, describeActor } from '../events/audit/describe.ts';
import { emptyHostStack, evolveHostStack, type HostStackState } from '../events/projections/host-stack.ts';
import { emptyRolloutSummary, evolveRolloutSummary, type RolloutSummary } from '../events/projections/rollout-summary.ts';
import { START, type GlobalCursor, type RecordedEvent } from '../events/store.ts';
import { cursorOf } from '../events/store.ts';
import { parseStreamId } from '../events/streams.ts';
import { liveProgress } from '../control/steer.ts';
import type { RolloutProgress } from '../rollout/progress.ts';
import type { ApiContext } from '../app/api-context.ts';

export type HostStateName = 'unknown' | 'idle' | 'patching' | 'patched' | 'already' | 'failed' | 'incompatible' | 'rolled-back' | 'not-restored' | 'drift';

export interface HostView {
  id: string;
  labels: Record<string, string>;
  state: HostStateName;
  /** The rollout behind the state, if any. */
  rolloutId: string | null;
  /** Why, in words, for failed, not-restored, incompatible and drift. */
  reason: string | null;
  /** The applied stack as the events say, bottom first (names). */
  stack: string[];
  /** When the last event about it was recorded. */
  since: string | null;
}

export interface EventLine {
  globalPosition: number;
  streamId: string;
  streamPosition: number;
  type: string;
  recordedAt: string;
  actor: string;
  description: string;
  rolloutId: string | null;
  hostId: string | null;
}

export interface LiveUpdate {
  hosts: HostView[];
  events: EventLine[];
  rollouts: string[];
}

export function eventLine(e: RecordedEvent): EventLine {
  const ev = e.event as DomainEvent & { hostId?: string; rolloutId?: string };
  return {
    globalPosition: e.globalPosition,
    streamId: e.streamId,
    streamPosition: e.streamPosition,
    type: ev.type,
    recordedAt: e.recordedAt,
    actor: describeActor(ev.actor),
    description: describeEvent(ev),
    rolloutId: ev.rolloutId ?? ev.correlation?.rolloutId ?? null,
    hostId: ev.hostId ?? null,
  };
}

/** How many recent event lines the view keeps for a page that connects. */
const RECENT = 200;
/** Rollout summaries kept (newest by start); metrics are labelled by rollout, so this bounds them. */
const MAX_ROLLOUTS = 200;

export class LiveView extends EventEmitter {
  private cursor: GlobalCursor = START;
  private readonly hosts = new Map<string, HostView>();
  private readonly stacks = new Map<string, HostStackState>();
  readonly rollouts = new Map<string, RolloutSummary>();
  readonly checks = new Map<string, number>();
  readonly eventTypes = new Map<string, number>();
  readonly recent: EventLine[] = [];
  private labelsOf = new Map<string, Record<string, string>>();
  private timer: NodeJS.Timeout | undefined;
  private polling: Promise<void> | undefined;
  private readonly watched = new Map<string, { subscribers: number; last: string; progress: RolloutProgress | null; busy: boolean }>();
  private lastError: string | null = null;

  constructor(private readonly ctx: ApiContext) {
    super();
    this.setMaxListeners(0);
  }

  /** Reads and folds everything new now (and the fleet file's hosts and labels). */
  poll(): Promise<void> {
    this.polling ??= this.pollOnce().finally(() => (this.polling = undefined));
    return this.polling;
  }

  start(intervalMs = 500): void {
    if (this.timer) return;
    const tick = async () => {
      try {
        await this.poll();
        await this.pollWatched();
        this.lastError = null;
      } catch (e) {
        const message = (e as Error).message;
        if (message !== this.lastError) this.ctx.logger.warn({ err: message }, 'live view: the event store could not be read; trying again');
        this.lastError = message;
      }
      if (this.timer) this.timer = setTimeout(tick, intervalMs);
    };
    this.timer = setTimeout(tick, 0);
  }

  stop(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }

  fleet(): HostView[] {
    return [...this.hosts.values()].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  }

  host(id: string): HostView | undefined {
    return this.hosts.get(id);
  }

  /** A page watches a rollout: its live progress is pushed while it does. */
  watch(rolloutId: string): () => void {
    const w = this.watched.get(rolloutId) ?? { subscribers: 0, last: '', progress: null, busy: false };
    w.subscribers++;
    this.watched.set(rolloutId, w);
    return () => {
      w.subscribers--;
      if (w.subscribers <= 0) this.watched.delete(rolloutId);
    };
  }

  /** The last live progress pushed for a watched rollout (a page that connects later gets it at once). */
  lastRollout(rolloutId: string): unknown {
    const last = this.watched.get(rolloutId)?.last;
    return last ? JSON.parse(last) : undefined;
  }

  private async pollOnce(): Promise<void> {
    const changedHosts = new Set<string>();
    const changedRollouts = new Set<string>();
    const revokedTokens = new Set<string>();
    await this.refreshFleet(changedHosts);
    const lines: EventLine[] = [];
    for (;;) {
      const batch = await this.ctx.events.readAllAfter(this.cursor, 1000);
      for (const e of batch) {
        this.fold(e, changedHosts, changedRollouts, revokedTokens);
        lines.push(eventLine(e));
      }
      if (batch.length > 0) this.cursor = cursorOf(batch[batch.length - 1]!);
      if (batch.length < 1000) break;
    }
    if (lines.length > 0) {
      this.recent.push(...lines.slice(-RECENT));
      this.recent.splice(0, Math.max(0, this.recent.length - RECENT));
    }
    if (changedHosts.size + lines.length + changedRollouts.size > 0) {
      const update: LiveUpdate = { hosts: [...changedHosts].map((id) => this.hosts.get(id)!).filter(Boolean), events: lines.slice(-RECENT), rollouts: [...changedRollouts] };
      this.emit('update', update);
    }
    for (const name of revokedTokens) this.emit('revoked', name);
  }

  private async refreshFleet(changed: Set<string>): Promise<void> {
    const fleet = await this.ctx.fleet();
    if (!fleet) return;
    const labels = new Map(fleet.hosts.map((h) => [h.id, h.labels as Record<string, string>]));
    if (labels === this.labelsOf) return;
    for (const [id, l] of labels) {
      const h = this.hostView(id);
      if (JSON.stringify(h.labels) !== JSON.stringify(l)) {
        h.labels = l;
        changed.add(id);
      }
      if (h.state === 'unknown') {
        h.state = 'idle';
        changed.add(id);
      }
    }
    this.labelsOf = labels;
  }

  private hostView(id: string): HostView {
    let h = this.hosts.get(id);
    if (!h) {
      h = { id, labels: this.labelsOf.get(id) ?? {}, state: 'unknown', rolloutId: null, reason: null, stack: [], since: null };
      this.hosts.set(id, h);
    }
    return h;
  }

  private fold(recorded: RecordedEvent, changedHosts: Set<string>, changedRollouts: Set<string>, revokedTokens: Set<string>): void {
    const e = recorded.event;
    this.eventTypes.set(e.type, (this.eventTypes.get(e.type) ?? 0) + 1);
    let stream: { kind: string; id: string };
    try {
      stream = parseStreamId(recorded.streamId);
    } catch {
      return;
    }
    if (stream.kind === 'host') {
      const h = this.hostView(stream.id);
      const before = this.stacks.get(stream.id) ?? emptyHostStack(stream.id);
      const after = evolveHostStack(before, recorded);
      this.stacks.set(stream.id, after);
      h.stack = after.applied.map((p) => p.name);
      h.since = recorded.recordedAt;
      if (h.state === 'unknown') h.state = 'idle';
      switch (e.type) {
        case 'HostRebooted':
          Object.assign(h, { state: 'idle', rolloutId: null, reason: null });
          break;
        case 'HostPatchStarted':
          Object.assign(h, { state: 'patching', rolloutId: e.rollout, reason: null });
          break;
        case 'DriftDetected':
          Object.assign(h, { state: 'drift', reason: e.differences[0]?.description ?? 'the live host differs from its events' });
          break;
        case 'DependencyChecked':
          this.checks.set(`${e.phase}/${e.outcome}`, (this.checks.get(`${e.phase}/${e.outcome}`) ?? 0) + 1);
          if (e.phase === 'preflight' && e.outcome === 'mismatch' && (h.state === 'idle' || h.state === 'incompatible')) {
            Object.assign(h, { state: 'incompatible', rolloutId: e.correlation?.rolloutId ?? null, reason: e.reason ?? 'no build of the rollout fits this host' });
          }
          break;
        default:
          break;
      }
      changedHosts.add(stream.id);
      return;
    }
    if (e.type === 'TokenRevoked') revokedTokens.add(e.tokenName);
    if (stream.kind !== 'rollout') return;
    const summary = evolveRolloutSummary(this.rollouts.get(stream.id) ?? emptyRolloutSummary(stream.id), recorded);
    this.rollouts.set(stream.id, summary);
    if (this.rollouts.size > MAX_ROLLOUTS) this.rollouts.delete(this.rollouts.keys().next().value!);
    changedRollouts.add(stream.id);
    if (e.type === 'HostPatchFinished') {
      const h = this.hostView(e.hostId);
      const restore = e.restore ? `; ${e.restore.outcome === 'restored' ? 'restored to its former stack' : `NOT restored (${e.restore.outcome})`}` : '';
      Object.assign(h, {
        state: e.outcome,
        rolloutId: e.rolloutId,
        reason: e.failure ? `${e.failure.stage} ${e.failure.code}: ${e.failure.reason}${restore}` : null,
        since: recorded.recordedAt,
      });
      changedHosts.add(e.hostId);
    } else if (e.type === 'HostRollbackFinished') {
      const h = this.hostView(e.hostId);
      const back = e.outcome === 'rolled-back' || e.outcome === 'nothing-to-do';
      Object.assign(h, { state: back ? 'rolled-back' : 'not-restored', rolloutId: e.rolloutId, reason: back ? null : `${e.outcome}${e.reason ? `: ${e.reason}` : ''}`, since: recorded.recordedAt });
      changedHosts.add(e.hostId);
    }
  }

  /** Live progress of the rollouts pages watch; pushed when it changes. */
  private async pollWatched(): Promise<void> {
    await Promise.all(
      [...this.watched].map(async ([id, w]) => {
        if (w.busy) return;
        const summary = this.rollouts.get(id);
        // An ended rollout's progress does not change: asked once.
        if (w.progress && ['succeeded', 'failed', 'rolled-back', 'rollback-incomplete', 'aborted'].includes(w.progress.status) && summary?.rollback?.status !== 'running') return;
        w.busy = true;
        try {
          const live = await liveProgress(this.ctx.temporal.client, id, 3000);
          const payload = 'progress' in live ? { rolloutId: id, live: true, progress: live.progress } : { rolloutId: id, live: false, unavailable: live.unavailable };
          const text = JSON.stringify(payload);
          if (text !== w.last) {
            w.last = text;
            if ('progress' in live) w.progress = live.progress;
            this.emit('rollout', payload);
          }
        } catch (e) {
          const payload = { rolloutId: id, live: false, unavailable: (e as Error).message.split('\n')[0] };
          const text = JSON.stringify(payload);
          if (text !== w.last) {
            w.last = text;
            this.emit('rollout', payload);
          }
        } finally {
          w.busy = false;
        }
      }),
    );
  }
}
