/** Fleets in the test process, and payloads built for the built-in image. */
import { buildPayload, type PayloadSpec } from '../../src/payload/builder.ts';
import { DEFAULT_IMAGE } from '../../src/payload/image.ts';
import { FleetClient } from '../../src/agent/client.ts';
import { startFleetServer, type FleetServerOptions, type RunningFleet } from '../../src/emulator/server.ts';
import { EmulatorAdmin } from '../../src/emulator/admin-client.ts';

export interface TestFleet {
  fleet: RunningFleet;
  client: FleetClient;
  /** The emulator's admin routes (faults, stats, journal). */
  admin: EmulatorAdmin;
  close(): Promise<void>;
}

export async function startTestFleet(opts: Partial<FleetServerOptions> = {}): Promise<TestFleet> {
  const fleet = await startFleetServer({ hosts: 3, port: 0, ...opts });
  const client = new FleetClient(fleet.fleet, { timeoutMs: 5_000 });
  return { fleet, client, admin: new EmulatorAdmin(fleet.fleet, { timeoutMs: 5_000 }), close: () => fleet.close() };
}

/** A payload for the built-in image: patches xen_extra_version to return `returns`. */
export function payload(name: string, returns: string, extra: Partial<PayloadSpec> = {}): Uint8Array {
  return buildPayload({ name, funcs: [{ target: 'xen_extra_version', returns }], ...extra }, { image: DEFAULT_IMAGE });
}

export const HELLO = payload('hello', 'Hello World', { writableData: 8, modinfo: ['LIVEPATCH_RULEZ'] });
export const NOP_LIKE = buildPayload({ name: 'minor', funcs: [{ target: 'xen_minor_version', returns: 20 }] }, { image: DEFAULT_IMAGE });

/** Resolves after `ms`. */
export function delay(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
