/**
 * What the HTTP API needs, built in one place from the configuration and the services (so it can
 * move into a composition root as it is): the event store and its readers, the token store, the
 * Temporal client that starts and steers rollouts, the fleet file for live host reads, and the
 * trusted keys payloads must be signed with.
 */
import type { Client } from '@temporalio/client';
import type { Registry } from 'prom-client';
import { TokenStore } from '../access/tokens.ts';
import { connectClient } from '../control/rollouts.ts';
import { EventStore } from '../events/store.ts';
import { PayloadStore } from '../events/payload-store.ts';
import type { FleetClient } from '../agent/client.ts';
import { inventoryReader } from './inventory.ts';
import type { PublicKey } from '../payload/signing.ts';
import type { Config } from '../runtime/config.ts';
import type { Pool } from '../runtime/database.ts';
import type { Logger } from '../runtime/logger.ts';
import type { Services } from '../runtime/services.ts';
import type { Shutdown } from '../runtime/shutdown.ts';
import { loadTrustedKeys } from '../control/trusted-keys.ts';
import { FleetRegistry } from '../fleet/registry.ts';
import { loadCa, type FleetCa } from '../pki/ca.ts';
import { loadConfig } from '../runtime/config.ts';

export interface ApiContext {
  logger: Logger;
  pool: Pool;
  events: EventStore;
  payloads: PayloadStore;
  tokens: TokenStore;
  temporal: { client: Client; taskQueue: string; namespace: string; uiUrl?: string };
  /** The fleet (hosts, labels, how to reach each), re-read when the file changes; null when there is none. */
  fleet: () => Promise<FleetClient | null>;
  trustedKeys: () => Promise<readonly PublicKey[]>;
  /** The enrolled hosts' facts: join tokens, enrolments, labels, retirements. */
  fleetRegistry: FleetRegistry;
  /** The fleet CA of the data dir (CA_MISSING until `fleetpatch ca init`). */
  fleetCa: () => Promise<FleetCa>;
  /** A worker's registry when one runs in this process (the demo): /metrics serves it too. */
  workerMetrics?: Registry;
}

/** The fleet (enrolled hosts and the fleet file, src/app/inventory.ts), re-read when it changes; null when there is none. */
export function fleetReader(fleetFile: string, logger?: Logger, pool?: Pool, dataDir?: string): () => Promise<FleetClient | null> {
  const read = inventoryReader({ fleetFile, dataDir: dataDir ?? loadConfig().dataDir, ...(pool ? { pool } : {}), ...(logger ? { logger } : {}) });
  return () => read().catch(() => null);
}

/** The fleet CA, read once it is there (a `ca init` after the API started is seen at the next enrolment). */
function caLoader(dataDir: string | undefined): () => Promise<FleetCa> {
  let ca: Promise<FleetCa> | undefined;
  return () => {
    ca ??= loadCa(dataDir ?? loadConfig().dataDir).catch((e: unknown) => {
      ca = undefined;
      throw e;
    });
    return ca;
  };
}

/** The API's context from running services; the Temporal client is closed through `shutdown`. */
export async function createApiContext(opts: { config: Config; logger: Logger; services: Services; shutdown: Shutdown; workerMetrics?: Registry; fleetFile?: string; trustedKeys?: readonly PublicKey[] }): Promise<ApiContext> {
  const { config, services, logger } = opts;
  const { client, close } = await connectClient(services.temporal);
  opts.shutdown.add('API temporal client', close);
  return apiContextFrom({
    pool: services.pool,
    logger,
    client,
    taskQueue: services.taskQueue,
    namespace: services.namespace,
    fleetFile: opts.fleetFile ?? config.fleetFile,
    dataDir: config.dataDir,
    trustedKeys: opts.trustedKeys ? async () => opts.trustedKeys! : () => loadTrustedKeys(config),
    ...(services.temporalUiUrl ? { temporalUiUrl: services.temporalUiUrl } : {}),
    ...(opts.workerMetrics ? { workerMetrics: opts.workerMetrics } : {}),
  });
}

/** The context from its parts (tests build it this way). */
export function apiContextFrom(parts: {
  pool: Pool;
  logger: Logger;
  client: Client;
  taskQueue: string;
  namespace: string;
  fleetFile: string;
  trustedKeys: () => Promise<readonly PublicKey[]>;
  temporalUiUrl?: string;
  workerMetrics?: Registry;
  /** Where the fleet CA is (<data dir>/ca); default FLEETPATCH_DATA_DIR. */
  dataDir?: string;
}): ApiContext {
  const events = new EventStore(parts.pool);
  return {
    logger: parts.logger,
    pool: parts.pool,
    events,
    payloads: new PayloadStore(events),
    tokens: new TokenStore(events),
    temporal: { client: parts.client, taskQueue: parts.taskQueue, namespace: parts.namespace, ...(parts.temporalUiUrl ? { uiUrl: parts.temporalUiUrl } : {}) },
    fleet: fleetReader(parts.fleetFile, parts.logger, parts.pool, parts.dataDir),
    trustedKeys: parts.trustedKeys,
    fleetRegistry: new FleetRegistry(events),
    fleetCa: caLoader(parts.dataDir),
    ...(parts.workerMetrics ? { workerMetrics: parts.workerMetrics } : {}),
  };
}
