/**
 * What a rollout's report says when a host's activity fails: always a catalogue code, so the
 * report, the events and the API can switch on it; anything else is INTERNAL with its words kept.
 */
import { ActivityFailure, ApplicationFailure, RetryState, TimeoutFailure, TimeoutType } from '@temporalio/common';
import { describe, expect, it } from 'vitest';
import { hostFailure } from '../../workflows/failures.ts';

const activityFailed = (cause: Error) => new ActivityFailure('activity failed', 'patchBatch', '1', RetryState.MAXIMUM_ATTEMPTS_REACHED, 'worker-1', cause);

describe('hostFailure', () => {
  it('keeps a catalogue code and the reason in words', () => {
    const f = hostFailure('apply', activityFailed(ApplicationFailure.nonRetryable('xen_hello_world: check against hypervisor build-id failed', 'EINVAL')));
    expect(f).toEqual({ stage: 'apply', code: 'EINVAL', reason: 'xen_hello_world: check against hypervisor build-id failed', unreachable: false });
  });

  it('an unreachable host counts as unreachable', () => {
    expect(hostFailure('read', ApplicationFailure.retryable('connect ECONNREFUSED', 'HOST_UNREACHABLE'))).toMatchObject({ code: 'HOST_UNREACHABLE', unreachable: true });
  });

  it('a type that is not in the catalogue is INTERNAL, and the reason says what it was', () => {
    const f = hostFailure('verify', activityFailed(ApplicationFailure.create({ message: 'boom', type: 'TypeError' })));
    expect(f).toEqual({ stage: 'verify', code: 'INTERNAL', reason: 'TypeError: boom', unreachable: false });
  });

  it('an activity that timed out after every retry: the host never answered', () => {
    const f = hostFailure('apply', activityFailed(new TimeoutFailure('activity StartToClose timeout', undefined, TimeoutType.START_TO_CLOSE)));
    expect(f).toMatchObject({ code: 'HOST_TIMEOUT', unreachable: true });
  });

  it('anything else is INTERNAL', () => {
    expect(hostFailure('upload', new RangeError('bad length'))).toEqual({ stage: 'upload', code: 'INTERNAL', reason: 'RangeError: bad length', unreachable: false });
    expect(hostFailure('upload', 'thrown text')).toEqual({ stage: 'upload', code: 'INTERNAL', reason: 'thrown text', unreachable: false });
  });
});
