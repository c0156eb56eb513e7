/**
 * `fleetpatch worker`: a Temporal worker for every fleetpatch workflow and activity, until Ctrl-C
 * or SIGTERM (it then finishes or hands back its in-flight tasks and exits). Run as many as you
 * like against the same task queue.
 */
import { boundedInteger, boundedText, parseCommandArgs } from './args.ts';
import { withServices } from '../app/context.ts';
import type { Command } from './io.ts';
import { startFleetpatchWorker } from '../app/worker.ts';
import { serveMetrics, workerMetrics } from '../runtime/worker-metrics.ts';
import { describeTemporalSecurity } from '../runtime/temporal-connection.ts';

export const workerCommand: Command = async (args, io) => {
  const { values } = parseCommandArgs(
    args,
    {
      help: { type: 'boolean', short: 'h' },
      'max-activities': { type: 'string' },
      identity: { type: 'string' },
      'metrics-port': { type: 'string' },
      'metrics-listen': { type: 'string' },
    },
    'worker',
  );
  const maxActivities = boundedInteger(values['max-activities'], '--max-activities', 1, 10_000, 'worker');
  boundedText(values.identity, '--identity', 200, 'worker');
  const metricsPort = boundedInteger(values['metrics-port'], '--metrics-port', 0, 65535, 'worker');
  const metricsListen = boundedText(values['metrics-listen'], '--metrics-listen', 255, 'worker') ?? '127.0.0.1';
  if (values.help) {
    io.out('Usage: fleetpatch worker [--max-activities N] [--identity NAME] [--metrics-port N [--metrics-listen ADDRESS]]');
    io.out('Polls the task queue (TEMPORAL_TASK_QUEUE) for rollout workflows and their activities until Ctrl-C.');
    io.out('--metrics-port: serve this worker\'s Prometheus metrics (hypervisor action and event-store append latencies, webhook deliveries) at /metrics.');
    return 0;
  }
  // A worker outlives outages: a server that does not answer yet is waited for, said in one line.
  const waitWhileDown = (what: string, since: Date, reason: string) => io.err(`waiting: ${what} unreachable since ${since.toISOString()} (${reason}); retrying`);
  return withServices({ database: true, temporal: true, waitWhileDown }, async ({ config, logger, services, shutdown }) => {
    if (metricsPort !== undefined) {
      const metrics = await serveMetrics(workerMetrics(), metricsPort, metricsListen);
      shutdown.add('worker metrics', metrics.close);
      io.out(`worker metrics at ${metrics.url}`);
    }
    const worker = await startFleetpatchWorker({
      services,
      fleetFile: config.fleetFile,
      dataDir: config.dataDir,
      logger,
      shutdown,
      tuning: {
        ...(maxActivities !== undefined ? { maxConcurrentActivityTaskExecutions: maxActivities } : {}),
        ...(values.identity ? { identity: values.identity } : {}),
      },
    });
    io.out(`worker polling task queue "${services.taskQueue}" on ${services.temporalAddress} (namespace ${services.namespace}; ${describeTemporalSecurity(services.temporal.security)}); fleet file ${config.fleetFile}`);
    await worker.done;
    return 0;
  });
};
