/**
 * Builders of realistic events for the event-store tests: Xen's own test payloads (xen-livepatch.md
 * §5) on hosts, and a rollout with waves, a pause, an approval and a rollback.
 */
import { parseEvent, type DomainEvent, type DomainEventInput, type PayloadRef } from '../../../src/events/catalogue.ts';
import { eventIdFromKey } from '../../../src/events/event-id.ts';
import type { RecordedEvent } from '../../../src/events/store.ts';
import type { EventToAppend } from '../../../src/events/store.ts';

export const XEN = 'a1'.repeat(20);
export const XEN_OTHER = 'a2'.repeat(20);
export const HELLO: PayloadRef = { name: 'xen_hello_world', buildId: '11'.repeat(20) };
export const BYE: PayloadRef = { name: 'xen_bye_world', buildId: '22'.repeat(20) };
export const REPLACE: PayloadRef = { name: 'xen_replace_world', buildId: '33'.repeat(20) };
export const NOP: PayloadRef = { name: 'xen_nop', buildId: '44'.repeat(20) };

export const WORKFLOW = { kind: 'workflow', id: 'host-patch/r1/h1' } as const;
export const ALICE = { kind: 'user', id: 'alice' } as const;

const T0 = Date.parse('2025-03-01T10:00:00.000Z');
/** A distinct instant per call, one second apart, so timelines read naturally. */
export function clock(start = T0): () => string {
  let t = start;
  return () => new Date((t += 1000)).toISOString();
}

type HostEventType = 'PayloadUploaded' | 'PayloadApplied' | 'PayloadReverted' | 'PayloadUnloaded';

export function hostEvents(hostId: string, now: () => string = clock(), rolloutId?: string) {
  const base = () => ({ schemaVersion: 1 as const, occurredAt: now(), actor: WORKFLOW, correlation: rolloutId ? { rolloutId } : {}, hostId });
  const simple = (type: HostEventType) => (payload: PayloadRef): DomainEventInput => ({ ...base(), type, payload });
  return {
    uploaded: simple('PayloadUploaded'),
    applied: simple('PayloadApplied'),
    reverted: simple('PayloadReverted'),
    unloaded: simple('PayloadUnloaded'),
    replaced: (payload: PayloadRef, replaced: PayloadRef[]): DomainEventInput => ({ ...base(), type: 'PayloadReplaced', payload, replaced }),
    rebooted: (hypervisorBuildId?: string): DomainEventInput => ({ ...base(), type: 'HostRebooted', ...(hypervisorBuildId ? { hypervisorBuildId } : {}) }),
    checked: (payload: PayloadRef, expected: string, found: string | null, against: { kind: 'hypervisor' } | { kind: 'payload'; name: string; buildId: string }, phase: 'preflight' | 'upload' | 'apply' = 'apply'): DomainEventInput => ({
      ...base(),
      type: 'DependencyChecked',
      payload,
      phase,
      expected,
      found,
      against,
      outcome: found === null ? 'unreachable' : expected === found ? 'match' : 'mismatch',
      ...(found !== null && expected !== found ? { errno: 'EINVAL' as const, reason: `check against ${against.kind === 'hypervisor' ? 'hypervisor' : against.name} build-id failed` } : {}),
    }),
    health: (outcome: 'healthy' | 'unhealthy'): DomainEventInput => ({ ...base(), type: 'HealthChecked', outcome, check: { call: 'xen_extra_version', expect: 'Hello World' }, observed: outcome === 'healthy' ? 'Hello World' : '' }),
  };
}

/** Xen's order-of-application run (xen-livepatch.md §5) as the facts it leaves, for one host. */
export function xenTestRun(hostId: string, now: () => string = clock()): DomainEventInput[] {
  const h = hostEvents(hostId, now);
  return [
    h.checked(HELLO, XEN, XEN, { kind: 'hypervisor' }),
    h.uploaded(HELLO),
    h.applied(HELLO),
    h.reverted(HELLO),
    h.unloaded(HELLO),
    h.uploaded(HELLO),
    h.applied(HELLO),
    h.checked(BYE, HELLO.buildId, HELLO.buildId, { kind: 'payload', ...HELLO }),
    h.uploaded(BYE),
    h.applied(BYE),
    h.uploaded(REPLACE),
    h.replaced(REPLACE, [HELLO, BYE]),
    h.checked(BYE, HELLO.buildId, REPLACE.buildId, { kind: 'payload', ...REPLACE }),
  ];
}

/** Deterministic ids for a list of events, keyed by a test-chosen prefix. */
export function withIds(prefix: string, events: DomainEventInput[]): EventToAppend[] {
  return events.map((event, i) => ({ eventId: eventIdFromKey(`${prefix}:${i}`), event }));
}

/** Events as the store would give them back, for pure reducer tests. */
export function asRecorded(streamId: string, events: DomainEventInput[], firstPosition = 1): RecordedEvent[] {
  return events.map((input, i) => {
    const event: DomainEvent = parseEvent(input);
    return {
      eventId: eventIdFromKey(`${streamId}:${firstPosition + i}`),
      streamId,
      streamPosition: firstPosition + i,
      globalPosition: firstPosition + i,
      transactionId: String(1000 + firstPosition + i),
      recordedAt: event.occurredAt,
      hash: '0'.repeat(64),
      event,
    };
  });
}

/** A rollout with two waves, a failure, a pause and resume, an approval and a rollback. */
export function rolloutStory(rolloutId: string, now: () => string = clock()): DomainEventInput[] {
  const base = (actor: { kind: 'user' | 'workflow' | 'system'; id: string } = { kind: 'workflow', id: `rollout/${rolloutId}` }) => ({
    schemaVersion: 1 as const,
    occurredAt: now(),
    actor,
    correlation: { rolloutId, workflowId: `rollout/${rolloutId}`, runId: 'run-1' },
    rolloutId,
  });
  return [
    { ...base(ALICE), type: 'RolloutStarted', planName: 'hello-everywhere', mode: 'apply', payloads: [{ ...HELLO, depends: XEN, xenDepends: XEN }], waves: [{ name: 'canary' }, { name: 'rest' }], reason: 'CVE-2025-0001' },
    { ...base(), type: 'WaveStarted', wave: 'canary', waveIndex: 0, plannedHosts: 1 },
    { ...base(), type: 'HostPatchFinished', hostId: 'h1', wave: 'canary', outcome: 'patched', applied: [HELLO] },
    { ...base(), type: 'WaveFinished', wave: 'canary', waveIndex: 0, outcome: 'succeeded', planned: 1, patched: 1, already: 0, failed: 0, unreachable: 0 },
    { ...base(), type: 'RolloutPaused', reason: 'waiting for approval after canary', wave: 'canary' },
    { ...base(ALICE), type: 'ApprovalGiven', wave: 'canary', reason: 'canary healthy for 10 minutes' },
    { ...base(ALICE), type: 'RolloutResumed', reason: 'approved' },
    { ...base(), type: 'WaveStarted', wave: 'rest', waveIndex: 1, plannedHosts: 2 },
    { ...base(), type: 'HostPatchFinished', hostId: 'h2', wave: 'rest', outcome: 'patched', applied: [HELLO] },
    {
      ...base(),
      type: 'HostPatchFinished',
      hostId: 'h3',
      wave: 'rest',
      outcome: 'failed',
      applied: [],
      failure: { stage: 'check', code: 'EINVAL', reason: 'xen_hello_world depends on a1a1…, the hypervisor is a2a2…', unreachable: false },
    },
    { ...base(), type: 'WaveFinished', wave: 'rest', waveIndex: 1, outcome: 'failed', planned: 2, patched: 1, already: 0, failed: 1, unreachable: 0, reason: 'failure budget of 0 exceeded' },
    { ...base(), type: 'RollbackStarted', reason: 'wave rest exceeded its failure budget', hosts: 2 },
    { ...base(), type: 'HostRollbackFinished', hostId: 'h1', outcome: 'rolled-back', reverted: [HELLO], reapplied: [] },
    { ...base(), type: 'HostRollbackFinished', hostId: 'h2', outcome: 'stack-grew', reverted: [], reapplied: [], reason: 'xen_bye_world was applied above it since' },
    { ...base(), type: 'RollbackFinished', rolledBack: 1, stackGrew: 1, failed: 0, nothingToDo: 0, outcome: 'rollback-incomplete' },
    { ...base(), type: 'RolloutFinished', status: 'rollback-incomplete', reason: 'wave rest exceeded its failure budget' },
  ];
}
