/**
 * `npx tsx scripts/install-doubles.ts FLEET_FILE HOST_ID DIR`: the doubles of xen-livepatch and xl
 * (src/double) for one emulated host of a `fleetpatch emulate` fleet file, written into DIR, so
 * a `fleetpatch agent --xen-livepatch DIR/xen-livepatch --xl DIR/xl` drives that host
 * (scripts/agent-rollout-demo.sh).
 */
import { readFleetFile } from '../src/agent/fleet-file.ts';
import { writeToolDoubles } from '../src/double/install.ts';

const [fleetFile, hostId, dir] = process.argv.slice(2);
if (!fleetFile || !hostId || !dir) {
  console.error('usage: install-doubles.ts FLEET_FILE HOST_ID DIR');
  process.exit(2);
}
const fleet = await readFleetFile(fleetFile);
const host = fleet.hosts.find((h) => h.id === hostId);
if (!host) {
  console.error(`install-doubles: ${fleetFile} has no host ${JSON.stringify(hostId)}`);
  process.exit(2);
}
const tools = await writeToolDoubles(dir, { url: fleet.url, hostId, token: host.token, timeoutMs: 60_000 });
console.log(`${tools.xenLivepatch} ${tools.xl}`);
