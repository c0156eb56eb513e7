/**
 * Builds what activities need from a database pool and the fleet: the hosts enrolled in the event
 * store and the emulator's fleet file (src/app/inventory.ts), read lazily and again when either
 * changes (a restarted `fleetpatch emulate` writes new tokens; a host enrols or retires), so a
 * long-running worker follows the fleet it is pointed at.
 */
import type { ActivityDeps } from '../../activities/deps.ts';
import { EventStore } from '../events/store.ts';
import { PayloadStore } from '../events/payload-store.ts';
import { inventoryReader } from './inventory.ts';
import type { Pool } from '../runtime/database.ts';
import type { Logger } from '../runtime/logger.ts';
import { loadConfig, type Config } from '../runtime/config.ts';
import type { PublicKey } from '../payload/signing.ts';
import { loadTrustedKeys } from '../control/trusted-keys.ts';

export function createActivityDeps(opts: {
  pool: Pool;
  fleetFile: string;
  /** Where the worker's client certificate for enrolled hosts is (default FLEETPATCH_DATA_DIR). */
  dataDir?: string;
  logger: Logger;
  actionDeadlineMs?: number;
  /** How long one request to a host may take (default the client's 10 s): an agent's tools may be slower than the emulator. */
  hostTimeoutMs?: number;
  /** Where the trusted keys are (default: FLEETPATCH_TRUSTED_KEYS), or the keys themselves. */
  trustedKeys?: Config['trustedKeys'] | readonly PublicKey[];
}): ActivityDeps {
  const keys = opts.trustedKeys ?? loadConfig().trustedKeys;
  const events = new EventStore(opts.pool);
  const fleet = inventoryReader({ pool: opts.pool, fleetFile: opts.fleetFile, dataDir: opts.dataDir ?? loadConfig().dataDir, logger: opts.logger, ...(opts.hostTimeoutMs !== undefined ? { timeoutMs: opts.hostTimeoutMs } : {}) });
  return {
    pool: opts.pool,
    events,
    payloads: new PayloadStore(events),
    fleet,
    logger: opts.logger.child({ component: 'activities' }),
    ...(opts.actionDeadlineMs !== undefined ? { actionDeadlineMs: opts.actionDeadlineMs } : {}),
    trustedKeys: Array.isArray(keys) ? async () => keys as readonly PublicKey[] : () => loadTrustedKeys({ trustedKeys: keys as Config['trustedKeys'] }),
  };
}
