/**
 * Which hosts run a payload: now (the payload_placements projection, caught up first) or at a past
 * time (the candidate hosts' streams replayed to that time).
 */
import { FleetpatchError } from '../../errors.ts';
import { BuildIdSchema } from '../catalogue.ts';
import { foldHostStack } from '../projections/host-stack.ts';
import { placementsOf, type PayloadPlacement } from '../projections/payload-placement.ts';
import { Projector } from '../projections/projector.ts';
import { toRecordedEvent, type RecordedEvent } from '../sql/event-row.ts';
import { selectPlacementCandidates, selectStreamsUntil } from '../sql/audit.ts';
import { selectPlacements } from '../sql/projections.ts';
import type { EventStore } from '../store.ts';
import { parseStreamId } from '../streams.ts';

export async function whereIsPayload(store: EventStore, buildId: string, options: { at?: string; projector?: Projector } = {}): Promise<PayloadPlacement[]> {
  if (!BuildIdSchema.safeParse(buildId).success) throw new FleetpatchError('ARGUMENT', `"${buildId}" is not a build-id in lowercase hex`);
  if (options.at === undefined) {
    await (options.projector ?? new Projector(store)).catchUp();
    return selectPlacements(store.pool, buildId);
  }
  if (Number.isNaN(Date.parse(options.at))) throw new FleetpatchError('ARGUMENT', `"${options.at}" is not a time (use ISO 8601)`);
  const until = new Date(options.at).toISOString();
  const streams = await selectPlacementCandidates(store.pool, buildId, until);
  if (streams.length === 0) return [];
  const byStream = new Map<string, RecordedEvent[]>();
  for (const row of await selectStreamsUntil(store.pool, streams, until)) {
    const e = toRecordedEvent(row);
    const list = byStream.get(e.streamId);
    if (list) list.push(e);
    else byStream.set(e.streamId, [e]);
  }
  return [...byStream]
    .flatMap(([streamId, events]) => placementsOf(foldHostStack(parseStreamId(streamId).id, events)))
    .filter((p) => p.buildId === buildId)
    .sort((a, b) => (a.hostId < b.hostId ? -1 : a.hostId > b.hostId ? 1 : 0));
}
