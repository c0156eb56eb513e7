/**
 * The composition root of a worker: fleetpatch's activities wired to the database and the fleet
 * file, plus the workflow code, polling the configured task queue. `fleetpatch worker`, the demo
 * and `rollout start --with-worker` all start their worker through here.
 */
import path from 'node:path';
import type { WorkerOptions } from '@temporalio/worker';
import { workflowBundle } from '../runtime/workflow-bundle.ts';
import { createActivities } from '../../activities/index.ts';
import { createActivityDeps } from './activity-deps.ts';
import type { Logger } from '../runtime/logger.ts';
import type { PublicKey } from '../payload/signing.ts';
import type { Services } from '../runtime/services.ts';
import type { Shutdown } from '../runtime/shutdown.ts';
import { startWorker, type RunningWorker } from '../runtime/worker.ts';
import { sweepEndedRollouts } from '../control/ended-rollouts.ts';
import { connectClient } from '../control/rollouts.ts';
import { EventStore } from '../events/store.ts';

/** How often a worker looks for rollouts whose workflow ended without recording it (terminated in Temporal). */
const ENDED_ROLLOUT_SWEEP_MS = 60_000;

export async function startFleetpatchWorker(opts: {
  services: Services;
  fleetFile: string;
  /** Where the workflow bundle is cached. */
  dataDir: string;
  logger: Logger;
  shutdown: Shutdown;
  tuning?: Pick<WorkerOptions, 'maxConcurrentActivityTaskExecutions' | 'identity'>;
  /** Keys payload signatures must verify against; default FLEETPATCH_TRUSTED_KEYS. */
  trustedKeys?: readonly PublicKey[];
}): Promise<RunningWorker> {
  const { services, logger } = opts;
  const worker = await startWorker({
    workflowBundlePath: await workflowBundle(path.join(opts.dataDir, 'workflow-bundles'), logger),
    address: services.temporalAddress,
    security: services.temporal.security,
    namespace: services.namespace,
    taskQueue: services.taskQueue,
    logger,
    activities: createActivities(createActivityDeps({ pool: services.pool, fleetFile: opts.fleetFile, dataDir: opts.dataDir, logger, ...(opts.trustedKeys ? { trustedKeys: opts.trustedKeys } : {}) })),
    ...(opts.tuning ? { tuning: opts.tuning } : {}),
  });
  opts.shutdown.add('worker', worker.shutdown);
  // Beside the worker, not in a workflow: a terminated workflow runs no code of its own again.
  const { client, close } = await connectClient(services.temporal);
  const stopSweep = sweepEndedRollouts(client, new EventStore(services.pool), {
    everyMs: ENDED_ROLLOUT_SWEEP_MS,
    onRecorded: (end) => logger.warn({ rolloutId: end.rolloutId, status: end.status }, `rollout ${end.rolloutId} ended outside fleetpatch: recorded ${end.status}: ${end.reason}`),
    onError: (e) => logger.debug({ err: e }, 'the sweep for rollouts ended outside fleetpatch failed; next time'),
  });
  opts.shutdown.add('ended-rollout sweep', async () => {
    await stopSweep();
    await close();
  });
  return worker;
}
