/**
 * The preflight as a dry run, for every front end (`rollout plan`, `POST /api/rollouts/plan`, the
 * demo): read every host of the fleet (nothing is changed on any), choose each one's build, plan
 * the waves, and, before a REPLACE, name the hosts whose stack could not be put back.
 */
import { selectStoredBuildIds } from '../events/sql/payloads.ts';
import type { FleetClient } from '../agent/client.ts';
import { readLiveStates } from '../agent/live-state.ts';
import { fleetHostOf } from '../domain/fleet-host.ts';
import { preflight, type PreflightResult } from '../rollout/preflight.ts';
import { rolloutIdFor } from './resolve.ts';
import type { ResolvedPlan } from '../rollout/types.ts';
import type { Pool } from '../runtime/database.ts';

export async function dryRunPreflight(plan: ResolvedPlan, fleet: FleetClient, opts: { pool?: Pool; rolloutId?: string } = {}): Promise<PreflightResult & { rolloutId: string }> {
  const hosts = fleet.hosts.map(fleetHostOf);
  const live = await readLiveStates(fleet, hosts.map((h) => h.id));
  const rolloutId = opts.rolloutId ?? rolloutIdFor(plan);
  let storedBytes: Set<string> | undefined;
  if (opts.pool && plan.mode === 'replace') {
    const withData = new Set<string>();
    for (const st of live.values()) if (st.ok) for (const p of st.state.loaded) if (p.safeToReapply === false) withData.add(p.buildId);
    storedBytes = await selectStoredBuildIds(opts.pool, [...withData]);
  }
  return { ...preflight(plan, hosts, live, rolloutId, storedBytes), rolloutId };
}
