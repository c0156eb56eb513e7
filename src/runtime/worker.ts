/**
 * A fleetpatch worker: workflow code from workflows/ (bundled at start, or a prebuilt bundle) and
 * the activities built from their dependencies. Used by `fleetpatch worker`, the demo and tests.
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { type NativeConnection, Worker, type WorkerOptions } from '@temporalio/worker';
import type { Logger } from './logger.ts';
import { installTemporalRuntime } from './temporal-runtime.ts';
import { PLAIN, connectTemporalWorker, type TemporalSecurity } from './temporal-connection.ts';

/** The workflow code's entry point: bundled by workflow-bundle.ts, or by the worker itself when it is given no bundle. */
export const WORKFLOWS_PATH = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'workflows', 'index.ts');

export interface WorkerSetup {
  address: string;
  /** TLS and API key towards `address` (Services.temporal.security); plain gRPC when absent. */
  security?: TemporalSecurity;
  namespace: string;
  taskQueue: string;
  logger: Logger;
  activities: object;
  /** A bundle made once (tests, workflow-bundle.ts); otherwise workflows/ is bundled in-process now. */
  workflowBundlePath?: string;
  tuning?: Pick<WorkerOptions, 'maxConcurrentActivityTaskExecutions' | 'maxConcurrentWorkflowTaskExecutions' | 'maxCachedWorkflows' | 'identity'>;
}

export interface RunningWorker {
  worker: Worker;
  connection: NativeConnection;
  /** Resolves when the worker has stopped (after `shutdown()` or a fatal error). */
  done: Promise<void>;
  shutdown(): Promise<void>;
}

export async function createWorker(setup: WorkerSetup): Promise<{ worker: Worker; connection: NativeConnection }> {
  installTemporalRuntime(setup.logger);
  const connection = await connectTemporalWorker({ address: setup.address, security: setup.security ?? PLAIN });
  const worker = await Worker.create({
    connection,
    namespace: setup.namespace,
    taskQueue: setup.taskQueue,
    activities: setup.activities,
    ...(setup.workflowBundlePath ? { workflowBundle: { codePath: setup.workflowBundlePath } } : { workflowsPath: WORKFLOWS_PATH, bundlerOptions: { ignoreModules: [] } }),
    // Workers must never hang a shutdown: in-flight activities get this long, then are cancelled.
    shutdownGraceTime: '5s',
    shutdownForceTime: '15s',
    ...setup.tuning,
  });
  return { worker, connection };
}

/** Creates a worker and starts polling; `shutdown()` drains it and closes the connection. */
export async function startWorker(setup: WorkerSetup): Promise<RunningWorker> {
  const { worker, connection } = await createWorker(setup);
  const done = worker.run().finally(() => connection.close());
  return {
    worker,
    connection,
    done,
    shutdown: async () => {
      if (worker.getState() === 'RUNNING') worker.shutdown();
      await done.catch((e: Error) => setup.logger.warn({ err: e.message }, 'worker stopped with an error'));
    },
  };
}
