import { describe, expect, it } from 'vitest';
import { foldRolloutSummary } from '../../src/events/projections/rollout-summary.ts';
import { ALICE, HELLO, asRecorded, rolloutStory } from './support/events.ts';

describe('rollout summary reducer', () => {
  it('folds waves, host outcomes, decisions with who and why, and the rollback', () => {
    const s = foldRolloutSummary('r1', asRecorded('rollout-r1', rolloutStory('r1')));
    expect(s).toMatchObject({
      rolloutId: 'r1',
      planName: 'hello-everywhere',
      mode: 'apply',
      status: 'rollback-incomplete',
      startedBy: ALICE,
      startReason: 'CVE-2025-0001',
      finishReason: 'wave rest exceeded its failure budget',
      payloads: [HELLO],
      hosts: { patched: 2, already: 0, failed: 1, unreachable: 0 },
      streamPosition: 16,
    });
    expect(s.waves.map((w) => [w.name, w.status, w.planned, w.patched, w.failed])).toEqual([
      ['canary', 'succeeded', 1, 1, 0],
      ['rest', 'failed', 2, 1, 1],
    ]);
    expect(s.decisions.map((d) => [d.action, d.by.id, d.reason, d.wave])).toEqual([
      ['paused', 'rollout/r1', 'waiting for approval after canary', 'canary'],
      ['approved', 'alice', 'canary healthy for 10 minutes', 'canary'],
      ['resumed', 'alice', 'approved', null],
    ]);
    expect(s.rollback).toMatchObject({ status: 'finished', hosts: 2, rolledBack: 1, stackGrew: 1, failed: 0 });
  });

  it('shows progress before the end: running counts per wave, rollback in progress', () => {
    const story = rolloutStory('r1');
    const midWave = foldRolloutSummary('r1', asRecorded('rollout-r1', story.slice(0, 9)));
    expect(midWave.status).toBe('running');
    expect(midWave.waves[1]).toMatchObject({ status: 'running', planned: 2, patched: 1, failed: 0 });
    const rollingBack = foldRolloutSummary('r1', asRecorded('rollout-r1', story.slice(0, 13)));
    expect(rollingBack.status).toBe('rolling-back');
    expect(rollingBack.rollback).toMatchObject({ status: 'running', rolledBack: 1 });
  });

  it('records an abort with its reason', () => {
    const story = rolloutStory('r1');
    const aborted = [
      ...story.slice(0, 2),
      { ...story[6]!, type: 'RolloutAborted', reason: 'wrong payload selected' },
      { ...story[15]!, status: 'aborted', reason: undefined },
    ] as typeof story;
    const s = foldRolloutSummary('r1', asRecorded('rollout-r1', aborted));
    expect(s.status).toBe('aborted');
    expect(s.finishReason).toBe('wrong payload selected');
    expect(s.decisions).toEqual([expect.objectContaining({ action: 'aborted', by: ALICE, reason: 'wrong payload selected' })]);
  });

  it("knows every wave's planned size from the preflight, also for waves that never started", () => {
    const story = rolloutStory('r1');
    const preflight = { ...story[1]!, type: 'PreflightCompleted', selected: 4, targets: 3, alreadyPatched: 1, incompatible: 0, unreachable: 0, waves: [{ name: 'canary', planned: 1 }, { name: 'rest', planned: 2 }] };
    // The canary failed and the rollout rolled back: wave "rest" never started.
    const s = foldRolloutSummary('r1', asRecorded('rollout-r1', [story[0]!, preflight, ...story.slice(1, 3), ...story.slice(11)] as typeof story));
    expect(s.waves.map((w) => [w.name, w.status, w.planned])).toEqual([
      ['canary', 'running', 1],
      ['rest', 'pending', 2],
    ]);
  });

  it('a rollback a person asks for after the end decides where the rollout stands, and says who asked', () => {
    const story = rolloutStory('r1');
    const finished = story.slice(0, 11).concat(story[15]!).map((e) => (e.type === 'RolloutFinished' ? { ...e, status: 'failed' } : e)) as typeof story;
    const bob = { kind: 'user' as const, id: 'bob' };
    const later = [
      { ...story[11]!, actor: bob, reason: 'the fix broke networking' },
      story[12]!,
      { ...story[14]!, actor: bob, rolledBack: 1, stackGrew: 0, outcome: 'rolled-back' },
    ] as typeof story;
    const s = foldRolloutSummary('r1', asRecorded('rollout-r1', [...finished, ...later]));
    expect(s.status).toBe('rolled-back');
    expect(s.rollback).toMatchObject({ status: 'finished', requestedBy: bob, reason: 'the fix broke networking', outcome: 'rolled-back', rolledBack: 1 });
  });
});
