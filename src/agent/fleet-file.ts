/**
 * The fleet file: how every other fleetpatch process finds an emulated fleet and gets in. Written
 * by `fleetpatch emulate` (and startFleetServer) into the data dir; read by `fleetpatch hv`, the
 * rollout activities and FleetClient. It holds bearer tokens, so it is written 0600.
 *
 *   { url, adminToken, createdAt, seed,
 *     images: [{ name, buildId }],
 *     hosts: [{ id, token, labels: { region, rack, ... }, buildId, image }] }
 */
import { mkdir, rename, writeFile } from 'node:fs/promises';
import { readInputText } from '../runtime/files.ts';
import path from 'node:path';
import { z } from 'zod';
import { FleetpatchError } from '../errors.ts';
import { loadConfig } from '../runtime/config.ts';

const buildId = z.string().regex(/^(?:[0-9a-f]{2})+$/, 'must be a lowercase hex build-id');

export const FleetFileSchema = z.object({
  /** Base URL of the fleet server, e.g. http://127.0.0.1:9400. */
  url: z.url(),
  /** Bearer token of the /admin/* routes (faults at run time, stats). */
  adminToken: z.string().min(16),
  createdAt: z.string(),
  seed: z.number().int(),
  images: z.array(z.object({ name: z.string().min(1), buildId })).min(1),
  hosts: z
    .array(
      z.object({
        id: z.string().min(1),
        token: z.string().min(16),
        labels: z.record(z.string(), z.string()).refine((l) => l.region !== undefined && l.rack !== undefined, 'labels need region and rack'),
        /** The build-id of the host's hypervisor image. */
        buildId,
        /** The image's name (see `images`). */
        image: z.string().min(1),
      }),
    )
    .min(1),
});

export type FleetFile = z.infer<typeof FleetFileSchema>;
export type FleetFileHost = FleetFile['hosts'][number];

/** <FLEETPATCH_DATA_DIR>/fleet.json */
export function defaultFleetFilePath(dataDir: string = loadConfig().dataDir): string {
  return path.join(dataDir, 'fleet.json');
}

export function parseFleetFile(doc: unknown, source = 'fleet file'): FleetFile {
  const r = FleetFileSchema.safeParse(doc);
  if (!r.success) {
    const problems = r.error.issues.slice(0, 5).map((i) => `${i.path.length ? i.path.join('.') : '(top)'}: ${i.message}`);
    throw new FleetpatchError('FLEET_FILE_INVALID', `${source}: ${problems.join('; ')}`, { issues: r.error.issues.slice(0, 20) });
  }
  return r.data;
}

export async function readFleetFile(file: string = defaultFleetFilePath()): Promise<FleetFile> {
  let text: string;
  try {
    // A regular file of bounded size (runtime/files.ts): a FIFO or /dev/zero is refused, not read.
    text = await readInputText(file, 'fleet');
  } catch (e) {
    const err = e as FleetpatchError;
    const missing = err.details?.errno === 'ENOENT';
    throw new FleetpatchError(
      'FLEET_FILE_INVALID',
      missing ? `no fleet file at ${file}: start a fleet with \`fleetpatch emulate --hosts N\` or pass --fleet-file` : `cannot read the fleet file ${file}: ${err.message}`,
      { file },
    );
  }
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (e) {
    throw new FleetpatchError('FLEET_FILE_INVALID', `${file} is not JSON: ${(e as Error).message}`, { file });
  }
  return parseFleetFile(doc, file);
}

/** Atomic (write then rename) and private (0600): it holds every host's token. */
export async function writeFleetFile(file: string, fleet: FleetFile): Promise<void> {
  const valid = parseFleetFile(fleet, 'fleet');
  await mkdir(path.dirname(file), { recursive: true });
  const tmp = `${file}.${process.pid}.tmp`;
  await writeFile(tmp, JSON.stringify(valid, null, 2) + '\n', { mode: 0o600 });
  await rename(tmp, file);
}

export function findFleetHost(fleet: FleetFile, id: string): FleetFileHost {
  const host = fleet.hosts.find((h) => h.id === id);
  if (!host) throw new FleetpatchError('HOST_NOT_FOUND', `no host ${id} in the fleet at ${fleet.url} (hosts ${fleet.hosts[0]?.id} to ${fleet.hosts[fleet.hosts.length - 1]?.id})`, { hostId: id });
  return host;
}
