import { describe, expect, it } from 'vitest';
import { requireRecordable } from '../../src/control/decision-text.ts';

const alice = { kind: 'user' as const, id: 'alice' };

describe('who asks and why, before anything is started or steered', () => {
  it('refuses a reason or an actor the store could not record, naming the field', () => {
    expect(() => requireRecordable('rollout pause', alice, 'bad\u0000reason')).toThrow(/rollout pause: reason contains a NUL character/);
    expect(() => requireRecordable('rollout start', { kind: 'user', id: 'x\uD800' }, 'ok')).toThrow(/rollout start: requestedBy\.id .*lone UTF-16 surrogate/);
    expect(() => requireRecordable('rollout start', alice, 'x'.repeat(1001))).toThrow(/1001 characters long; at most 1000/);
  });

  it('asks for a reason where one is recorded with the decision, and takes any storable text', () => {
    expect(() => requireRecordable('rollout abort', alice, '  ', { reasonRequired: true })).toThrow(/say why/);
    expect(() => requireRecordable('rollout abort', alice, undefined, { reasonRequired: true })).toThrow(/say why/);
    expect(() => requireRecordable('rollout start', alice, undefined)).not.toThrow();
    expect(() => requireRecordable('rollout abort', alice, 'canary 🩹 looks wrong — نعم', { reasonRequired: true })).not.toThrow();
  });
});
