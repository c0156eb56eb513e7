/**
 * A worker for one test file on the shared dev server: its own task queue (so files never steal
 * each other's tasks), the workflow bundle made once by the global setup, real activities wired to
 * the file's database and fleet.
 */
import { randomBytes } from 'node:crypto';
import { Client, Connection } from '@temporalio/client';
import { inject } from 'vitest';
import { createActivities } from '../../activities/index.ts';
import { createActivityDeps } from '../../src/app/activity-deps.ts';
import type { Pool } from '../../src/runtime/database.ts';
import { createLogger } from '../../src/runtime/logger.ts';
import { startWorker, type RunningWorker } from '../../src/runtime/worker.ts';

export interface TestTemporal {
  client: Client;
  taskQueue: string;
  worker: RunningWorker;
  close(): Promise<void>;
}

export async function startTestWorker(opts: { pool: Pool; fleetFile: string; actionDeadlineMs?: number; dataDir?: string; hostTimeoutMs?: number }): Promise<TestTemporal> {
  const address = inject('temporalAddress');
  const namespace = inject('temporalNamespace');
  const taskQueue = `test-${randomBytes(4).toString('hex')}`;
  const logger = createLogger((process.env.LOG_LEVEL as 'error') ?? 'error', { pretty: false, name: 'test' });
  const activities = createActivities(createActivityDeps({ pool: opts.pool, fleetFile: opts.fleetFile, logger, ...(opts.dataDir !== undefined ? { dataDir: opts.dataDir } : {}), ...(opts.hostTimeoutMs !== undefined ? { hostTimeoutMs: opts.hostTimeoutMs } : {}), ...(opts.actionDeadlineMs !== undefined ? { actionDeadlineMs: opts.actionDeadlineMs } : {}) }));
  const worker = await startWorker({ address, namespace, taskQueue, logger, activities, workflowBundlePath: inject('workflowBundlePath') });
  const connection = await Connection.connect({ address });
  const client = new Client({ connection, namespace });
  return {
    client,
    taskQueue,
    worker,
    close: async () => {
      await worker.shutdown();
      await connection.close();
    },
  };
}
