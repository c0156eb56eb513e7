/**
 * Failure budgets, with one documented boundary rule (docs/rollouts.md):
 *
 *   allowed = a count k            -> k failures are allowed
 *           = a percentage p% of N  -> floor(N * p / 100) failures are allowed
 *   the budget is EXCEEDED when failures > allowed (it must be exceeded, as in Ansible's
 *   max_fail_percentage; reaching it is still within budget).
 *
 * So "5%" of a 10-host wave allows 0 failures and "5%" of a 20-host wave allows 1. A budget of 0
 * (the default) tolerates no failure at all. Unreachable hosts count as failures. Pure.
 */
export type Budget = { kind: 'count'; count: number } | { kind: 'percent'; percent: number };

export const NO_FAILURES: Budget = { kind: 'count', count: 0 };

export function parseBudget(value: number | string): Budget | undefined {
  if (typeof value === 'number') return Number.isInteger(value) && value >= 0 ? { kind: 'count', count: value } : undefined;
  const m = /^\s*(\d+(?:\.\d+)?)\s*%\s*$/.exec(value);
  if (m) {
    const percent = Number(m[1]);
    return percent <= 100 ? { kind: 'percent', percent } : undefined;
  }
  return /^\s*\d+\s*$/.test(value) ? { kind: 'count', count: Number(value) } : undefined;
}

/** How many failures a group of `size` hosts may have and still be within budget. */
export function allowedFailures(budget: Budget, size: number): number {
  if (budget.kind === 'count') return budget.count;
  // Integer arithmetic on hundredths avoids 0.07 * 100 = 7.000000000000001 style surprises.
  return Math.floor((size * Math.round(budget.percent * 100)) / 10_000);
}

export function budgetExceeded(budget: Budget, size: number, failures: number): boolean {
  return failures > allowedFailures(budget, size);
}

export function describeBudget(budget: Budget, size: number): string {
  const allowed = allowedFailures(budget, size);
  const what = budget.kind === 'count' ? `${budget.count}` : `${budget.percent}% of ${size}`;
  return `${what} = ${allowed} failure${allowed === 1 ? '' : 's'} allowed`;
}
