import { describe, expect, it } from 'vitest';
import { allowedFailures, budgetExceeded, describeBudget, parseBudget } from '../../src/rollout/budget.ts';

describe('failure budgets', () => {
  it('parses counts and percentages, and refuses anything else', () => {
    expect(parseBudget(3)).toEqual({ kind: 'count', count: 3 });
    expect(parseBudget('3')).toEqual({ kind: 'count', count: 3 });
    expect(parseBudget('5%')).toEqual({ kind: 'percent', percent: 5 });
    expect(parseBudget(' 12.5 % ')).toEqual({ kind: 'percent', percent: 12.5 });
    expect(parseBudget(-1)).toBeUndefined();
    expect(parseBudget(1.5)).toBeUndefined();
    expect(parseBudget('101%')).toBeUndefined();
    expect(parseBudget('lots')).toBeUndefined();
  });

  it('a count allows exactly that many failures; one more exceeds it', () => {
    const b = parseBudget(2)!;
    expect(budgetExceeded(b, 50, 2)).toBe(false);
    expect(budgetExceeded(b, 50, 3)).toBe(true);
  });

  it('a percentage allows floor(N * p / 100) failures', () => {
    const b = parseBudget('5%')!;
    expect(allowedFailures(b, 10)).toBe(0); // 0.5 rounds down: a 10-host wave tolerates none
    expect(allowedFailures(b, 20)).toBe(1);
    expect(allowedFailures(b, 39)).toBe(1);
    expect(allowedFailures(b, 40)).toBe(2);
    expect(budgetExceeded(b, 20, 1)).toBe(false);
    expect(budgetExceeded(b, 20, 2)).toBe(true);
    expect(budgetExceeded(b, 10, 1)).toBe(true);
  });

  it('has no floating-point surprises at exact boundaries', () => {
    expect(allowedFailures(parseBudget('7%')!, 100)).toBe(7);
    expect(allowedFailures(parseBudget('29%')!, 100)).toBe(29);
    expect(allowedFailures(parseBudget('100%')!, 3)).toBe(3);
  });

  it('a zero budget tolerates no failure', () => {
    expect(budgetExceeded(parseBudget(0)!, 100, 0)).toBe(false);
    expect(budgetExceeded(parseBudget(0)!, 100, 1)).toBe(true);
    expect(budgetExceeded(parseBudget('0%')!, 100, 1)).toBe(true);
  });

  it('describes itself in words', () => {
    expect(describeBudget(parseBudget('5%')!, 40)).toBe('5% of 40 = 2 failures allowed');
    expect(describeBudget(parseBudget(1)!, 40)).toBe('1 = 1 failure allowed');
  });
});
