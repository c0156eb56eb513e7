/** A host's timeline: every step on it and its outcome in each rollout, in the global order. */
import { toRecordedEvent, type RecordedEvent } from '../sql/event-row.ts';
import { selectHostTimeline } from '../sql/audit.ts';
import type { EventStore } from '../store.ts';

export async function hostTimeline(store: EventStore, hostId: string, options: { limit?: number } = {}): Promise<RecordedEvent[]> {
  return (await selectHostTimeline(store.pool, hostId, options.limit ?? null)).map(toRecordedEvent);
}
