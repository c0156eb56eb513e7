/**
 * Activity proxies, with timeouts and retry policies chosen per kind of work.
 *
 * - Batches (patchBatch, rollbackBatch) run for as long as their wave step has hosts, heartbeating
 *   every second; a batch whose worker died is retried (on any worker) after the heartbeat
 *   timeout, and its retry takes back the hosts the dead attempt held. Host faults never fail a
 *   batch (a host that stays away fails alone, with the reason); PostgreSQL outages are waited out
 *   inside it.
 * - Bookkeeping (work-list counts, holds, the rollout's own events) is short and local: it runs in
 *   the worker that runs the workflow, retried until PostgreSQL answers.
 */
import { proxyActivities, proxyLocalActivities } from '@temporalio/workflow';
import type { Activities } from '../activities/index.ts';

export const batchOps = proxyActivities<Activities>({
  startToCloseTimeout: '24h',
  heartbeatTimeout: '20s',
  retry: { initialInterval: '1s', backoffCoefficient: 2, maximumInterval: '30s', maximumAttempts: 50 },
});

/** Event store and rollout bookkeeping: PostgreSQL only, retried until it answers; local. */
export const bookkeeping = proxyLocalActivities<Activities>({
  startToCloseTimeout: '1m',
  retry: { initialInterval: '1s', backoffCoefficient: 2, maximumInterval: '30s', maximumAttempts: 20 },
});

/** The live view: one try; a failure (PostgreSQL away) is shown as waiting, not retried here. */
export const liveView = proxyLocalActivities<Activities>({
  startToCloseTimeout: '10s',
  retry: { maximumAttempts: 1 },
});

/** The preflight reads every selected host: long, heartbeating. */
export const preflightOps = proxyActivities<Activities>({
  startToCloseTimeout: '30m',
  heartbeatTimeout: '30s',
  retry: { initialInterval: '1s', backoffCoefficient: 2, maximumInterval: '30s', maximumAttempts: 5 },
});
