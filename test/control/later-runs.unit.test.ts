/**
 * What ran after a rollout ended, folded into its progress: the latest rollback decides the
 * status, a rollback that stopped on an error leaves it rollback-incomplete, repairs are listed in
 * order, and the rollout's own waves stay what the rollout did.
 */
import { describe, expect, it } from 'vitest';
import { foldLaterRuns, initialProgress, type LaterRun, type RolloutProgress } from '../../src/rollout/progress.ts';
import type { ResolvedPlan } from '../../src/rollout/types.ts';

const ops = { kind: 'user' as const, id: 'ops' };
const plan = { name: 'p', waves: [{ name: 'all' }] } as unknown as ResolvedPlan;
const succeeded: RolloutProgress = { ...initialProgress('p-1', plan, '2026-01-01T00:00:00.000Z'), status: 'succeeded', waves: [{ name: 'all', status: 'succeeded', planned: 3, done: 3, patched: 3, already: 0, failed: 0, unreachable: 0 }] };
const counts = (c: Partial<Extract<LaterRun, { kind: 'rollback' }>['counts']> = {}) => ({ hosts: 3, rolledBack: 3, nothingToDo: 0, stackGrew: 0, unrecoverable: 0, failed: 0, problems: [], ...c });

describe('foldLaterRuns', () => {
  it('a rollback decides the status: rolling-back while it runs, then its outcome', () => {
    const running = foldLaterRuns(succeeded, [{ kind: 'rollback', startedAt: '2026-01-02T00:00:00.000Z', requestedBy: ops, reason: 'undo', state: 'running', counts: counts({ rolledBack: 1 }) }]);
    expect(running).toMatchObject({ status: 'rolling-back', rollback: { status: 'running', rolledBack: 1, requestedBy: ops, reason: 'undo' } });
    const done = foldLaterRuns(succeeded, [{ kind: 'rollback', startedAt: '2026-01-02T00:00:00.000Z', requestedBy: ops, reason: 'undo', state: 'finished', counts: counts() }]);
    expect(done.status).toBe('rolled-back');
    expect(done.stopReason).toBe('rolled back after it ended, asked by ops: undo');
    expect(done.waves).toEqual(succeeded.waves);
  });

  it('the latest rollback wins, whatever order Temporal lists them in; a host not back makes it incomplete, named', () => {
    const problem = { hostId: 'host-0001', outcome: 'stack-grew' as const, reason: 'someone else patched on top', stackNow: [], formerStack: [] };
    const p = foldLaterRuns(succeeded, [
      { kind: 'rollback', startedAt: '2026-01-03T00:00:00.000Z', requestedBy: ops, reason: 'second', state: 'finished', counts: counts({ rolledBack: 2, stackGrew: 1, problems: [problem] }) },
      { kind: 'rollback', startedAt: '2026-01-02T00:00:00.000Z', requestedBy: ops, reason: 'first', state: 'finished', counts: counts() },
    ]);
    expect(p.status).toBe('rollback-incomplete');
    expect(p.rollback?.reason).toBe('second');
    expect(p.stopReason).toBe('rolled back after it ended, asked by ops: second; the rollback could not restore 1 of 3 host(s): host-0001 (stack-grew)');
  });

  it('a rollback whose workflow stopped on an error leaves the rollout rollback-incomplete, saying why', () => {
    const p = foldLaterRuns(succeeded, [{ kind: 'rollback', startedAt: '2026-01-02T00:00:00.000Z', requestedBy: ops, reason: 'undo', state: 'ended', endedAs: 'its workflow ended as terminated: by hand' }]);
    expect(p).toMatchObject({ status: 'rollback-incomplete', rollback: { status: 'failed', error: 'its workflow ended as terminated: by hand', hosts: 0 } });
    expect(p.stopReason).toContain('the rollback stopped before every host had an outcome: its workflow ended as terminated: by hand');
  });

  it('repairs are listed oldest first with their counts, and leave the status alone', () => {
    const p = foldLaterRuns(succeeded, [
      { kind: 'repair', name: 'repair-2', startedAt: '2026-01-03T00:00:00.000Z', requestedBy: ops, reason: 'again', state: 'running' },
      { kind: 'repair', name: 'repair-1', startedAt: '2026-01-02T00:00:00.000Z', requestedBy: ops, reason: 'rebooted', state: 'finished', result: { checked: 3, lost: 2, patched: 1, failed: 1, budgetReason: 'wave "repair-1" failed on 1 of 2 hosts' } },
    ]);
    expect(p.status).toBe('succeeded');
    expect(p.repairs).toEqual([
      { name: 'repair-1', status: 'finished', requestedBy: ops, reason: 'rebooted', startedAt: '2026-01-02T00:00:00.000Z', checked: 3, lost: 2, patched: 1, failed: 1, stopReason: 'wave "repair-1" failed on 1 of 2 hosts' },
      { name: 'repair-2', status: 'running', requestedBy: ops, reason: 'again', startedAt: '2026-01-03T00:00:00.000Z', checked: 0, lost: 0, patched: 0, failed: 0 },
    ]);
    expect(foldLaterRuns(succeeded, [])).toEqual(succeeded);
  });
});
