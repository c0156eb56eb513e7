import { describe, expect, it } from 'vitest';
import { acceptFailures, applyPreflight, budgetVerdict, initialProgress, recordHostResult } from '../../src/rollout/progress.ts';
import type { ResolvedPlan } from '../../src/rollout/types.ts';

const plan: ResolvedPlan = {
  name: 'p',
  mode: 'apply',
  payloads: [],
  hosts: {},
  waves: [{ name: 'a', hosts: '50%' }, { name: 'b', hosts: '100%' }],
  concurrency: 5,
  budget: { perWave: { kind: 'percent', percent: 10 }, total: { kind: 'count', count: 3 } },
  bakeMs: 0,
  approvalAfter: [],
  onFailure: 'pause',
};

function progress() {
  return applyPreflight(initialProgress('r', plan, '2026-01-01T00:00:00Z'), {
    selected: 40, targets: 40, alreadyPatched: 0, incompatible: 0, unreachable: 0, unknownHostIds: [], incompatibleSamples: [],
    waves: [{ name: 'a', concurrency: 5, steps: [{ group: null, size: 20 }] }, { name: 'b', concurrency: 5, steps: [{ group: null, size: 20 }] }],
  });
}
const fail = (hostId: string) => ({ hostId, outcome: 'failed' as const, applied: [], failure: { stage: 'apply' as const, code: 'EINVAL' as const, reason: 'x', unreachable: false } });
const ok = (hostId: string) => ({ hostId, outcome: 'patched' as const, applied: [] });

describe('rollout progress and budget verdicts', () => {
  it('stops a wave at the first failure over its budget, naming it', () => {
    const p = progress();
    recordHostResult(p, 0, fail('h1'));
    expect(budgetVerdict(p, plan, 0).exceeded).toBe(false); // 10% of 20 allows 2
    recordHostResult(p, 0, fail('h2'));
    expect(budgetVerdict(p, plan, 0).exceeded).toBe(false);
    recordHostResult(p, 0, fail('h3'));
    const v = budgetVerdict(p, plan, 0);
    expect(v).toEqual({ exceeded: true, reason: 'wave "a" failed on 3 of 20 hosts, over its budget (10% of 20 = 2 failures allowed)' });
    expect(p.failures.map((f) => f.hostId)).toEqual(['h1', 'h2', 'h3']);
  });

  it('measures the total budget across waves', () => {
    const p = progress();
    for (const h of ['h1', 'h2']) recordHostResult(p, 0, fail(h));
    for (const h of ['h3', 'h4']) recordHostResult(p, 1, fail(h));
    expect(budgetVerdict(p, plan, 1)).toEqual({ exceeded: true, reason: 'the rollout failed on 4 hosts in all, over its total budget (3 = 3 failures allowed)' });
  });

  it('after a person resumes past the budget, only a further failure exceeds it again', () => {
    const p = progress();
    for (const h of ['h1', 'h2', 'h3']) recordHostResult(p, 0, fail(h));
    expect(budgetVerdict(p, plan, 0).exceeded).toBe(true);
    acceptFailures(p, 0);
    recordHostResult(p, 0, ok('h4'));
    expect(budgetVerdict(p, plan, 0).exceeded).toBe(false);
    recordHostResult(p, 0, fail('h5'));
    expect(budgetVerdict(p, plan, 0).exceeded).toBe(true);
  });
});
