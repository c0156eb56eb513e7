import { describe, expect, it } from 'vitest';
import { activityEventId, eventIdFromKey, uuidV5, UUID_PATTERN } from '../../src/events/event-id.ts';

describe('deterministic event ids', () => {
  it('is RFC 4122 version 5 (the DNS namespace test vector)', () => {
    expect(uuidV5('www.example.com', '6ba7b810-9dad-11d1-80b4-00c04fd430c8')).toBe('2ed6657d-e927-568b-95e1-2665a8aea6a2');
  });

  it('gives a key the id every earlier version gave it (stored ids must keep matching retries)', () => {
    expect(eventIdFromKey('ro-1/host-0001/apply/1')).toBe('060dfa39-944e-5821-9dae-5e7e4c72b239');
    expect(eventIdFromKey('ключ/é/🙂')).toBe('ee700001-dd25-53f4-b317-4abfcc233e40');
  });

  it('gives a retried activity the same id, and other steps, runs and keys other ids', () => {
    const step = { workflowId: 'host-patch/r1/h1', runId: 'run-a', activityId: '7', step: 'applied' };
    const id = activityEventId(step);
    expect(id).toMatch(UUID_PATTERN);
    expect(activityEventId({ ...step })).toBe(id);
    const others = [
      activityEventId({ ...step, step: 'checked' }),
      activityEventId({ ...step, runId: 'run-b' }),
      activityEventId({ ...step, activityId: '8' }),
      activityEventId({ ...step, workflowId: 'host-patch/r1/h2' }),
      eventIdFromKey('applied'),
    ];
    expect(new Set([id, ...others]).size).toBe(others.length + 1);
    // Field boundaries cannot be shifted to collide.
    expect(activityEventId({ workflowId: 'a', activityId: 'bc', step: 'd' })).not.toBe(activityEventId({ workflowId: 'ab', activityId: 'c', step: 'd' }));
    expect(() => eventIdFromKey('')).toThrow();
  });
});
