/**
 * `fleetpatch emulate --hosts N`: serve a fleet of emulated Xen hypervisors over HTTP until Ctrl-C,
 * and write the fleet file (url, admin token, every host's id, token, labels and build-id) that
 * `fleetpatch hv`, the worker and the rollout activities read.
 */
import { readFile, unlink } from 'node:fs/promises';
import path from 'node:path';
import { FleetpatchError } from '../errors.ts';
import { MAX_FLEET_HOSTS } from '../emulator/fleet.ts';
import { startFleetServer } from '../emulator/server.ts';
import { loadConfig } from '../runtime/config.ts';
import { createCommandLogger } from '../runtime/logger.ts';
import { Shutdown } from '../runtime/shutdown.ts';
import { parseCommandArgs } from './args.ts';
import { checkInputFile } from '../runtime/files.ts';
import type { CliIO, Command } from './io.ts';

export const DEFAULT_PORT = 9400;

function usage(io: CliIO): void {
  io.out('Usage: fleetpatch emulate --hosts N [--images <elf>,<elf>...] [--port P] [--listen ADDR]');
  io.out('                          [--public-url URL] [--seed S] [--faults FILE] [--fleet-file FILE]');
  io.out('');
  io.out('Serves N emulated Xen hypervisors (host-0000, host-0001, ...) over HTTP until Ctrl-C.');
  io.out(`  --hosts N         number of hosts, 1 to ${MAX_FLEET_HOSTS}`);
  io.out('  --images LIST     linked hypervisor images (xen-syms with a build-id), comma-separated;');
  io.out('                    host i runs image i mod count. Default: the built-in image.');
  io.out(`  --port P          TCP port (default ${DEFAULT_PORT}; 0 = any free port)`);
  io.out('  --listen ADDR     address to listen on (default 127.0.0.1)');
  io.out('  --public-url URL  URL written into the fleet file (default http://127.0.0.1:<port>)');
  io.out('  --seed S          seed of the fault injection (default 1)');
  io.out('  --faults FILE     fault-injection rules, YAML or JSON (see docs/hypervisor.md)');
  io.out('  --fleet-file F    where to write the fleet file (default FLEETPATCH_FLEET_FILE, else <FLEETPATCH_DATA_DIR>/fleet.json)');
}

function integer(value: string | undefined, what: string, min: number, max: number): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!/^-?\d+$/.test(value) || n < min || n > max) throw new FleetpatchError('USAGE', `emulate: ${what} must be an integer from ${min} to ${max} (got "${value}")`);
  return n;
}

export const emulateCommand: Command = async (args, io) => {
  const { values, positionals } = parseCommandArgs(
    args,
    {
      hosts: { type: 'string' },
      images: { type: 'string' },
      port: { type: 'string' },
      listen: { type: 'string' },
      'public-url': { type: 'string' },
      seed: { type: 'string' },
      faults: { type: 'string' },
      'fleet-file': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    'emulate',
  );
  if (values.help) {
    usage(io);
    return 0;
  }
  if (positionals.length) throw new FleetpatchError('USAGE', `emulate: unexpected argument "${positionals[0]}"`);
  if (values.hosts === undefined) throw new FleetpatchError('USAGE', 'emulate: --hosts N is required');
  const hosts = integer(values.hosts, '--hosts', 1, MAX_FLEET_HOSTS)!;
  const port = integer(values.port, '--port', 0, 65535) ?? DEFAULT_PORT;
  const seed = integer(values.seed, '--seed', -(2 ** 31), 2 ** 31 - 1) ?? 1;
  const images = values.images
    ?.split(',')
    .map((s) => s.trim())
    .filter(Boolean)
    .map((p) => path.resolve(p));
  if (values['public-url'] !== undefined) {
    try {
      new URL(values['public-url']);
    } catch {
      throw new FleetpatchError('USAGE', `emulate: --public-url must be a URL like http://fleet:9400 (got "${values['public-url']}")`);
    }
  }

  // Files first, without reading them: a FIFO or /dev/zero given as an image is refused, not read.
  for (const image of images ?? []) await checkInputFile(image, 'image');
  if (values.faults) await checkInputFile(path.resolve(values.faults), 'faults');

  const config = loadConfig();
  const logger = createCommandLogger(config.logLevel, config.dataDir);
  const shutdown = new Shutdown(logger);
  shutdown.installSignalHandlers();
  const fleetFile = path.resolve(values['fleet-file'] ?? config.fleetFile);

  const fleet = await startFleetServer({
    hosts,
    ...(images?.length ? { images } : {}),
    seed,
    ...(values.faults ? { faults: path.resolve(values.faults) } : {}),
    port,
    listen: values.listen ?? '127.0.0.1',
    ...(values['public-url'] ? { publicUrl: values['public-url'] } : {}),
    fleetFile,
    logger,
  });
  shutdown.add('fleet server', async () => {
    await fleet.close();
    // Leave no fleet file pointing at a server that is gone, unless another fleet replaced it.
    try {
      const onDisk = JSON.parse(await readFile(fleetFile, 'utf8')) as { adminToken?: string };
      if (onDisk.adminToken === fleet.adminToken) await unlink(fleetFile);
    } catch {
      // Already gone or unreadable: nothing to clean.
    }
  });

  const imageList = fleet.fleet.images.map((i) => `${i.name} ${i.buildId}`).join(', ');
  io.out(`Emulating ${hosts} host${hosts === 1 ? '' : 's'} (${fleet.fleet.hosts[0]!.id}..${fleet.fleet.hosts[hosts - 1]!.id}) at ${fleet.url}`);
  io.out(`Images: ${imageList}`);
  if (fleet.faults.rules.length || fleet.faults.latencyMs || fleet.faults.actionLatencyMs || fleet.faults.actionDurationMs) {
    io.out(`Faults: ${fleet.faults.rules.length} rule(s), seed ${fleet.faults.seed ?? seed}`);
  }
  io.out(`Fleet file: ${fleetFile}`);
  io.out('Press Ctrl-C to stop.');
  await new Promise<void>((resolve) => shutdown.signal.addEventListener('abort', () => resolve(), { once: true }));
  return 0;
};
