/**
 * The pg-backed projector: reads events in the global order from its checkpoint and folds them
 * into the projection tables, each batch and its checkpoint in one transaction (so a crash never
 * applies a batch twice). `rebuild` empties the tables and folds everything again in ONE
 * transaction: readers keep seeing the old state until the new one is complete.
 *
 * The global order keeps each stream's order (store.ts takes the stream lock before the
 * transaction gets its id), so folding in global order folds every stream in stream order.
 */
import type pg from 'pg';
import type { RecordedEvent } from '../sql/event-row.ts';
import { clearProjection, lockProjector, saveCheckpoint, saveHostStacks, saveRolloutSummaries, selectCheckpoint, selectHostStacks, selectRolloutSummaries } from '../sql/projections.ts';
import { START, cursorOf, type EventStore, type GlobalCursor } from '../store.ts';
import { parseStreamId } from '../streams.ts';
import { emptyHostStack, evolveHostStack } from './host-stack.ts';
import { placementsOf } from './payload-placement.ts';
import { emptyRolloutSummary, evolveRolloutSummary } from './rollout-summary.ts';

export interface Projection {
  readonly name: string;
  /** The tables it writes (emptied by a rebuild). */
  readonly tables: readonly string[];
  /** Folds a batch of events, in global order, inside the projector's transaction. */
  apply(client: pg.PoolClient, events: RecordedEvent[]): Promise<void>;
}

/** Groups a batch by the id of one kind of stream, keeping the order within each group. */
function byStream(events: RecordedEvent[], kind: 'host' | 'rollout'): Map<string, RecordedEvent[]> {
  const groups = new Map<string, RecordedEvent[]>();
  for (const e of events) {
    const s = parseStreamId(e.streamId);
    if (s.kind !== kind) continue;
    const list = groups.get(s.id);
    if (list) list.push(e);
    else groups.set(s.id, [e]);
  }
  return groups;
}

/** host_stacks and payload_placements. */
export const hostStackProjection: Projection = {
  name: 'host-stacks',
  tables: ['host_stacks', 'payload_placements'],
  async apply(client, events) {
    const groups = byStream(events, 'host');
    if (groups.size === 0) return;
    const current = new Map((await selectHostStacks(client, [...groups.keys()])).map((s) => [s.hostId, s]));
    const states = [...groups].map(([hostId, list]) => list.reduce(evolveHostStack, current.get(hostId) ?? emptyHostStack(hostId)));
    await saveHostStacks(client, states, states.flatMap(placementsOf));
  },
};

export const rolloutSummaryProjection: Projection = {
  name: 'rollout-summaries',
  tables: ['rollout_summaries'],
  async apply(client, events) {
    const groups = byStream(events, 'rollout');
    if (groups.size === 0) return;
    const current = new Map((await selectRolloutSummaries(client, [...groups.keys()])).map((s) => [s.rolloutId, s]));
    const summaries = [...groups].map(([rolloutId, list]) => list.reduce(evolveRolloutSummary, current.get(rolloutId) ?? emptyRolloutSummary(rolloutId)));
    await saveRolloutSummaries(client, summaries);
  },
};

export const AUDIT_PROJECTIONS: readonly Projection[] = [hostStackProjection, rolloutSummaryProjection];

export interface ProjectorOptions {
  /** The checkpoint's name (default "audit"). */
  name?: string;
  projections?: readonly Projection[];
  batchSize?: number;
}

export class Projector {
  readonly name: string;
  private readonly projections: readonly Projection[];
  private readonly batchSize: number;

  constructor(
    private readonly store: EventStore,
    options: ProjectorOptions = {},
  ) {
    this.name = options.name ?? 'audit';
    this.projections = options.projections ?? AUDIT_PROJECTIONS;
    this.batchSize = options.batchSize ?? 1000;
  }

  /** Folds every event not yet projected; returns how many. */
  async catchUp(): Promise<{ events: number }> {
    let total = 0;
    for (;;) {
      const n = await this.transaction(async (client) => {
        const cursor = (await selectCheckpoint(client, this.name)) ?? START;
        return this.foldBatch(client, cursor);
      });
      total += n;
      if (n < this.batchSize) return { events: total };
    }
  }

  /** Empties the projections and folds every event again, atomically. */
  async rebuild(): Promise<{ events: number }> {
    return this.transaction(async (client) => {
      await clearProjection(client, this.projections.flatMap((p) => p.tables), this.name);
      let total = 0;
      let cursor = START;
      for (;;) {
        const n = await this.foldBatch(client, cursor);
        total += n;
        if (n < this.batchSize) return { events: total };
        cursor = (await selectCheckpoint(client, this.name))!;
      }
    });
  }

  /** Where the projector has read up to (START when nothing yet). */
  async checkpoint(): Promise<GlobalCursor> {
    return (await selectCheckpoint(this.store.pool, this.name)) ?? START;
  }

  private async foldBatch(client: pg.PoolClient, cursor: GlobalCursor): Promise<number> {
    const events = await this.store.readAllAfter(cursor, this.batchSize, client);
    if (events.length === 0) return 0;
    for (const p of this.projections) await p.apply(client, events);
    await saveCheckpoint(client, this.name, cursorOf(events[events.length - 1]!));
    return events.length;
  }

  private async transaction<T>(fn: (client: pg.PoolClient) => Promise<T>): Promise<T> {
    const client = await this.store.pool.connect();
    try {
      await client.query('BEGIN');
      await lockProjector(client, this.name);
      const result = await fn(client);
      await client.query('COMMIT');
      return result;
    } catch (e) {
      await client.query('ROLLBACK').catch(() => undefined);
      throw e;
    } finally {
      client.release();
    }
  }
}
