/**
 * A host's stack as of a time or a position, replayed from its stream. "As of time T" folds the
 * events recorded by T: recorded_at never decreases within a stream, so that is a prefix of it,
 * the state the audit trail showed at T. "As of position N" folds the first N events.
 */
import { FleetpatchError } from '../../errors.ts';
import { foldHostStack, type HostStackState } from '../projections/host-stack.ts';
import type { EventStore } from '../store.ts';
import { hostStream } from '../streams.ts';

export type AsOf = { at: string } | { position: number } | 'now';

export async function hostStackAsOf(store: EventStore, hostId: string, asOf: AsOf = 'now'): Promise<HostStackState> {
  if (asOf !== 'now' && 'position' in asOf && !(Number.isSafeInteger(asOf.position) && asOf.position >= 0)) {
    throw new FleetpatchError('ARGUMENT', `position ${asOf.position} is not a stream position (a whole number >= 0)`);
  }
  if (asOf !== 'now' && 'at' in asOf && Number.isNaN(Date.parse(asOf.at))) {
    throw new FleetpatchError('ARGUMENT', `"${asOf.at}" is not a time (use ISO 8601, e.g. 2025-01-31T14:03:00Z)`);
  }
  const events = await store.readStream(
    hostStream(hostId),
    asOf === 'now' ? {} : 'at' in asOf ? { recordedUntil: new Date(asOf.at).toISOString() } : { to: asOf.position },
  );
  return foldHostStack(hostId, events);
}
