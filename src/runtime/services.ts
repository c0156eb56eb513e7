/**
 * What a fleetpatch process needs around it: a Temporal server and a PostgreSQL database, either
 * the ones the environment names (TEMPORAL_ADDRESS, DATABASE_URL) or local ones it starts itself in
 * the data dir, migrated and ready. Local services are stopped through `shutdown`.
 */
import path from 'node:path';
import type { Config } from './config.ts';
import type { Logger } from './logger.ts';
import type { Shutdown } from './shutdown.ts';
import { startEmbeddedPostgres } from './embedded-postgres.ts';
import { resolveTemporalCli, startTemporalDevServer } from './temporal-server.ts';
import { PLAIN, describeTemporalSecurity, probeTemporal, type TemporalEndpoint } from './temporal-connection.ts';
import { CLUSTER_HISTORY_SHARDS, clusterDatabaseFromUrl, startTemporalCluster } from './temporal-cluster.ts';
import { openPool, resolvePostgresTls, type Pool } from './database.ts';
import { FleetpatchError } from '../errors.ts';
import { mkdir } from 'node:fs/promises';

export interface Services {
  databaseUrl: string;
  pool: Pool;
  temporalAddress: string;
  /** Address, namespace and security (TLS, API key) to connect to Temporal with. */
  temporal: TemporalEndpoint;
  namespace: string;
  taskQueue: string;
  /** The Web UI of the local dev server, when fleetpatch started one. */
  temporalUiUrl?: string;
  /** Set when the Temporal server is the local cluster (cluster mode). */
  temporalCluster?: { shards: number; database: string; log: string };
}

export interface ServiceNeeds {
  database?: boolean;
  temporal?: boolean;
  /**
   * Wait for a named server that does not answer (a long-running process like the worker: an
   * outage is waited out, not a reason to exit). Told once per outage, with what and since when.
   */
  waitWhileDown?: (what: 'PostgreSQL' | 'Temporal', since: Date, reason: string) => void;
  /** Runs once the database answers, before anyone uses it (the app layer migrates it here). */
  prepareDatabase?: (pool: Pool, url: string) => Promise<void>;
}

/** Retries `fn` while it fails with `code` (backoff up to 5 s), telling `onDown` once. */
async function untilUp<T>(fn: () => Promise<T>, code: string, what: 'PostgreSQL' | 'Temporal', onDown: ServiceNeeds['waitWhileDown']): Promise<T> {
  let since: Date | undefined;
  for (let attempt = 0; ; attempt++) {
    try {
      return await fn();
    } catch (e) {
      if (!onDown || !(e instanceof FleetpatchError && e.code === code)) throw e;
      if (!since) onDown(what, (since = new Date()), e.message);
      await new Promise((r) => setTimeout(r, Math.min(5_000, 250 * 2 ** Math.min(attempt, 5))));
    }
  }
}

export async function startServices(config: Config, logger: Logger, shutdown: Shutdown, needs: ServiceNeeds = { database: true, temporal: true }): Promise<Services> {
  await mkdir(config.dataDir, { recursive: true });
  // The PostgreSQL server (DATABASE_URL's, or the embedded one, started once): fleetpatch's
  // database lives on it, and so do the Temporal cluster's in cluster mode.
  let server: Promise<string> | undefined;
  const postgresServer = () => (server ??= postgresServerUrl(config, logger, shutdown));
  const [database, temporal] = await Promise.all([
    needs.database === false ? undefined : startDatabase(postgresServer, shutdown, needs.waitWhileDown, needs.prepareDatabase),
    needs.temporal === false ? undefined : untilUp(() => startTemporal(config, logger, shutdown, postgresServer), 'TEMPORAL_UNAVAILABLE', 'Temporal', needs.waitWhileDown),
  ]);
  // A command that did not ask for a service gets a clear error if it reaches for it anyway,
  // instead of an empty address or an undefined pool.
  const missing = (what: string): never => {
    throw new FleetpatchError(what === 'Temporal' ? 'TEMPORAL_UNAVAILABLE' : 'DATABASE_UNAVAILABLE', `this command did not start ${what}`);
  };
  return {
    get databaseUrl() {
      return database?.url ?? missing('PostgreSQL');
    },
    get pool() {
      return database?.pool ?? missing('PostgreSQL');
    },
    get temporalAddress() {
      return temporal?.address ?? missing('Temporal');
    },
    get temporal() {
      // The security object is passed on as it is: its secrets are non-enumerable (temporal-connection.ts).
      return temporal ? { address: temporal.address, namespace: config.temporal.namespace, security: temporal.security } : missing('Temporal');
    },
    namespace: config.temporal.namespace,
    taskQueue: config.temporal.taskQueue,
    ...(temporal?.uiUrl ? { temporalUiUrl: temporal.uiUrl } : {}),
    ...(temporal?.cluster ? { temporalCluster: temporal.cluster } : {}),
  };
}

async function postgresServerUrl(config: Config, logger: Logger, shutdown: Shutdown): Promise<string> {
  if (config.database.url) return config.database.url;
  const embedded = await startEmbeddedPostgres({ dataDir: config.dataDir, port: config.database.embeddedPort, logger });
  if (embedded.startedHere) shutdown.add('embedded PostgreSQL', embedded.stop);
  return embedded.url;
}

async function startDatabase(
  postgresServer: () => Promise<string>,
  shutdown: Shutdown,
  waitWhileDown: ServiceNeeds['waitWhileDown'],
  prepare: ServiceNeeds['prepareDatabase'],
): Promise<{ url: string; pool: Pool }> {
  const url = await postgresServer();
  // TLS per the URL's sslmode (libpq semantics; allow/prefer settled on the first connect).
  const pool = await untilUp(() => openPool(url), 'DATABASE_UNAVAILABLE', 'PostgreSQL', waitWhileDown);
  shutdown.add('database pool', () => pool.end());
  await prepare?.(pool, url);
  return { url, pool };
}

async function startTemporal(
  config: Config,
  logger: Logger,
  shutdown: Shutdown,
  postgresServer: () => Promise<string>,
): Promise<{ address: string; security: TemporalEndpoint['security']; uiUrl?: string; cluster?: Services['temporalCluster'] }> {
  const { address, namespace, security } = config.temporal;
  if (address) {
    // A TLS refusal or unusable certificate is thrown by the probe: waiting does not cure it.
    const answer = await probeTemporal({ address, namespace, security });
    if (answer !== true) {
      throw new FleetpatchError('TEMPORAL_UNAVAILABLE', `TEMPORAL_ADDRESS=${address} (${describeTemporalSecurity(security)}): no Temporal server answers there with namespace "${namespace}": ${answer.message}`);
    }
    return { address, security };
  }
  if (config.temporal.mode === 'cluster') {
    // The Temporal server itself on PostgreSQL (the server fleetpatch's own database is on).
    const serverUrl = await postgresServer();
    const { mode, modeOrigin } = resolvePostgresTls(serverUrl);
    if (mode === 'require' || mode === 'verify-ca' || mode === 'verify-full') {
      // Its schema tool and SQL plugin are configured by config/temporal/cluster.yaml, without TLS.
      throw new FleetpatchError('CONFIG_INVALID', `FLEETPATCH_TEMPORAL=cluster: the local Temporal cluster connects to PostgreSQL without TLS, but sslmode=${mode} (${modeOrigin}) requires it; run the Temporal server yourself and set TEMPORAL_ADDRESS, or use the dev server (FLEETPATCH_TEMPORAL=dev)`);
    }
    const database = clusterDatabaseFromUrl(serverUrl, config.temporal.cluster.database);
    const stateDir = path.join(config.dataDir, 'temporal-cluster');
    const cluster = await startTemporalCluster({ namespace, logger, stateDir, port: config.temporal.cluster.port, database });
    if (cluster.startedHere) shutdown.add('Temporal cluster', cluster.stop);
    return { address: cluster.address, security: PLAIN, cluster: { shards: CLUSTER_HISTORY_SHARDS, database: `${database.host}:${database.port}/${database.name}`, log: path.join(stateDir, 'server.log') } };
  }
  const cli = await resolveTemporalCli(logger, config.temporal.cli);
  const server = await startTemporalDevServer({
    cli,
    namespace,
    logger,
    stateDir: path.join(config.dataDir, 'temporal'),
    port: config.temporal.port,
    uiPort: config.temporal.uiPort,
  });
  if (server.startedHere) shutdown.add('Temporal dev server', server.stop);
  return { address: server.address, security: PLAIN, ...(server.uiUrl ? { uiUrl: server.uiUrl } : {}) };
}
