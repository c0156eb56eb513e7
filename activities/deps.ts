/**
 * What activities need from the outside world, built once per worker process. Activities are the
 * only code that talks to hosts and to the event store.
 */
import type { EventStore } from '../src/events/store.ts';
import type { PayloadStore } from '../src/events/payload-store.ts';
import type { FleetClient } from '../src/agent/client.ts';
import type { Pool } from '../src/runtime/database.ts';
import type { Logger } from '../src/runtime/logger.ts';
import type { PublicKey } from '../src/payload/signing.ts';

export interface ActivityDeps {
  pool: Pool;
  events: EventStore;
  payloads: PayloadStore;
  /** The fleet (fleet file + a HostAgent per host). Re-read when a host id is unknown. */
  fleet: () => Promise<FleetClient>;
  logger: Logger;
  /** Longest an asynchronous hypervisor action may stay at -EAGAIN. */
  actionDeadlineMs?: number;
  /** Between two GETs while an action runs. */
  actionPollMs?: number;
  /** The public keys payload signatures must verify against (read when asked; none when absent). */
  trustedKeys?: () => Promise<readonly PublicKey[]>;
}
