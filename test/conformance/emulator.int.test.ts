/**
 * The host contract suite against the emulator: a fleet server in this process serving the
 * gcc-built hypervisor image, each test on a host of its own, Xen's test payloads as gcc and ld
 * build them (test/fixtures/toolchain.ts). In the int tier: gcc, and a socket.
 */
import { readFile } from 'node:fs/promises';
import { afterAll } from 'vitest';
import { FleetClient } from '../../src/agent/client.ts';
import { startFleetServer, type RunningFleet } from '../../src/emulator/server.ts';
import { buildFixtures } from '../fixtures/toolchain.ts';
import { contractSuite } from './contract-suite.ts';

const HOSTS = 16;
/** The last few hosts keep every action pending for a minute. */
const SLOW_FROM = 12;
let fleet: RunningFleet | undefined;

afterAll(async () => {
  await fleet?.close();
});

contractSuite('the emulator', async () => {
  const fx = await buildFixtures();
  const slow = Array.from({ length: HOSTS - SLOW_FROM }, (_, i) => `host-${String(SLOW_FROM + i).padStart(4, '0')}`);
  fleet = await startFleetServer({ hosts: HOSTS, port: 0, images: [fx.images.xen.path], faults: { rules: [{ kind: 'actionDuration', ms: 60_000, hosts: slow }] } });
  const client = new FleetClient(fleet.fleet, { timeoutMs: 10_000 });
  let next = 0;
  let nextSlow = SLOW_FROM;
  const bytes = (p: { path: string }) => readFile(p.path).then((b) => new Uint8Array(b));
  return {
    host: async (opts) => {
      const i = opts?.slowActions ? nextSlow++ : next++;
      if (i >= (opts?.slowActions ? HOSTS : SLOW_FROM)) throw new Error('the conformance fleet has no unused host left: raise HOSTS');
      return client.host(`host-${String(i).padStart(4, '0')}`);
    },
    payloads: {
      hello: await bytes(fx.payloads.helloWorld),
      bye: await bytes(fx.payloads.byeWorld),
      replace: await bytes(fx.payloads.replaceWorld),
      nop: await bytes(fx.payloads.nop),
      noXenBuildId: await bytes(fx.payloads.noXenBuildId),
    },
  };
});
