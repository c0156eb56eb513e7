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
    namespace: services.namespace,
    taskQueue: services.taskQueue,
    logger,
    activities: createActivities(createActivityDeps({ pool: services.pool, fleetFile: opts.fleetFile, logger, ...(opts.trustedKeys ? { trustedKeys: opts.trustedKeys } : {}) })),
    ...(opts.tuning ? { tuning: opts.tuning } : {}),
  });
  opts.shutdown.add('worker', worker.shutdown);
  return worker;
}
