/**
 * Activity proxies, with timeouts and retry policies chosen per kind of work. Refusals (EINVAL,
 * EEXIST, ...) are raised non-retryable by the activities themselves; transient faults (EAGAIN,
 * EBUSY, network) are retried here with backoff, a bounded number of times, so an unreachable host
 * ends as a failure that counts against the budget instead of stalling the wave.
 */
import { proxyActivities, proxyLocalActivities } from '@temporalio/workflow';
import type { Activities } from '../activities/index.ts';

const hostRetry = { initialInterval: '500ms', backoffCoefficient: 2, maximumInterval: '5s', maximumAttempts: 4 } as const;

/**
 * Short host operations: read state, upload, dependency check, verify. They run as LOCAL
 * activities: in the worker that runs the workflow, their results recorded as markers, without a
 * server round trip to schedule and complete each one, which is what bounds throughput on a
 * single-shard server. A worker that dies mid-call simply runs them again (they are idempotent).
 */
export const hostOps = proxyLocalActivities<Activities>({
  // Each host request times out after 10 s.
  startToCloseTimeout: '15s',
  retry: hostRetry,
});

/** Asynchronous hypervisor actions: they poll until rc leaves -EAGAIN, heartbeating meanwhile. */
export const hostActions = proxyActivities<Activities>({
  startToCloseTimeout: '5m',
  heartbeatTimeout: '10s',
  retry: hostRetry,
});

/** Event store and rollout bookkeeping: PostgreSQL only, retried until it answers; local too. */
export const bookkeeping = proxyLocalActivities<Activities>({
  startToCloseTimeout: '1m',
  retry: { initialInterval: '1s', backoffCoefficient: 2, maximumInterval: '30s', maximumAttempts: 20 },
});

/** The preflight reads every selected host: long, heartbeating. */
export const preflightOps = proxyActivities<Activities>({
  startToCloseTimeout: '30m',
  heartbeatTimeout: '30s',
  retry: { initialInterval: '1s', backoffCoefficient: 2, maximumInterval: '30s', maximumAttempts: 5 },
});
