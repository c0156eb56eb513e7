/**
 * The one source of the fleet for rollouts, preflight, `audit replay` and the API: the hosts
 * enrolled in the event store (enrolled, not retired; src/fleet/registry.ts) merged with the
 * emulator's fleet file when there is one (FleetClient: each host once, the enrolled record
 * winning). Re-read when either changes: the fleet file's mtime, and the enrolment facts' count
 * and last position (one look at a partial index), at most once a second; a client whose
 * inventory did not change is kept, with its connections.
 */
import { stat } from 'node:fs/promises';
import path from 'node:path';
import { FleetClient, type FleetClientOptions } from '../agent/client.ts';
import { readFleetFile, type FleetFile } from '../agent/fleet-file.ts';
import { FleetpatchError } from '../errors.ts';
import { EventStore } from '../events/store.ts';
import { FleetRegistry } from '../fleet/registry.ts';
import { readTlsDir, type TlsMaterial } from '../pki/tls.ts';
import { loadConfig } from '../runtime/config.ts';
import type { Pool } from '../runtime/database.ts';
import type { Logger } from '../runtime/logger.ts';

export interface InventoryOptions {
  /** The event store's database; without one, the fleet is the fleet file's alone. */
  pool?: Pool;
  fleetFile: string;
  /** Where the worker's client certificate is; default FLEETPATCH_WORKER_TLS_DIR, or <dataDir>/worker-tls when a dataDir is given. */
  workerTlsDir?: string;
  dataDir?: string;
  logger?: Logger;
  timeoutMs?: number;
}

async function enrolmentMark(pool: Pool): Promise<string> {
  const { rows } = await pool.query<{ n: string; last: string | null }>(
    `SELECT count(*) AS n, max(global_position) AS last FROM events
      WHERE type IN ('JoinTokenIssued', 'HostEnrolled', 'HostCertificateRenewed', 'HostLabelsChanged', 'HostRetired')`,
  );
  return `${rows[0]!.n}:${rows[0]!.last ?? 0}`;
}

/** FLEETPATCH_WORKER_TLS_DIR when set (config), else <data dir>/worker-tls of the data dir given. */
function workerTlsDirOf(opts: InventoryOptions): string {
  if (opts.workerTlsDir) return opts.workerTlsDir;
  const config = loadConfig();
  return process.env.FLEETPATCH_WORKER_TLS_DIR || !opts.dataDir ? config.workerTlsDir : path.join(opts.dataDir, 'worker-tls');
}

/** The fleet now: FLEET_FILE_INVALID only when there is neither a fleet file nor an enrolled host. */
export async function openInventory(opts: InventoryOptions): Promise<FleetClient> {
  const fileMissing = await stat(opts.fleetFile).then(() => false, () => true);
  const [fleet, enrolled] = await Promise.all([
    fileMissing ? Promise.resolve(null) : readFleetFile(opts.fleetFile),
    opts.pool ? new FleetRegistry(new EventStore(opts.pool)).activeHosts() : Promise.resolve([]),
  ]);
  if (!fleet && enrolled.length === 0) {
    // As before enrolment existed: the reason names the fleet file, and how to get a fleet.
    await readFleetFile(opts.fleetFile);
  }
  const needsTls = enrolled.some((h) => h.address.startsWith('https:'));
  let workerTls: TlsMaterial | FleetpatchError | undefined;
  if (needsTls) workerTls = await readTlsDir(workerTlsDirOf(opts)).catch((e: FleetpatchError) => e);
  const clientOpts: FleetClientOptions = {
    enrolled: enrolled.map((h) => ({ id: h.id, labels: h.labels, hypervisorBuildId: h.hypervisorBuildId, address: h.address })),
    ...(workerTls ? { workerTls } : {}),
    ...(opts.logger ? { logger: opts.logger } : {}),
    ...(opts.timeoutMs !== undefined ? { timeoutMs: opts.timeoutMs } : {}),
  };
  return new FleetClient(fleet as FleetFile | null, clientOpts);
}

/** openInventory, kept while nothing changed; checked at most once a second. */
export function inventoryReader(opts: InventoryOptions): () => Promise<FleetClient> {
  let cached: { client: FleetClient; mark: string; checkedAt: number } | undefined;
  return async () => {
    if (cached && Date.now() - cached.checkedAt < 1000) return cached.client;
    const [mtimeMs, enrolment] = await Promise.all([stat(opts.fleetFile).then((s) => s.mtimeMs, () => -1), opts.pool ? enrolmentMark(opts.pool) : Promise.resolve('')]);
    const mark = `${mtimeMs}|${enrolment}`;
    if (!cached || cached.mark !== mark) {
      const previous = cached?.client;
      cached = { client: await openInventory(opts), mark, checkedAt: Date.now() };
      // The old client's connections to enrolled agents: closed once requests in flight are done.
      if (previous) setTimeout(() => void previous.close(), 60_000).unref();
    } else cached.checkedAt = Date.now();
    return cached.client;
  };
}
