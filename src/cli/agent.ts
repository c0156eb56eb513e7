/**
 * `fleetpatch agent`: the dom0 agent of one host (src/host/agent-server.ts), until SIGINT/SIGTERM;
 * `fleetpatch agent journal`: the host's own journal, for people. See docs/agent.md.
 */
import { mkdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { pino } from 'pino';
import { FleetpatchError } from '../errors.ts';
import { loadConfig } from '../runtime/config.ts';
import { createLogger } from '../runtime/logger.ts';
import { Shutdown } from '../runtime/shutdown.ts';
import { startAgent } from '../host/agent-server.ts';
import { loadAgentTls } from '../host/agent-tls.ts';
import { describeEntry, readJournal } from '../host/host-journal.ts';
import { DEFAULT_TOOL_PATHS } from '../host/xen-tools.ts';
import { boundedInteger, boundedText, isoInstant, parseCommandArgs } from './args.ts';
import type { CliIO, Command } from './io.ts';

export const DEFAULT_AGENT_DIR = '/var/lib/fleetpatch-agent';
export const DEFAULT_AGENT_PORT = 9443;

function usage(io: CliIO): void {
  io.out('Usage: fleetpatch agent [--dir D] [--listen HOST:PORT] [--host-id ID] [--xen-livepatch PATH] [--xl PATH] [--tool-timeout MS]');
  io.out('                        [--insecure-http [--token-file F]] [--boot-id-file F] [--stat-file F]');
  io.out('       fleetpatch agent journal [--dir D] [--since T] [--json]');
  io.out('       fleetpatch agent enroll --join-token T --control URL [--dir D] [--address URL] [--xl PATH]');
  io.out('');
  io.out("Serves the agent protocol for this host from Xen's own tools (see docs/agent.md).");
  io.out(`  --dir D             the agent's directory (default ${DEFAULT_AGENT_DIR}): tls/, trusted-keys.json, journal.jsonl, state/`);
  io.out(`  --listen HOST:PORT  where to listen (default 0.0.0.0:${DEFAULT_AGENT_PORT}; with --insecure-http 127.0.0.1:${DEFAULT_AGENT_PORT})`);
  io.out('  --host-id ID        this host (default: the one its certificate names; required with --insecure-http)');
  io.out(`  --xen-livepatch P   the tool (default ${DEFAULT_TOOL_PATHS.xenLivepatch})`);
  io.out(`  --xl P              the tool (default ${DEFAULT_TOOL_PATHS.xl})`);
  io.out('  --tool-timeout MS   how long one run of a tool may take before it is killed (default 10000)');
  io.out('  --insecure-http     plain HTTP on loopback with a bearer token, for development and tests');
  io.out('  --token-file F      that token (default <dir>/agent-token)');
  io.out('  --boot-id-file F    the boot identity (default /proc/sys/kernel/random/boot_id)');
  io.out('  --stat-file F       where the boot time is read (default /proc/stat, its btime line)');
}

/** HOST:PORT, [v6]:PORT, or a port alone. */
export function parseListen(value: string, dflt: string): { host: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:\s]+)):(\d{1,5})$/.exec(value) ?? (/^\d{1,5}$/.test(value) ? [value, undefined, dflt, value] : null);
  const port = m ? Number(m[3]) : NaN;
  if (!m || !(port >= 0 && port <= 65535)) throw new FleetpatchError('USAGE', `agent: --listen must be HOST:PORT (e.g. 0.0.0.0:${DEFAULT_AGENT_PORT}), not "${value.slice(0, 60)}"`);
  return { host: (m[1] ?? m[2])!, port };
}

async function journalCommand(args: string[], io: CliIO): Promise<number> {
  const { values, positionals } = parseCommandArgs(args, { dir: { type: 'string' }, since: { type: 'string' }, json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } }, 'agent journal');
  if (values.help) {
    usage(io);
    return 0;
  }
  if (positionals.length) throw new FleetpatchError('USAGE', `agent journal: unexpected argument "${positionals[0]}"`);
  const since = isoInstant(values.since, '--since', 'agent journal');
  const file = path.join(path.resolve(values.dir ?? DEFAULT_AGENT_DIR), 'journal.jsonl');
  const entries = await readJournal(file, since);
  for (const e of entries) io.out(values.json ? JSON.stringify(e) : describeEntry(e));
  return 0;
}

export const agentCommand: Command = async (args, io) => {
  if (args[0] === 'journal') return journalCommand(args.slice(1), io);
  if (args[0] === 'enroll') return (await import('./agent-enroll.ts')).agentEnrollCommand(args.slice(1), io);
  const { values, positionals } = parseCommandArgs(
    args,
    {
      dir: { type: 'string' },
      listen: { type: 'string' },
      'host-id': { type: 'string' },
      'xen-livepatch': { type: 'string' },
      xl: { type: 'string' },
      'insecure-http': { type: 'boolean' },
      'token-file': { type: 'string' },
      'boot-id-file': { type: 'string' },
      'stat-file': { type: 'string' },
      'tool-timeout': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    'agent',
  );
  if (values.help) {
    usage(io);
    return 0;
  }
  if (positionals.length) throw new FleetpatchError('USAGE', `agent: unexpected argument "${positionals[0]}" (the subcommands are journal and enroll)`);
  const insecure = values['insecure-http'] === true;
  if (!insecure && values['token-file']) throw new FleetpatchError('USAGE', 'agent: --token-file goes with --insecure-http; over mutual TLS the client certificate is the credential');
  const dir = path.resolve(values.dir ?? DEFAULT_AGENT_DIR);
  const listen = parseListen(values.listen ?? `${insecure ? '127.0.0.1' : '0.0.0.0'}:${DEFAULT_AGENT_PORT}`, insecure ? '127.0.0.1' : '0.0.0.0');
  const hostIdOption = boundedText(values['host-id'], '--host-id', 200, 'agent');
  // A dom0 under load (or a tool double, itself a Node process) may need more than the default.
  const toolTimeoutMs = boundedInteger(values['tool-timeout'], '--tool-timeout', 100, 3_600_000, 'agent');
  const tools = {
    ...(values['xen-livepatch'] ? { xenLivepatch: path.resolve(values['xen-livepatch']) } : {}),
    ...(values.xl ? { xl: path.resolve(values.xl) } : {}),
    ...(toolTimeoutMs !== undefined ? { timeoutMs: toolTimeoutMs } : {}),
  };

  let tls = null;
  let token: string | undefined;
  let hostId: string;
  if (insecure) {
    if (!hostIdOption) throw new FleetpatchError('USAGE', 'agent: --insecure-http needs --host-id ID (there is no certificate to name the host)');
    hostId = hostIdOption;
    const tokenFile = path.resolve(values['token-file'] ?? path.join(dir, 'agent-token'));
    token = (await readFile(tokenFile, 'utf8').catch((e: NodeJS.ErrnoException) => {
      throw new FleetpatchError('USAGE', `agent: cannot read the bearer token ${tokenFile}: ${e.code ?? e.message}`);
    })).trim();
    if (!/^\S{16,512}$/.test(token)) throw new FleetpatchError('USAGE', `agent: ${tokenFile} must hold one token of 16 to 512 characters without spaces`);
  } else {
    tls = await loadAgentTls(dir);
    if (hostIdOption && hostIdOption !== tls.hostId) {
      throw new FleetpatchError('TLS_INVALID', `agent: --host-id ${hostIdOption} but ${path.join(dir, 'tls', 'cert.pem')} is host ${tls.hostId}'s certificate`);
    }
    hostId = tls.hostId;
  }

  const config = loadConfig();
  await mkdir(dir, { recursive: true, mode: 0o700 });
  // Routine records go to <dir>/agent.log; warnings and errors also to stderr (journald keeps them).
  const logger = createLogger(config.logLevel, {
    destination: pino.multistream([
      { level: config.logLevel === 'silent' ? 'fatal' : config.logLevel, stream: pino.destination({ dest: path.join(dir, 'agent.log'), sync: true, mkdir: true }) },
      { level: 'warn', stream: pino.destination({ dest: 2, sync: true }) },
    ]),
  });
  const shutdown = new Shutdown(logger);
  shutdown.installSignalHandlers();
  const agent = await startAgent({
    dir,
    hostId,
    host: listen.host,
    port: listen.port,
    tools,
    tls: tls ? { key: tls.key, cert: tls.cert, ca: tls.ca } : null,
    ...(token ? { token } : {}),
    ...(values['boot-id-file'] ? { bootIdFile: path.resolve(values['boot-id-file']) } : {}),
    ...(values['stat-file'] ? { statFile: path.resolve(values['stat-file']) } : {}),
    logger,
  });
  shutdown.add('agent', () => agent.close());
  io.out(
    `fleetpatch agent: host ${hostId} at ${agent.url} (${tls ? `mutual TLS, certificate valid to ${tls.validTo}` : 'plain HTTP on loopback, bearer token'}); ` +
      `tools ${tools.xenLivepatch ?? DEFAULT_TOOL_PATHS.xenLivepatch}, ${tools.xl ?? DEFAULT_TOOL_PATHS.xl}; trusted keys ${agent.trustedKeys.join(', ')}; journal ${agent.journalFile}`,
  );
  await new Promise<void>((resolve) => shutdown.signal.addEventListener('abort', () => resolve(), { once: true }));
  return 0;
};
