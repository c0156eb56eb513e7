/**
 * The `fleetpatch` command: a thin dispatcher. Each sub-command lives in its own module and is
 * imported only when used, so `fleetpatch payload inspect` does not pay for loading Temporal.
 */
import { EXIT_CODES, FleetpatchError, exitCodeFor, maskSecrets, toCatalogued } from '../errors.ts';
import { printable } from '../domain/text.ts';
import { processIO, type CliIO, type Command } from './io.ts';

const COMMANDS: Record<string, { summary: string; load: () => Promise<Command> }> = {
  demo: { summary: 'run a demo rollout over an emulated fleet on the embedded defaults', load: async () => (await import('./demo.ts')).demoCommand },
  worker: { summary: 'run a Temporal worker for fleetpatch workflows and activities', load: async () => (await import('./worker.ts')).workerCommand },
  services: { summary: 'start the local Temporal dev server and PostgreSQL and keep them running', load: async () => (await import('./services.ts')).servicesCommand },
  payload: { summary: 'inspect, check, build, sign and verify live-patch payloads', load: async () => (await import('./payload.ts')).payloadCommand },
  emulate: { summary: 'serve a fleet of emulated hypervisors over HTTP', load: async () => (await import('./emulate.ts')).emulateCommand },
  hv: { summary: 'xen-livepatch against one emulated host', load: async () => (await import('./hv.ts')).hvCommand },
  agent: { summary: "the dom0 agent of a real Xen host: serves the agent protocol from xen-livepatch and xl", load: async () => (await import('./agent.ts')).agentCommand },
  audit: { summary: 'ask the event store what ran where, when, and why', load: async () => (await import('./audit.ts')).auditCommand },
  rollout: { summary: 'plan, start and steer fleet rollouts', load: async () => (await import('./rollout.ts')).rolloutCommand },
  api: { summary: 'serve the HTTP API, the live dashboard and /metrics', load: async () => (await import('./api.ts')).apiCommand },
  ca: { summary: 'make the fleet CA and issue workers\' client certificates for mutual TLS with the agents', load: async () => (await import('./ca.ts')).caCommand },
  hosts: { summary: 'enrol, list, label and retire the fleet\'s real hosts', load: async () => (await import('./hosts.ts')).hostsCommand },
  tokens: { summary: 'create, list and revoke the bearer tokens of the HTTP API', load: async () => (await import('./tokens.ts')).tokensCommand },
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
  // Every way a command can end goes through here: a return, or an error reported in one line
  // through the catalogue. Nothing a command throws reaches Node's default handler.
  try {
    const [name, ...rest] = argv;
    if (!name || name === '--help' || name === '-h' || name === 'help') {
      usage(io);
      if (!name) throw new FleetpatchError('USAGE', 'missing command (see the list above)');
      return EXIT_CODES.OK;
    }
    const entry = Object.hasOwn(COMMANDS, name) ? COMMANDS[name] : undefined;
    if (!entry) {
      // The list helps a person; a program that asked for --json gets nothing on stdout.
      if (!argv.includes('--json')) usage(io);
      throw new FleetpatchError('USAGE', `unknown command "${name}"`);
    }
    const command = await entry.load();
    return await command(rest, io);
  } catch (e) {
    return reportError(e, io, { json: argv.includes('--json') });
  }
}

/**
 * One line on stderr, `fleetpatch: CODE: message`, for every error: fleetpatch's own and any other
 * (mapped by toCatalogued; an unexpected one is INTERNAL). Passwords in URLs are masked; control
 * characters and lone surrogates are escaped. The stack
 * of an INTERNAL error is printed only at LOG_LEVEL=debug or trace. With --json, an error other
 * than USAGE or ARGUMENT is also written to stdout as `{"ok":false,"error":{code,message,details}}`; a usage
 * error writes nothing on stdout. Returns the exit code (EXIT_CODES).
 */
export function reportError(e: unknown, io: CliIO, opts: { json?: boolean } = {}): number {
  const err = toCatalogued(e);
  // A message may quote what the user gave (an unknown command, a value): control characters and
  // lone surrogates in it are written as escapes, so the line stays one printable line.
  const message = printable(maskSecrets(err.message).replace(/\s*\n\s*/g, '; '));
  io.err(`fleetpatch: ${err.code}: ${message}`);
  if (err.code === 'INTERNAL' && /^(debug|trace)$/.test(process.env.LOG_LEVEL ?? '')) {
    const original = (err as Error & { cause?: unknown }).cause;
    const stack = original instanceof Error ? original.stack : err.stack;
    if (stack) io.err(maskSecrets(stack));
  }
  if (opts.json && exitCodeFor(err.code) !== EXIT_CODES.USAGE) {
    io.out(JSON.stringify({ ok: false, error: { code: err.code, message, details: publicDetails(err.details) } }));
  }
  return exitCodeFor(err.code);
}

/** Details fit for output: no secrets, no nested causes. */
function publicDetails(details: Readonly<Record<string, unknown>>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(details)) {
    if (/token|authorization|password|secret|privateKey/i.test(k) || v instanceof Error) continue;
    out[k] = typeof v === 'string' ? maskSecrets(v) : v;
  }
  return out;
}
