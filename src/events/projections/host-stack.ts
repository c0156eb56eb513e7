/**
 * A host's live-patch state, folded from its stream with Xen's semantics (xen-livepatch.md §3):
 *
 * - PayloadUploaded loads a payload as CHECKED.
 * - PayloadApplied pushes it on the applied stack (APPLIED); applying an APPLIED payload is a no-op.
 * - PayloadReverted pops it; it must be the top. Reverting a CHECKED payload is a no-op.
 * - PayloadReplaced reverts the whole stack (those payloads stay loaded, CHECKED) and leaves the
 *   one payload as the only entry.
 * - PayloadUnloaded removes a loaded, not applied, payload.
 * - HostRebooted clears everything loaded and applied.
 * - DriftDetected records what the live host was seen to run: from then on, that is the state.
 *
 * A fact Xen would have refused (reverting a payload that is not the top, unloading an applied
 * one, ...) cannot have happened as recorded. The reducer does not stop on it, which would wedge
 * every projection behind one bad event: it leaves the state as Xen would have, and notes an
 * anomaly that the audit shows. Pure.
 */
import type { DomainEvent, HostSnapshot, LoadedPayload, PayloadRef } from '../catalogue.ts';
import type { RecordedEvent } from '../sql/event-row.ts';
import { hostStream } from '../streams.ts';

export interface HostAnomaly {
  streamPosition: number;
  type: string;
  description: string;
}

export interface HostStackState {
  hostId: string;
  /** Learned from dependency checks against the hypervisor, reboots and drift; null if never seen. */
  hypervisorBuildId: string | null;
  /** Every loaded payload, in upload order. */
  loaded: LoadedPayload[];
  /** The applied stack, bottom first. */
  applied: PayloadRef[];
  /** The most recent facts that Xen could not have produced (at most MAX_ANOMALIES). */
  anomalies: HostAnomaly[];
  /** Position of the last event folded (0: none). */
  streamPosition: number;
  /** When the last folded event was recorded. */
  updatedAt: string | null;
}

export const MAX_ANOMALIES = 100;

export function emptyHostStack(hostId: string): HostStackState {
  return { hostId, hypervisorBuildId: null, loaded: [], applied: [], anomalies: [], streamPosition: 0, updatedAt: null };
}

const ref = (p: PayloadRef): string => `${p.name} (${p.buildId.slice(0, 12)})`;
const sameStack = (a: PayloadRef[], b: PayloadRef[]): boolean => a.length === b.length && a.every((p, i) => p.name === b[i]!.name && p.buildId === b[i]!.buildId);

/** Folds one event of this host's stream. Events of other streams are a programming error. */
export function evolveHostStack(state: HostStackState, recorded: RecordedEvent): HostStackState {
  if (recorded.streamId !== hostStream(state.hostId)) {
    throw new TypeError(`event ${recorded.streamId}@${recorded.streamPosition} is not in the stream of host ${state.hostId}`);
  }
  const anomalies: string[] = [];
  if (recorded.streamPosition !== state.streamPosition + 1) {
    anomalies.push(`events out of sequence: expected position ${state.streamPosition + 1}, got ${recorded.streamPosition}`);
  }
  const next = apply(state, recorded.event, anomalies);
  const noted = anomalies.map((description) => ({ streamPosition: recorded.streamPosition, type: recorded.event.type, description }));
  return {
    ...next,
    anomalies: noted.length > 0 ? [...state.anomalies, ...noted].slice(-MAX_ANOMALIES) : state.anomalies,
    streamPosition: recorded.streamPosition,
    updatedAt: recorded.recordedAt,
  };
}

export function foldHostStack(hostId: string, events: Iterable<RecordedEvent>, from: HostStackState = emptyHostStack(hostId)): HostStackState {
  let state = from;
  for (const e of events) state = evolveHostStack(state, e);
  return state;
}

function apply(s: HostStackState, e: DomainEvent, anomalies: string[]): HostStackState {
  const find = (name: string) => s.loaded.find((p) => p.name === name);
  switch (e.type) {
    case 'PayloadUploaded': {
      const same = find(e.payload.name);
      if (same) {
        anomalies.push(`uploaded ${ref(e.payload)} while ${ref(same)} is loaded under that name (Xen refuses: EEXIST)`);
        return s;
      }
      return { ...s, loaded: [...s.loaded, { ...e.payload, state: 'CHECKED' }] };
    }
    case 'PayloadApplied': {
      const loaded = find(e.payload.name);
      if (loaded?.state === 'APPLIED') return s;
      if (!loaded) anomalies.push(`applied ${ref(e.payload)} with no recorded upload`);
      else if (loaded.buildId !== e.payload.buildId) anomalies.push(`applied ${ref(e.payload)} but ${ref(loaded)} was uploaded under that name`);
      return {
        ...s,
        loaded: loaded ? s.loaded.map((p) => (p === loaded ? { ...e.payload, state: 'APPLIED' } : p)) : [...s.loaded, { ...e.payload, state: 'APPLIED' }],
        applied: [...s.applied, { ...e.payload }],
      };
    }
    case 'PayloadReverted': {
      const loaded = find(e.payload.name);
      if (!loaded) {
        anomalies.push(`reverted ${ref(e.payload)}, which is not loaded (Xen refuses: ENOENT)`);
        return s;
      }
      if (loaded.state === 'CHECKED') return s;
      const top = s.applied[s.applied.length - 1];
      if (!top || top.name !== e.payload.name) {
        anomalies.push(`reverted ${ref(e.payload)}, which is not the top of the stack${top ? ` (the top is ${ref(top)})` : ''} (Xen refuses: EBUSY)`);
        return s;
      }
      return { ...s, loaded: s.loaded.map((p) => (p === loaded ? { ...p, state: 'CHECKED' } : p)), applied: s.applied.slice(0, -1) };
    }
    case 'PayloadReplaced': {
      if (!sameStack(e.replaced, s.applied)) {
        anomalies.push(`REPLACE says it reverted [${e.replaced.map(ref).join(', ')}], the recorded stack was [${s.applied.map(ref).join(', ')}]`);
      }
      const loaded = find(e.payload.name);
      if (!loaded) anomalies.push(`replaced the stack with ${ref(e.payload)}, which has no recorded upload`);
      const demoted = s.loaded.map((p): LoadedPayload => (p.state === 'APPLIED' ? { ...p, state: 'CHECKED' } : p));
      return {
        ...s,
        loaded: loaded ? demoted.map((p) => (p.name === e.payload.name ? { ...e.payload, state: 'APPLIED' } : p)) : [...demoted, { ...e.payload, state: 'APPLIED' }],
        applied: [{ ...e.payload }],
      };
    }
    case 'PayloadUnloaded': {
      const loaded = find(e.payload.name);
      if (!loaded) {
        anomalies.push(`unloaded ${ref(e.payload)}, which is not loaded (Xen refuses: ENOENT)`);
        return s;
      }
      if (loaded.state === 'APPLIED') {
        anomalies.push(`unloaded ${ref(e.payload)} while it is applied (Xen refuses: EINVAL)`);
        return s;
      }
      return { ...s, loaded: s.loaded.filter((p) => p !== loaded) };
    }
    case 'HostRebooted':
      return { ...s, loaded: [], applied: [], hypervisorBuildId: e.hypervisorBuildId ?? s.hypervisorBuildId };
    case 'DriftDetected':
      return {
        ...s,
        loaded: e.live.loaded.map((p) => ({ ...p })),
        applied: e.live.appliedStack.map((p) => ({ ...p })),
        hypervisorBuildId: e.live.hypervisorBuildId ?? s.hypervisorBuildId,
      };
    case 'DependencyChecked':
      return e.against.kind === 'hypervisor' && e.found !== null ? { ...s, hypervisorBuildId: e.found } : s;
    default:
      return s;
  }
}

/** The comparable part of the state (what a live host reports too). */
export function hostSnapshot(state: HostStackState): HostSnapshot {
  return {
    ...(state.hypervisorBuildId ? { hypervisorBuildId: state.hypervisorBuildId } : {}),
    appliedStack: state.applied.map((p) => ({ name: p.name, buildId: p.buildId })),
    loaded: state.loaded.map((p) => ({ name: p.name, buildId: p.buildId, state: p.state })),
  };
}
