/** Reads of the projections, caught up first: every host's current stack, every rollout's summary. */
import type { HostStackState } from '../projections/host-stack.ts';
import { Projector } from '../projections/projector.ts';
import type { RolloutSummary } from '../projections/rollout-summary.ts';
import { selectHostStacks, selectRolloutSummaries } from '../sql/projections.ts';
import type { EventStore } from '../store.ts';

export async function hostStacks(store: EventStore, options: { hostIds?: string[]; projector?: Projector } = {}): Promise<HostStackState[]> {
  await (options.projector ?? new Projector(store)).catchUp();
  return selectHostStacks(store.pool, options.hostIds ?? null);
}

/** Newest first. */
export async function listRollouts(store: EventStore, options: { projector?: Projector } = {}): Promise<RolloutSummary[]> {
  await (options.projector ?? new Projector(store)).catchUp();
  return selectRolloutSummaries(store.pool, null);
}
