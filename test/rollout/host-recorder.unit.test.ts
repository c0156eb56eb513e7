/**
 * The idempotency keys of a host's facts (activities/host-recorder.ts): a repair's keys never
 * equal the rollout's or another repair's, while the same repair computes the same keys again
 * (a retried batch); ordinals continue from what the stream holds, learning it twice moves none.
 */
import { describe, expect, it } from 'vitest';
import { HostRecorder } from '../../activities/host-recorder.ts';
import type { GroupCommitter } from '../../src/events/group-commit.ts';
import { HELLO, asRecorded, hostEvents } from '../events/support/events.ts';

const id = { actor: { kind: 'workflow' as const, id: 'rollout-r1' }, correlation: { rolloutId: 'r1' } };
const recorder = (repair?: string) => new HostRecorder({} as GroupCommitter, id, { rolloutId: 'r1', ...(repair ? { repair } : {}) }, 'h1');

describe('a host recorder', () => {
  it('gives a repair keys of its own, and the same ones to a retry of the same repair', () => {
    const keys = (r: HostRecorder) => [r.key('started'), r.key(HELLO.buildId, 'applied', 0), r.key('restore-health', 0), r.finishedKey()];
    const rollout = keys(recorder());
    const first = keys(recorder('repair-1'));
    const second = keys(recorder('repair-2'));
    expect(rollout).toEqual(['r1/h1/started', `r1/h1/${HELLO.buildId}/applied/0`, 'r1/h1/restore-health/0', 'host-finished/r1/h1']);
    for (const k of first) expect(rollout).not.toContain(k);
    for (const k of second) expect([...rollout, ...first]).not.toContain(k);
    expect(keys(recorder('repair-1'))).toEqual(first);
    // A rollback's facts are its own too: its restore never takes the key of the restore after a failed patch.
    const rollback = keys(new HostRecorder({} as GroupCommitter, id, { rolloutId: 'r1', rollback: 'rollout-r1/rollback-1' }, 'h1'));
    expect(rollback[1]).toBe(`r1/h1/rollback:rollout-r1/rollback-1/${HELLO.buildId}/applied/0`);
    for (const k of rollback.slice(0, 3)) expect([...rollout, ...first, ...second]).not.toContain(k);
  });

  it('counts a step the host refused as one that took its ordinal (its check was recorded under it)', () => {
    const h = hostEvents('h1', undefined, 'r1');
    const refused = { ...h.applied(HELLO), type: 'PayloadActionFailed', action: 'apply', code: 'EINVAL', errno: 'EINVAL', reason: 'no' } as Parameters<typeof asRecorded>[1][number];
    const r = recorder();
    r.learn(asRecorded('host-h1', [h.uploaded(HELLO), refused]));
    expect(r.peek('applied', HELLO.buildId)).toBe(1);
  });

  it('continues ordinals from the rollout\'s facts in the stream, and learning the stream again moves none', () => {
    const h = hostEvents('h1', undefined, 'r1');
    const other = hostEvents('h1', undefined, 'r0');
    const stream = asRecorded('host-h1', [other.uploaded(HELLO), other.applied(HELLO), other.reverted(HELLO), h.applied(HELLO), h.applied(HELLO)]);
    const r = recorder('repair-1');
    r.learn(stream);
    r.learn(stream);
    expect(r.peek('applied', HELLO.buildId)).toBe(2);
    expect(r.peek('uploaded', HELLO.buildId)).toBe(0);
    expect(r.next('applied', HELLO.buildId)).toBe(2);
    // An ordinal already taken is never given back by a later look at the stream.
    r.learn(stream);
    expect(r.next('applied', HELLO.buildId)).toBe(3);
  });
});
