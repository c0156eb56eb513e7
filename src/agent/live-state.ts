/**
 * Reading many hosts' live states at once, with bounded concurrency. An unreachable or refusing
 * host becomes a `{ ok: false }` entry with the reason, never an exception for the whole batch.
 */
import { isFleetpatchError } from '../errors.ts';
import type { HostState } from '../rollout/matching.ts';
import type { LiveState } from '../rollout/preflight.ts';
import type { FleetClient } from './client.ts';
import type { WireList } from './contract.ts';

export function hostStateFromList(hostId: string, list: WireList): HostState {
  return {
    hostId,
    hypervisorBuildId: list.hypervisor.buildId,
    applied: list.appliedStack.map((e) => ({ name: e.name, buildId: e.buildId })),
    loaded: list.entries.map((e) => ({ name: e.name, buildId: e.buildId, state: e.state, safeToReapply: e.safeToReapply })),
    ...(list.boot ? { boot: list.boot } : {}),
  };
}

export async function readLiveStates(
  fleet: FleetClient,
  hostIds: readonly string[],
  opts: { concurrency?: number; onProgress?: (read: number) => void; onRead?: (hostId: string, state: LiveState) => void } = {},
): Promise<Map<string, LiveState>> {
  const live = new Map<string, LiveState>();
  let next = 0;
  const lane = async () => {
    while (next < hostIds.length) {
      const id = hostIds[next++]!;
      let state: LiveState;
      try {
        state = { ok: true, state: hostStateFromList(id, await fleet.host(id).listAll()) };
      } catch (e) {
        if (!isFleetpatchError(e)) throw e;
        state = { ok: false, code: e.code, reason: e.message };
      }
      live.set(id, state);
      opts.onRead?.(id, state);
      opts.onProgress?.(live.size);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(opts.concurrency ?? 64, hostIds.length)) }, lane));
  return live;
}
