/**
 * `fleetpatch audit replay --host H`: rebuild the host's state from its events, read what the live
 * host reports, compare. Any difference is drift: reported, and recorded as DriftDetected (whose
 * live state the host-stack reducer adopts, so the same drift is recorded once, not on every run).
 *
 * The live state comes from an injected reader, so this module needs no network; the CLI passes
 * one that asks the emulated fleet (src/cli/audit.ts, through src/app).
 */
import { isFleetpatchError } from '../../errors.ts';
import type { Actor, Correlation, HostSnapshot, LoadedPayload, PayloadRef, StackDifference } from '../catalogue.ts';
import { eventIdFromKey } from '../event-id.ts';
import { canonicalJson, sha256Hex } from '../hash-chain.ts';
import { foldHostStack, hostSnapshot, type HostStackState } from '../projections/host-stack.ts';
import type { EventStore } from '../store.ts';
import { hostStream } from '../streams.ts';
import { noticeBoots } from '../host-boots.ts';

/**
 * What a live host reports: hypervisor build-id, applied stack (bottom first), loaded payloads,
 * and its boot identity when the reader knows it (a new boot lost the stack: see host-boots.ts).
 */
export type LiveHostState = HostSnapshot & { boot?: { id: string; at: string } };
export type ReadLiveState = (hostId: string) => Promise<LiveHostState>;

const fmt = (p: PayloadRef | undefined): string | null => (p ? `${p.name} (${p.buildId})` : null);
const fmtLoaded = (p: LoadedPayload | undefined): string | null => (p ? `${p.name} (${p.buildId}) ${p.state}` : null);

/** Every way the replayed state differs from the live one; empty when they agree. Pure. */
export function compareStacks(replayed: HostSnapshot, live: HostSnapshot): StackDifference[] {
  const out: StackDifference[] = [];
  if (replayed.hypervisorBuildId && live.hypervisorBuildId && replayed.hypervisorBuildId !== live.hypervisorBuildId) {
    out.push({
      where: 'hypervisor',
      replayed: replayed.hypervisorBuildId,
      live: live.hypervisorBuildId,
      description: `the events say the hypervisor is ${replayed.hypervisorBuildId}, the host runs ${live.hypervisorBuildId}`,
    });
  }
  const height = Math.max(replayed.appliedStack.length, live.appliedStack.length);
  for (let i = 0; i < height; i++) {
    const r = replayed.appliedStack[i];
    const l = live.appliedStack[i];
    if (r && l && r.name === l.name && r.buildId === l.buildId) continue;
    out.push({
      where: 'applied',
      index: i,
      replayed: fmt(r),
      live: fmt(l),
      description: `applied stack position ${i} (bottom = 0): the events say ${fmt(r) ?? 'nothing'}, the host has ${fmt(l) ?? 'nothing'}`,
    });
  }
  const names = [...new Set([...replayed.loaded.map((p) => p.name), ...live.loaded.map((p) => p.name)])];
  for (const name of names) {
    const r = replayed.loaded.find((p) => p.name === name);
    const l = live.loaded.find((p) => p.name === name);
    if (r && l && r.buildId === l.buildId && r.state === l.state) continue;
    const description = !l
      ? `the events say ${fmtLoaded(r)} is loaded, the host does not have it`
      : !r
        ? `the host has ${fmtLoaded(l)} loaded, the events never loaded it`
        : `the events say ${fmtLoaded(r)}, the host has ${fmtLoaded(l)}`;
    out.push({ where: 'loaded', replayed: fmtLoaded(r), live: fmtLoaded(l), description });
  }
  return out;
}

export interface ReplayResult {
  hostId: string;
  /** The state folded from the host's events (before any drift recorded by this call). */
  replayed: HostStackState;
  live: LiveHostState;
  differences: StackDifference[];
  /** The DriftDetected event recorded for the differences, if any. */
  drift: { eventId: string; streamPosition: number; alreadyRecorded: boolean } | null;
}

export interface ReplayOptions {
  actor: Actor;
  correlation?: Correlation;
  /** Record differences as DriftDetected (default true). */
  record?: boolean;
}

export async function replayHost(store: EventStore, hostId: string, readLiveState: ReadLiveState, options: ReplayOptions): Promise<ReplayResult> {
  // If the host's stream moves on between the replay and the record, the comparison may be stale:
  // compare again with the new events.
  for (let attempt = 1; ; attempt++) {
    const replayed = foldHostStack(hostId, await store.readStream(hostStream(hostId)));
    const liveRead = await readLiveState(hostId);
    // A reboot since fleetpatch last looked is recorded first (the record then says the stack is
    // gone), and the comparison starts again from the record that holds it.
    if (liveRead.boot && options.record !== false) {
      const rebooted = await noticeBoots(store, [{ hostId, bootId: liveRead.boot.id, bootedAt: liveRead.boot.at, ...(liveRead.hypervisorBuildId ? { hypervisorBuildId: liveRead.hypervisorBuildId } : {}) }], options);
      if (rebooted.size > 0 && attempt < 3) continue;
    }
    const { boot: _boot, ...live } = liveRead;
    const differences = compareStacks(hostSnapshot(replayed), live);
    if (differences.length === 0 || options.record === false) return { hostId, replayed, live, differences, drift: null };
    try {
      const result = await store.append(
        hostStream(hostId),
        [
          {
            eventId: eventIdFromKey(`drift:${hostId}:${replayed.streamPosition}:${sha256Hex(canonicalJson(live))}`),
            event: {
              type: 'DriftDetected',
              schemaVersion: 1,
              occurredAt: new Date().toISOString(),
              actor: options.actor,
              correlation: options.correlation ?? {},
              hostId,
              replayed: hostSnapshot(replayed),
              live,
              differences,
            },
          },
        ],
        { expectedVersion: replayed.streamPosition },
      );
      const recorded = result.events[0]!;
      return { hostId, replayed, live, differences, drift: { eventId: recorded.eventId, streamPosition: recorded.streamPosition, alreadyRecorded: recorded.alreadyRecorded } };
    } catch (e) {
      if (attempt < 3 && isFleetpatchError(e) && e.code === 'STREAM_VERSION_CONFLICT') continue;
      throw e;
    }
  }
}
