/**
 * `fleetpatch worker`: a Temporal worker for every fleetpatch workflow and activity, until Ctrl-C
 * or SIGTERM (it then finishes or hands back its in-flight tasks and exits). Run as many as you
 * like against the same task queue.
 */
import { boundedInteger, boundedText, parseCommandArgs } from './args.ts';
import { withServices } from './context.ts';
import type { Command } from './io.ts';
import { startFleetpatchWorker } from '../runtime/fleetpatch-worker.ts';

export const workerCommand: Command = async (args, io) => {
  const { values } = parseCommandArgs(
    args,
    {
      help: { type: 'boolean', short: 'h' },
      'max-activities': { type: 'string' },
      identity: { type: 'string' },
    },
    'worker',
  );
  const maxActivities = boundedInteger(values['max-activities'], '--max-activities', 1, 10_000, 'worker');
  boundedText(values.identity, '--identity', 200, 'worker');
  if (values.help) {
    io.out('Usage: fleetpatch worker [--max-activities N] [--identity NAME]');
    io.out('Polls the task queue (TEMPORAL_TASK_QUEUE) for rollout workflows and their activities until Ctrl-C.');
    return 0;
  }
  return withServices({ database: true, temporal: true }, async ({ config, logger, services, shutdown }) => {
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
    io.out(`worker polling task queue "${services.taskQueue}" on ${services.temporalAddress} (namespace ${services.namespace}); fleet file ${config.fleetFile}`);
    await worker.done;
    return 0;
  });
};
