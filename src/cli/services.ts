/**
 * `fleetpatch services`: start the local Temporal dev server and embedded PostgreSQL (as every other
 * command would) and keep them running until Ctrl-C, printing their addresses. Other fleetpatch
 * processes started with the printed TEMPORAL_ADDRESS and DATABASE_URL then share them.
 * `--cluster` (or FLEETPATCH_TEMPORAL=cluster) starts the Temporal server on PostgreSQL instead of
 * the dev server (src/runtime/temporal-cluster.ts).
 */
import { parseCommandArgs } from './args.ts';
import { withServices } from '../app/context.ts';
import type { Command } from './io.ts';
import { redactUrl } from '../runtime/database.ts';
import { describeTemporalSecurity } from '../runtime/temporal-connection.ts';

export const servicesCommand: Command = async (args, io) => {
  const { values } = parseCommandArgs(args, { help: { type: 'boolean', short: 'h' }, cluster: { type: 'boolean' } }, 'services');
  if (values.help) {
    io.out('Usage: fleetpatch services [--cluster]');
    io.out('Starts the local Temporal dev server and embedded PostgreSQL in FLEETPATCH_DATA_DIR and keeps them running until Ctrl-C.');
    io.out('--cluster: the Temporal server on PostgreSQL (4 history shards) instead of the dev server, for several workers');
    io.out('           (the same as FLEETPATCH_TEMPORAL=cluster; built from the Go module proxy on first use, ~5 min).');
    return 0;
  }
  return withServices(
    { database: true, temporal: true },
    async ({ services, shutdown }) => {
      io.out(`TEMPORAL_ADDRESS=${services.temporalAddress}`);
      io.out(`TEMPORAL_NAMESPACE=${services.namespace}`);
      io.out(`# Temporal connection: ${describeTemporalSecurity(services.temporal.security)}`);
      io.out(`DATABASE_URL=${services.databaseUrl}`);
      if (services.temporalUiUrl) io.out(`# Temporal Web UI: ${services.temporalUiUrl}`);
      if (services.temporalCluster) {
        const c = services.temporalCluster;
        io.out(`# Temporal cluster: ${c.shards} history shards, persistence ${c.database} (and ${c.database}_visibility), log ${c.log}`);
      }
      io.out(`# database: ${redactUrl(services.databaseUrl)}; press Ctrl-C to stop both`);
      // Nothing else keeps the event loop alive (the servers are detached, the pool's idle
      // connections close after 10 s): without this timer the process exits (code 13) and leaves
      // its servers running with nobody to stop them.
      const keepAlive = setInterval(() => undefined, 60_000);
      await new Promise<void>((resolve) => shutdown.signal.addEventListener('abort', () => resolve(), { once: true }));
      clearInterval(keepAlive);
      return 0;
    },
    values.cluster ? { FLEETPATCH_TEMPORAL: 'cluster' } : {},
  );
};
