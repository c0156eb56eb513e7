/** Every recorded dependency check, filtered by host, payload, rollout or outcome. */
import { FleetpatchError } from '../../errors.ts';
import type { EventOfType } from '../catalogue.ts';
import { toRecordedEvent, type RecordedEvent } from '../sql/event-row.ts';
import { selectDependencyChecks, type CheckFilter } from '../sql/audit.ts';
import type { EventStore } from '../store.ts';

export type { CheckFilter };
export type DependencyCheckRecord = RecordedEvent<EventOfType<'DependencyChecked'>>;

export const CHECK_OUTCOMES = ['match', 'mismatch', 'unreachable'] as const;

export async function dependencyChecks(store: EventStore, filter: CheckFilter = {}, options: { limit?: number } = {}): Promise<DependencyCheckRecord[]> {
  if (filter.outcome !== undefined && !(CHECK_OUTCOMES as readonly string[]).includes(filter.outcome)) {
    throw new FleetpatchError('ARGUMENT', `outcome "${filter.outcome}" is not one of ${CHECK_OUTCOMES.join(', ')}`);
  }
  const rows = await selectDependencyChecks(store.pool, filter, options.limit ?? 10_000);
  return rows.map(toRecordedEvent) as DependencyCheckRecord[];
}
