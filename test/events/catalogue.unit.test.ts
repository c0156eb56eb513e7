import { describe, expect, it } from 'vitest';
import { EVENT_TYPES, EventSchema, parseEvent, splitEvent } from '../../src/events/catalogue.ts';
import { isFleetpatchError } from '../../src/errors.ts';
import { streamFor } from '../../src/events/streams.ts';
import { describeEvent } from '../../src/events/audit/describe.ts';
import { HELLO, XEN, hostEvents, rolloutStory, xenTestRun } from './support/events.ts';

function refusal(input: unknown): string {
  try {
    parseEvent(input);
  } catch (e) {
    if (isFleetpatchError(e) && e.code === 'EVENT_INVALID') return e.message;
    throw e;
  }
  throw new Error('the event was accepted');
}

describe('event catalogue', () => {
  it('has every event type the audit needs', () => {
    for (const t of [
      'PayloadStored', 'PayloadUploaded', 'DependencyChecked', 'PayloadApplied', 'PayloadReverted', 'PayloadReplaced', 'PayloadUnloaded',
      'HealthChecked', 'HostRebooted', 'DriftDetected', 'RolloutStarted', 'WaveStarted', 'WaveFinished', 'RolloutPaused', 'RolloutResumed',
      'RolloutAborted', 'ApprovalGiven', 'RollbackStarted', 'RollbackFinished', 'RolloutFinished', 'HostPatchStarted', 'PreflightCompleted',
    ]) {
      expect(EVENT_TYPES).toContain(t);
    }
    for (const option of EventSchema.options) expect(option.shape.schemaVersion.value).toBe(1);
  });

  it('accepts realistic events, fills defaults and normalises instants to UTC milliseconds', () => {
    const e = parseEvent({ ...hostEvents('h1').uploaded(HELLO), occurredAt: '2025-03-01T12:00:00+02:00', correlation: undefined });
    expect(e.occurredAt).toBe('2025-03-01T10:00:00.000Z');
    expect(e.correlation).toEqual({});
    const check = parseEvent(hostEvents('h1').checked(HELLO, XEN, XEN, { kind: 'hypervisor' }));
    expect(check.type === 'DependencyChecked' && check.on).toBe('depends');
    for (const input of [...xenTestRun('h1'), ...rolloutStory('r1')]) expect(() => parseEvent(input)).not.toThrow();
  });

  it('refuses what does not match, naming the field', () => {
    expect(refusal({ type: 'PayloadTeleported' })).toMatch(/PayloadTeleported/);
    expect(refusal({ ...hostEvents('h1').uploaded(HELLO), payload: { name: 'x', buildId: 'ABC' } })).toMatch(/buildId/);
    expect(refusal({ ...hostEvents('h1').uploaded(HELLO), schemaVersion: 2 })).toMatch(/schemaVersion/);
    expect(refusal({ ...hostEvents('h1').uploaded(HELLO), occurredAt: 'yesterday' })).toMatch(/occurredAt/);
    expect(refusal({ ...hostEvents('h1').uploaded(HELLO), actor: { kind: 'robot', id: 'x' } })).toMatch(/actor/);
    expect(refusal({ ...hostEvents('h1').checked(HELLO, XEN, XEN, { kind: 'hypervisor' }), errno: 'EWHATEVER' })).toMatch(/errno/);
    const drift = { ...hostEvents('h1').rebooted(), type: 'DriftDetected', replayed: { appliedStack: [], loaded: [] }, live: { appliedStack: [], loaded: [] }, differences: [] };
    expect(refusal(drift)).toMatch(/differences/);
  });

  it('puts each event in the stream of what it is about', () => {
    const [start] = rolloutStory('r-7');
    expect(streamFor(parseEvent(start))).toBe('rollout-r-7');
    expect(streamFor(parseEvent(hostEvents('h-9').applied(HELLO)))).toBe('host-h-9');
    const finished = rolloutStory('r-7')[2]!;
    expect(streamFor(parseEvent(finished))).toBe('rollout-r-7');
  });

  it('splits an event into envelope and data and describes every type in words', () => {
    const e = parseEvent(hostEvents('h1').applied(HELLO));
    const { envelope, data } = splitEvent(e);
    expect(Object.keys(envelope).sort()).toEqual(['actor', 'correlation', 'occurredAt', 'schemaVersion', 'type']);
    expect(data).toEqual({ hostId: 'h1', payload: HELLO });
    for (const input of [...xenTestRun('h1'), ...rolloutStory('r1')]) expect(describeEvent(parseEvent(input)).length).toBeGreaterThan(5);
    expect(describeEvent(parseEvent(hostEvents('h1').checked(HELLO, XEN, 'ff'.repeat(20), { kind: 'hypervisor' })))).toMatch(/MISMATCH \(EINVAL\)/);
  });
});
