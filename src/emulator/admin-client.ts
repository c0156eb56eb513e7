/**
 * The emulator's admin routes, for tests, the demo, benchmarks and chaos runs: read and replace
 * the fault set, the server's stats, and the hypervisors' own journal. Authenticated with the
 * fleet file's admin token. (Talking to hosts is the agent's: src/agent/client.ts.)
 */
import type { Dispatcher } from 'undici';
import { z } from 'zod';
import { DEFAULT_REQUEST_TIMEOUT_MS, Transport } from '../agent/client.ts';
import { readFleetFile, type FleetFile } from '../agent/fleet-file.ts';
import type { Logger } from '../runtime/logger.ts';
import { FaultsSchema, type Faults, type FaultsInput } from './faults.ts';
import type { JournalEntry } from './journal.ts';
import type { FleetStats } from './server.ts';

const StatsSchema = z.object({ hosts: z.number(), images: z.number(), requests: z.number(), rssBytes: z.number(), heapUsedBytes: z.number(), uptimeMs: z.number(), pid: z.number() });
/** The journal's entries are the emulator's own shape (journal.ts); checked for the envelope only. */
const JournalSchema = z.object({ hosts: z.record(z.string(), z.array(z.custom<JournalEntry>((v) => typeof v === 'object' && v !== null))) });

export class EmulatorAdmin {
  readonly #t: Transport;

  constructor(fleet: FleetFile, opts: { timeoutMs?: number; dispatcher?: Dispatcher; logger?: Logger } = {}) {
    this.#t = new Transport(fleet.url, 'admin', fleet.adminToken, opts.timeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS, opts.dispatcher, opts.logger);
  }

  static async open(fleetFile?: string): Promise<EmulatorAdmin> {
    return new EmulatorAdmin(await readFleetFile(fleetFile));
  }

  faults(): Promise<Faults> {
    return this.#t.json(FaultsSchema, 'GET', '/admin/faults');
  }

  /** Replaces the running fleet's fault set. */
  setFaults(faults: FaultsInput): Promise<Faults> {
    return this.#t.json(FaultsSchema, 'POST', '/admin/faults', { body: JSON.stringify(faults), contentType: 'application/json' });
  }

  stats(): Promise<FleetStats> {
    return this.#t.json(StatsSchema, 'GET', '/admin/stats');
  }

  /** What really happened on each host (journal.ts). */
  async journal(hostId?: string): Promise<Record<string, JournalEntry[]>> {
    const q = hostId ? `?host=${encodeURIComponent(hostId)}` : '';
    return (await this.#t.json(JournalSchema, 'GET', `/admin/journal${q}`)).hosts;
  }
}
