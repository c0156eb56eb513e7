/**
 * Builds what activities need from a database pool and the fleet file. The fleet file is read
 * lazily and again when it changes on disk (a restarted `fleetpatch emulate` writes new tokens),
 * so a long-running worker follows the fleet it is pointed at.
 */
import { stat } from 'node:fs/promises';
import type { ActivityDeps } from '../../activities/deps.ts';
import { EventStore } from '../events/store.ts';
import { PayloadStore } from '../events/payload-store.ts';
import { FleetClient } from '../agent/client.ts';
import type { Pool } from '../runtime/database.ts';
import type { Logger } from '../runtime/logger.ts';
import { loadConfig, type Config } from '../runtime/config.ts';
import type { PublicKey } from '../payload/signing.ts';
import { loadTrustedKeys } from '../control/trusted-keys.ts';

export function createActivityDeps(opts: {
  pool: Pool;
  fleetFile: string;
  logger: Logger;
  actionDeadlineMs?: number;
  /** Where the trusted keys are (default: FLEETPATCH_TRUSTED_KEYS), or the keys themselves. */
  trustedKeys?: Config['trustedKeys'] | readonly PublicKey[];
}): ActivityDeps {
  const keys = opts.trustedKeys ?? loadConfig().trustedKeys;
  const events = new EventStore(opts.pool);
  let cached: { client: FleetClient; mtimeMs: number; checkedAt: number } | undefined;
  const fleet = async (): Promise<FleetClient> => {
    // Every activity asks; the file is looked at again at most once a second.
    if (cached && Date.now() - cached.checkedAt < 1000) return cached.client;
    const mtimeMs = await stat(opts.fleetFile).then((s) => s.mtimeMs, () => -1);
    if (!cached || cached.mtimeMs !== mtimeMs) {
      cached = { client: await FleetClient.open(opts.fleetFile, { logger: opts.logger }), mtimeMs, checkedAt: Date.now() };
    } else cached.checkedAt = Date.now();
    return cached.client;
  };
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
