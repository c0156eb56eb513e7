/**
 * `fleetpatch api`: the HTTP API, the live dashboard and /metrics, until Ctrl-C or SIGTERM.
 * Rollouts it starts run on the workers of the task queue (TEMPORAL_TASK_QUEUE); `--with-worker`
 * runs one in this process too.
 */
import { boundedInteger, boundedText, parseCommandArgs } from './args.ts';
import { withServices } from '../app/context.ts';
import type { Command } from './io.ts';
import { createApiContext } from '../app/api-context.ts';
import { startApi } from '../api/server.ts';
import { startFleetpatchWorker } from '../app/worker.ts';
import { workerMetrics } from '../runtime/worker-metrics.ts';

export const DEFAULT_API_PORT = 8300;

export const apiCommand: Command = async (args, io) => {
  const { values } = parseCommandArgs(
    args,
    {
      help: { type: 'boolean', short: 'h' },
      port: { type: 'string' },
      listen: { type: 'string' },
      'trust-proxy': { type: 'string' },
      'with-worker': { type: 'boolean' },
    },
    'api',
  );
  if (values.help) {
    io.out('Usage: fleetpatch api [--listen ADDRESS] [--port N] [--trust-proxy true|ADDRESSES] [--with-worker]');
    io.out(`Serves the HTTP API (docs/api.md), the dashboard at / and Prometheus metrics at /metrics on 127.0.0.1:${DEFAULT_API_PORT} by default.`);
    io.out('Requests need a bearer token: fleetpatch tokens create --name NAME --role viewer|operator|admin.');
    io.out('--trust-proxy: behind a reverse proxy, trust its X-Forwarded-* headers (true, or its addresses, comma-separated).');
    return 0;
  }
  const port = boundedInteger(values.port, '--port', 0, 65535, 'api') ?? DEFAULT_API_PORT;
  const listen = boundedText(values.listen, '--listen', 255, 'api') ?? '127.0.0.1';
  const trustProxy = values['trust-proxy'] === undefined ? false : values['trust-proxy'] === 'true' ? true : boundedText(values['trust-proxy'], '--trust-proxy', 1000, 'api')!;
  return withServices({ database: true, temporal: true }, async ({ config, logger, services, shutdown }) => {
    const registry = values['with-worker'] ? workerMetrics() : undefined;
    if (values['with-worker']) await startFleetpatchWorker({ services, fleetFile: config.fleetFile, dataDir: config.dataDir, logger, shutdown });
    const ctx = await createApiContext({ config, logger, services, shutdown, ...(registry ? { workerMetrics: registry } : {}) });
    const api = await startApi(ctx, { host: listen, port }, { trustProxy });
    shutdown.add('HTTP API', api.close);
    io.out(`fleetpatch API and dashboard at ${api.url}/ (OpenAPI ${api.url}/openapi.json, metrics ${api.url}/metrics)`);
    if ((await ctx.tokens.list()).every((t) => t.revokedAt !== null)) io.err('note: no API token exists yet; make one with `fleetpatch tokens create --name NAME --role admin`');
    await new Promise<void>((resolve) => shutdown.signal.addEventListener('abort', () => resolve(), { once: true }));
    return 0;
  });
};
