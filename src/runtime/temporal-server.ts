/**
 * The local Temporal dev server (`temporal server start-dev`), for when TEMPORAL_ADDRESS is unset.
 * Its SQLite file lives in the data dir (WAL and synchronous=OFF: a dev server's durability is the
 * file, and the default journal mode makes every workflow task several fsyncs slower), so workflow
 * histories survive between runs. It runs in its own process group: Ctrl-C reaches fleetpatch,
 * which stops the worker first and the server last.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, openSync, closeSync } from 'node:fs';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Connection } from '@temporalio/client';
import { PLAIN, connectTemporalClient } from './temporal-connection.ts';
import { FleetpatchError } from '../errors.ts';
import type { Logger } from './logger.ts';
import { choosePort, isAlive, isListening, run, sleep, waitFor } from './process-utils.ts';

const PROJECT_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const CLI_SCRIPT = path.join(PROJECT_ROOT, 'scripts', 'temporal-cli.sh');

export interface TemporalDevServer {
  address: string;
  uiUrl?: string;
  startedHere: boolean;
  stop(): Promise<void>;
}

/** Finds or builds the Temporal CLI through the one script that pins its version. */
export async function resolveTemporalCli(logger: Logger, explicit?: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn('bash', [CLI_SCRIPT], {
      env: { ...process.env, ...(explicit ? { TEMPORAL_CLI: explicit } : {}) },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
      for (const line of d.toString().split('\n')) if (line.trim()) logger.info({ component: 'temporal-cli' }, line.trim());
    });
    child.on('error', (e) => reject(new FleetpatchError('TOOL_MISSING', `cannot run ${CLI_SCRIPT}: ${e.message}`)));
    child.on('close', (code) => {
      const bin = stdout.trim().split('\n').pop() ?? '';
      if (code === 0 && bin) resolve(bin);
      else reject(new FleetpatchError('TOOL_MISSING', stderr.trim().split('\n').slice(-8).join(' ') || `the Temporal CLI script exited with ${code}`));
    });
  });
}

interface ServerRecord {
  pid: number;
  port: number;
  uiPort?: number;
  /** The fleetpatch process that stops it. */
  ownerPid: number;
}

export interface DevServerOptions {
  cli: string;
  namespace: string;
  logger: Logger;
  /** Where the SQLite file and pid record live; omit for an in-memory server (tests). */
  stateDir?: string;
  port: number;
  /** Web UI port; omit for a headless server. */
  uiPort?: number;
  /** Extra `--dynamic-config-value k=v` settings. */
  dynamicConfig?: Record<string, string | number | boolean>;
}

export async function startTemporalDevServer(opts: DevServerOptions): Promise<TemporalDevServer> {
  const { logger } = opts;
  const recordFile = opts.stateDir ? path.join(opts.stateDir, 'server.json') : undefined;

  // A server another fleetpatch process runs (e.g. `fleetpatch services`) is shared, not stopped.
  // One left behind by a run that was killed with SIGKILL is adopted (stopped when we exit), or
  // cleared away when it no longer answers, so runs never pile up servers.
  if (recordFile && existsSync(recordFile)) {
    const record = JSON.parse(await readFile(recordFile, 'utf8')) as ServerRecord;
    if (isAlive(record.pid) && (await isListening(record.port))) {
      const address = `127.0.0.1:${record.port}`;
      if (await isServing(address, opts.namespace)) {
        if (record.ownerPid !== process.pid && isAlive(record.ownerPid)) {
          logger.info({ address, owner: record.ownerPid }, 'using the Temporal dev server another fleetpatch process runs');
          return { address, ...(record.uiPort ? { uiUrl: `http://127.0.0.1:${record.uiPort}` } : {}), startedHere: false, stop: async () => {} };
        }
        logger.info({ address, pid: record.pid }, 'adopting the Temporal dev server left running by an earlier run');
        await writeFile(recordFile, JSON.stringify({ ...record, ownerPid: process.pid } satisfies ServerRecord));
        return handle(address, record.uiPort, record.pid, true, recordFile, logger);
      }
      killGroup(record.pid, 'SIGKILL');
    }
    await rm(recordFile, { force: true });
  }

  const port = await choosePort(opts.port);
  const uiPort = opts.uiPort === undefined ? undefined : await choosePort(opts.uiPort === port ? 0 : opts.uiPort);
  const args = ['server', 'start-dev', '--ip', '127.0.0.1', '--port', String(port), '--namespace', opts.namespace, '--log-level', 'warn', '--log-format', 'json'];
  if (uiPort === undefined) args.push('--headless');
  else args.push('--ui-port', String(uiPort));
  if (opts.stateDir) {
    await mkdir(opts.stateDir, { recursive: true });
    args.push('--db-filename', path.join(opts.stateDir, 'temporal.db'), '--sqlite-pragma', 'journal_mode=WAL', '--sqlite-pragma', 'synchronous=OFF');
  }
  for (const [key, value] of Object.entries(opts.dynamicConfig ?? {})) args.push('--dynamic-config-value', `${key}=${JSON.stringify(value)}`);

  const started = Date.now();
  const logPath = opts.stateDir ? path.join(opts.stateDir, 'server.log') : undefined;
  const logFd = logPath ? openSync(logPath, 'a') : 'ignore';
  const child: ChildProcess = spawn(opts.cli, args, { detached: true, stdio: ['ignore', logFd, logFd] });
  if (typeof logFd === 'number') closeSync(logFd);
  let exited: number | null | undefined;
  child.on('exit', (code) => (exited = code));
  child.on('error', (e) => logger.error({ err: e.message }, 'Temporal dev server failed to start'));
  const address = `127.0.0.1:${port}`;
  const ready = await waitFor(async () => exited === undefined && (await isListening(port)) && (await isServing(address, opts.namespace)), 60_000, 200);
  if (!ready) {
    killGroup(child.pid, 'SIGKILL');
    const tail = logPath ? (await readFile(logPath, 'utf8').catch(() => '')).trim().split('\n').slice(-5).join(' | ') : '';
    throw new FleetpatchError(
      'TEMPORAL_UNAVAILABLE',
      exited !== undefined ? `the Temporal dev server exited with code ${exited}${tail ? `: ${tail}` : ''}` : `the Temporal dev server did not accept connections on ${address} within 60 s`,
    );
  }
  child.unref();
  if (recordFile) await writeFile(recordFile, JSON.stringify({ pid: child.pid!, port, ...(uiPort ? { uiPort } : {}), ownerPid: process.pid } satisfies ServerRecord));
  logger.info({ address, ui: uiPort ? `http://127.0.0.1:${uiPort}` : undefined, ms: Date.now() - started }, 'Temporal dev server started');
  return handle(address, uiPort, child.pid!, true, recordFile, logger);
}

function handle(address: string, uiPort: number | undefined, pid: number, startedHere: boolean, recordFile: string | undefined, logger: Logger): TemporalDevServer {
  return {
    address,
    ...(uiPort ? { uiUrl: `http://127.0.0.1:${uiPort}` } : {}),
    startedHere,
    stop: async () => {
      killGroup(pid, 'SIGTERM');
      if (!(await waitFor(async () => !isAlive(pid), 10_000))) killGroup(pid, 'SIGKILL');
      await sleep(50);
      if (recordFile) await rm(recordFile, { force: true });
      logger.info({ address }, 'Temporal dev server stopped');
    },
  };
}

export function killGroup(pid: number | undefined, signal: NodeJS.Signals): void {
  if (!pid) return;
  try {
    process.kill(-pid, signal);
  } catch {
    try {
      process.kill(pid, signal);
    } catch {
      // already gone
    }
  }
}

/** True when the frontend answers and the namespace exists. */
export async function isServing(address: string, namespace: string): Promise<boolean> {
  let connection: Connection | undefined;
  try {
    // Our own local server: plain gRPC (temporal-connection.ts opens every Temporal connection).
    connection = await connectTemporalClient({ address, security: PLAIN }, { connectTimeout: 1_000 });
    await connection.workflowService.describeNamespace({ namespace });
    return true;
  } catch {
    return false;
  } finally {
    await connection?.close().catch(() => undefined);
  }
}

/** `temporal --version`, for logs and the closing notes. */
export async function temporalCliVersion(cli: string): Promise<string> {
  return (await run(cli, ['--version'])).stdout.trim();
}
