/**
 * Recording events from activities: the envelope (when, who, correlation) comes from the activity's
 * context, and the event id from (workflow, run, activity, step), so a retried activity never
 * records the same fact twice.
 */
import { Context } from '@temporalio/activity';
import type { Actor, Correlation, DomainEventInput } from '../src/events/catalogue.ts';
import { activityEventId, eventIdFromKey } from '../src/events/event-id.ts';
import type { EventStore } from '../src/events/store.ts';
import { foldHostStack, type HostStackState } from '../src/events/projections/host-stack.ts';
import { hostStream, streamFor } from '../src/events/streams.ts';
import type { DependencyCheck } from '../src/rollout/matching.ts';

/** Distributive Omit: keeps each member of the event union its own shape. */
type WithoutEnvelope<T> = T extends unknown ? Omit<T, 'occurredAt' | 'actor' | 'correlation' | 'schemaVersion'> : never;
export type EventBody = WithoutEnvelope<DomainEventInput>;

export interface ActivityIdentity {
  actor: Actor;
  correlation: Correlation;
  workflowId: string;
  runId: string;
  activityId: string;
}

export function activityIdentity(rolloutId?: string): ActivityIdentity {
  const info = Context.current().info;
  if (!info.workflowExecution) throw new Error('fleetpatch activities run only inside workflows');
  const { workflowId, runId } = info.workflowExecution;
  // Local and regular activities count their ids separately within a run: keep them apart.
  const activityId = `${info.isLocal ? 'local:' : ''}${info.activityId}`;
  return {
    actor: { kind: 'workflow', id: workflowId },
    correlation: { ...(rolloutId ? { rolloutId } : {}), workflowId, runId, activityId, attempt: info.attempt },
    workflowId,
    runId,
    activityId,
  };
}

export function envelope(id: Pick<ActivityIdentity, 'actor' | 'correlation'>, body: EventBody, occurredAt = new Date()): DomainEventInput {
  return { ...body, schemaVersion: 1, occurredAt: occurredAt.toISOString(), actor: id.actor, correlation: id.correlation } as DomainEventInput;
}

/** Records one event from this activity; `step` tells several events of one activity apart. */
export async function recordFromActivity(events: EventStore, id: ActivityIdentity, step: string, body: EventBody): Promise<void> {
  const event = envelope(id, body);
  const eventId = activityEventId({ workflowId: id.workflowId, runId: id.runId, activityId: id.activityId, step });
  await events.append(streamFor(event as never), [{ eventId, event }]);
}

/** Records events whose identity is a key chosen by the caller (preflight, rollout decisions). */
export async function recordWithKeys(events: EventStore, items: { key: string; event: DomainEventInput }[]): Promise<void> {
  const byStream = new Map<string, { eventId: string; event: DomainEventInput }[]>();
  for (const { key, event } of items) {
    const stream = streamFor(event as never);
    byStream.set(stream, [...(byStream.get(stream) ?? []), { eventId: eventIdFromKey(key), event }]);
  }
  if (byStream.size === 0) return;
  await events.appendMany([...byStream].map(([streamId, evs]) => ({ streamId, events: evs })));
}

/**
 * What the event store says the host runs. An activity retried after the host already did the
 * work (the first attempt crashed before recording) uses it to decide whether the fact is still
 * missing from the record.
 */
export async function recordedHostState(events: EventStore, hostId: string): Promise<HostStackState> {
  return foldHostStack(hostId, await events.readStream(hostStream(hostId)));
}

/** fleetpatch's own dependency check (at preflight, or before APPLY) as the DependencyChecked event it records. */
export function dependencyCheckEvent(hostId: string, check: DependencyCheck, phase: 'preflight' | 'apply'): EventBody {
  return {
    type: 'DependencyChecked',
    hostId,
    payload: check.payload,
    phase,
    on: check.on,
    expected: check.expected,
    found: check.found,
    against: check.against,
    outcome: check.outcome,
    ...(check.outcome === 'mismatch' ? { errno: 'EINVAL' as const } : {}),
    reason: `checked by fleetpatch at ${phase}: ${check.payload.name} ${check.on === 'xen_depends' ? 'was built for' : 'depends on'} ${check.expected.slice(0, 12)}…, the host has ${check.found.slice(0, 12)}…`,
  };
}
