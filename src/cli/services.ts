/**
 * `fleetpatch services`: start the local Temporal dev server and embedded PostgreSQL (as every other
 * command would) and keep them running until Ctrl-C, printing their addresses. Other fleetpatch
 * processes started with the printed TEMPORAL_ADDRESS and DATABASE_URL then share them.
 */
import { parseCommandArgs } from './args.ts';
import { withServices } from './context.ts';
import type { Command } from './io.ts';
import { redactUrl } from '../runtime/database.ts';

export const servicesCommand: Command = async (args, io) => {
  const { values } = parseCommandArgs(args, { help: { type: 'boolean', short: 'h' } }, 'services');
  if (values.help) {
    io.out('Usage: fleetpatch services');
    io.out('Starts the local Temporal dev server and embedded PostgreSQL in FLEETPATCH_DATA_DIR and keeps them running until Ctrl-C.');
    return 0;
  }
  return withServices({ database: true, temporal: true }, async ({ services, shutdown }) => {
    io.out(`TEMPORAL_ADDRESS=${services.temporalAddress}`);
    io.out(`TEMPORAL_NAMESPACE=${services.namespace}`);
    io.out(`DATABASE_URL=${services.databaseUrl}`);
    if (services.temporalUiUrl) io.out(`# Temporal Web UI: ${services.temporalUiUrl}`);
    io.out(`# database: ${redactUrl(services.databaseUrl)}; press Ctrl-C to stop both`);
    await new Promise<void>((resolve) => shutdown.signal.addEventListener('abort', () => resolve(), { once: true }));
    return 0;
  });
};
