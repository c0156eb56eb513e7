/**
 * The `fleetpatch` command: a thin dispatcher. Each sub-command lives in its own module and is
 * imported only when used, so `fleetpatch payload inspect` does not pay for loading Temporal.
 */
import { isFleetpatchError } from '../errors.ts';
import { processIO, type CliIO, type Command } from './io.ts';

const COMMANDS: Record<string, { summary: string; load: () => Promise<Command> }> = {
  demo: { summary: 'run a demo rollout over an emulated fleet on the embedded defaults', load: async () => (await import('./demo.ts')).demoCommand },
  worker: { summary: 'run a Temporal worker for fleetpatch workflows and activities', load: async () => (await import('./worker.ts')).workerCommand },
  services: { summary: 'start the local Temporal dev server and PostgreSQL and keep them running', load: async () => (await import('./services.ts')).servicesCommand },
  payload: { summary: 'inspect, check, build, sign and verify live-patch payloads', load: async () => (await import('./payload.ts')).payloadCommand },
  emulate: { summary: 'serve a fleet of emulated hypervisors over HTTP', load: async () => (await import('./emulate.ts')).emulateCommand },
  hv: { summary: 'xen-livepatch against one emulated host', load: async () => (await import('./hv.ts')).hvCommand },
  audit: { summary: 'ask the event store what ran where, when, and why', load: async () => (await import('./audit.ts')).auditCommand },
  rollout: { summary: 'plan, start and steer fleet rollouts', load: async () => (await import('./rollout.ts')).rolloutCommand },
};

function usage(io: CliIO): void {
  io.out('Usage: fleetpatch <command> [options]');
  io.out('');
  io.out('Commands:');
  for (const [name, { summary }] of Object.entries(COMMANDS)) io.out(`  ${name.padEnd(10)} ${summary}`);
  io.out('');
  io.out('Run `fleetpatch <command> --help` for the options of one command.');
}

export async function main(argv: string[], io: CliIO = processIO): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    usage(io);
    return name ? 0 : 2;
  }
  const entry = COMMANDS[name];
  if (!entry) {
    io.err(`fleetpatch: unknown command "${name}"`);
    usage(io);
    return 2;
  }
  try {
    const command = await entry.load();
    return await command(rest, io);
  } catch (e) {
    return reportError(e, io);
  }
}

/** One clear line for errors we raised on purpose; a stack trace only for genuine bugs. */
export function reportError(e: unknown, io: CliIO): number {
  if (isFleetpatchError(e)) {
    io.err(`fleetpatch: ${e.code}: ${e.message}`);
    return e.code === 'USAGE' ? 2 : 1;
  }
  io.err(`fleetpatch: internal error: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
  return 1;
}
