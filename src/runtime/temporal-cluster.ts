/**
 * Cluster mode: the Temporal server itself (go.temporal.io/server, built by
 * scripts/temporal-server.sh, the one place its version is pinned) on PostgreSQL, with several
 * history shards (config/temporal/cluster.yaml), for users who run several fleetpatch workers.
 * The dev server stays the default; this is chosen with FLEETPATCH_TEMPORAL=cluster or
 * `fleetpatch services --cluster`.
 *
 * Same habits as the dev server (temporal-server.ts): state in <data dir>/temporal-cluster/
 * (pid record server.json, log server.log), its own process group, shared with another live
 * fleetpatch process that started it, adopted when its starter died, cleared when it no longer
 * answers. Its two databases (`<db>` and `<db>_visibility`) live on the PostgreSQL fleetpatch
 * uses (embedded, or DATABASE_URL's server) and are created and migrated with the server's own
 * schema tool on every start (idempotent: only newer versions are applied).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, existsSync, openSync } from 'node:fs';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Connection } from '@temporalio/client';
import { PLAIN, connectTemporalClient } from './temporal-connection.ts';
import { msToTs } from '@temporalio/common';
import pg from 'pg';
import { FleetpatchError } from '../errors.ts';
import type { Logger } from './logger.ts';
import { isAlive, isListening, sleep, waitFor } from './process-utils.ts';
import { isServing, killGroup, type TemporalDevServer } from './temporal-server.ts';

const PROJECT_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const SERVER_SCRIPT = path.join(PROJECT_ROOT, 'scripts', 'temporal-server.sh');
/** The server's config directory (cluster.yaml, dynamicconfig.yaml), kept in the repository. */
export const CLUSTER_CONFIG_DIR = path.join(PROJECT_ROOT, 'config', 'temporal');
/** Must match numHistoryShards in config/temporal/cluster.yaml (fixed once the databases exist). */
export const CLUSTER_HISTORY_SHARDS = 4;
/** How long a namespace's closed workflows are kept. */
const RETENTION_SECONDS = 3 * 24 * 3600;

export interface ClusterBinaries {
  server: string;
  sqlTool: string;
  /** <module>/schema/postgresql/v12 of the pinned server module. */
  schemaDir: string;
  version: string;
}

/** Runs scripts/temporal-server.sh (building on first use, ~5 min) and returns its answer. */
function serverScript(logger: Logger, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn('bash', [SERVER_SCRIPT, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
      for (const line of d.toString().split('\n')) if (line.trim()) logger.info({ component: 'temporal-server-build' }, line.trim());
    });
    child.on('error', (e) => reject(new FleetpatchError('TOOL_MISSING', `cannot run ${SERVER_SCRIPT}: ${e.message}`)));
    child.on('close', (code) => {
      const out = stdout.trim().split('\n').pop() ?? '';
      if (code === 0 && out) resolve(out);
      else reject(new FleetpatchError('TOOL_MISSING', stderr.trim().split('\n').slice(-8).join(' ') || `${SERVER_SCRIPT} exited with ${code}`));
    });
  });
}

/** The server, its schema tool and the schema files, through the one script that pins them. */
export async function resolveClusterBinaries(logger: Logger): Promise<ClusterBinaries> {
  const server = await serverScript(logger, []);
  const [sqlTool, schemaDir, version] = await Promise.all([serverScript(logger, ['--sql-tool']), serverScript(logger, ['--schema-dir']), serverScript(logger, ['--version'])]);
  return { server, sqlTool, schemaDir, version };
}

export interface ClusterDatabase {
  host: string;
  port: number;
  user: string;
  password: string;
  /** The history/executions database; visibility is `<name>_visibility`. */
  name: string;
  /** A database that exists on that server, for CREATE DATABASE (the one DATABASE_URL names). */
  adminDatabase: string;
}

/** The cluster's database settings on the server a postgres:// URL names. */
export function clusterDatabaseFromUrl(url: string, name: string): ClusterDatabase {
  const u = new URL(url);
  return {
    host: u.hostname.replace(/^\[(.*)\]$/, '$1'),
    port: Number(u.port || 5432),
    user: decodeURIComponent(u.username || 'postgres'),
    password: decodeURIComponent(u.password),
    name,
    adminDatabase: decodeURIComponent(u.pathname.replace(/^\//, '')) || 'postgres',
  };
}

const visibilityName = (db: ClusterDatabase) => `${db.name}_visibility`;

/**
 * Creates both databases when missing and brings their schemas to the pinned server's version
 * with its schema tool: `setup-schema -v 0.0` once, then `update-schema` (a no-op when current).
 */
export async function setupClusterSchemas(bins: ClusterBinaries, db: ClusterDatabase, logger: Logger): Promise<void> {
  const client = new pg.Client({ host: db.host, port: db.port, user: db.user, password: db.password, database: db.adminDatabase });
  await client.connect();
  try {
    for (const name of [db.name, visibilityName(db)]) {
      const exists = await client.query('SELECT 1 FROM pg_database WHERE datname = $1', [name]);
      if (exists.rowCount === 0) {
        await client.query(`CREATE DATABASE ${pg.escapeIdentifier(name)}`).catch((e: { code?: string }) => {
          if (e.code !== '42P04') throw e; // created meanwhile by a concurrent starter
        });
        logger.info({ database: name }, 'created a database for the Temporal cluster');
      }
    }
  } finally {
    await client.end();
  }
  for (const [name, kind] of [
    [db.name, 'temporal'],
    [visibilityName(db), 'visibility'],
  ] as const) {
    const env = { ...process.env, SQL_PLUGIN: 'postgres12', SQL_HOST: db.host, SQL_PORT: String(db.port), SQL_USER: db.user, SQL_PASSWORD: db.password, SQL_DATABASE: name };
    const c = new pg.Client({ host: db.host, port: db.port, user: db.user, password: db.password, database: name });
    await c.connect();
    let hasVersion: boolean;
    try {
      hasVersion = (await c.query("SELECT to_regclass('public.schema_version') IS NOT NULL AS ok")).rows[0].ok as boolean;
    } finally {
      await c.end();
    }
    if (!hasVersion) await runTool(bins.sqlTool, ['setup-schema', '-v', '0.0'], env, `setup-schema of ${name}`);
    await runTool(bins.sqlTool, ['update-schema', '-d', path.join(bins.schemaDir, kind, 'versioned')], env, `update-schema of ${name}`);
  }
}

function runTool(file: string, args: string[], env: NodeJS.ProcessEnv, what: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    child.on('error', (e) => reject(new FleetpatchError('TOOL_MISSING', `cannot run ${file}: ${e.message}`)));
    child.on('close', (code) => {
      if (code === 0) resolve();
      else reject(new FleetpatchError('TEMPORAL_UNAVAILABLE', `the Temporal schema tool failed (${what}, exit ${code}): ${out.trim().split('\n').slice(-3).join(' | ')}`));
    });
  });
}

/** The ports the server binds: the frontend's gRPC port is the one clients use. */
export interface ClusterPorts {
  frontend: number;
  history: number;
  matching: number;
  worker: number;
  frontendHttp: number;
  frontendMembership: number;
  historyMembership: number;
  matchingMembership: number;
  workerMembership: number;
}

const PORT_OFFSETS: Record<keyof ClusterPorts, number> = {
  frontend: 0,
  history: 1,
  matching: 2,
  worker: 3,
  frontendHttp: 4,
  frontendMembership: 5,
  historyMembership: 6,
  matchingMembership: 7,
  workerMembership: 8,
};

/**
 * `base`, base+1, ... base+8 where free; otherwise (and for base 0) free ports below 32768: the
 * server records its ports in a PostgreSQL smallint column (cluster_membership), so the kernel's
 * ephemeral ports (32768 and up) make it fail at start.
 */
async function choosePorts(base: number): Promise<ClusterPorts> {
  const taken = new Set<number>();
  const out = {} as ClusterPorts;
  for (const [key, offset] of Object.entries(PORT_OFFSETS) as [keyof ClusterPorts, number][]) {
    let port = base === 0 ? 0 : base + offset;
    if (port === 0 || port > MAX_PORT || taken.has(port) || !(await bindable(port))) {
      do port = 10_000 + Math.floor(Math.random() * (MAX_PORT - 10_000));
      while (taken.has(port) || !(await bindable(port)));
    }
    taken.add(port);
    out[key] = port;
  }
  return out;
}

const MAX_PORT = 32_767;

/** Whether 127.0.0.1:port can be bound now (a small race remains until the server binds it). */
function bindable(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.unref();
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
}

interface ClusterRecord {
  pid: number;
  port: number;
  ownerPid: number;
  database: string;
}

export interface ClusterOptions {
  namespace: string;
  logger: Logger;
  /** <data dir>/temporal-cluster: pid record and log. */
  stateDir: string;
  /** The frontend's gRPC port (the others follow it); 0: free ports. */
  port: number;
  database: ClusterDatabase;
  /** Already resolved (tests, the bench); otherwise through scripts/temporal-server.sh. */
  binaries?: ClusterBinaries;
  /** The server's own log level (default warn). */
  logLevel?: 'debug' | 'info' | 'warn' | 'error';
}

export async function startTemporalCluster(opts: ClusterOptions): Promise<TemporalDevServer> {
  const { logger } = opts;
  await mkdir(opts.stateDir, { recursive: true });
  const recordFile = path.join(opts.stateDir, 'server.json');

  if (existsSync(recordFile)) {
    const record = JSON.parse(await readFile(recordFile, 'utf8')) as ClusterRecord;
    if (isAlive(record.pid) && (await isListening(record.port))) {
      const address = `127.0.0.1:${record.port}`;
      if (await isServing(address, opts.namespace)) {
        if (record.ownerPid !== process.pid && isAlive(record.ownerPid)) {
          logger.info({ address, owner: record.ownerPid }, 'using the Temporal cluster another fleetpatch process runs');
          return { address, startedHere: false, stop: async () => {} };
        }
        logger.info({ address, pid: record.pid }, 'adopting the Temporal cluster left running by an earlier run');
        await writeFile(recordFile, JSON.stringify({ ...record, ownerPid: process.pid } satisfies ClusterRecord));
        return handle(address, record.pid, recordFile, logger);
      }
      killGroup(record.pid, 'SIGKILL');
    }
    await rm(recordFile, { force: true });
  }

  const started = Date.now();
  const bins = opts.binaries ?? (await resolveClusterBinaries(logger));
  await setupClusterSchemas(bins, opts.database, logger).catch((e: Error) => {
    throw e instanceof FleetpatchError ? e : new FleetpatchError('DATABASE_UNAVAILABLE', `cannot set up the Temporal cluster's databases on ${opts.database.host}:${opts.database.port}: ${e.message}`);
  });
  const ports = await choosePorts(opts.port);
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    FLEETPATCH_CLUSTER_LOG_LEVEL: opts.logLevel ?? 'warn',
    FLEETPATCH_CLUSTER_DB_HOST: opts.database.host,
    FLEETPATCH_CLUSTER_DB_PORT: String(opts.database.port),
    FLEETPATCH_CLUSTER_DB_USER: opts.database.user,
    FLEETPATCH_CLUSTER_DB_PASSWORD: opts.database.password,
    FLEETPATCH_CLUSTER_DB: opts.database.name,
    FLEETPATCH_CLUSTER_VISIBILITY_DB: visibilityName(opts.database),
    FLEETPATCH_CLUSTER_DYNAMIC_CONFIG: path.join(CLUSTER_CONFIG_DIR, 'dynamicconfig.yaml'),
    FLEETPATCH_CLUSTER_PORT_FRONTEND: String(ports.frontend),
    FLEETPATCH_CLUSTER_PORT_FRONTEND_HTTP: String(ports.frontendHttp),
    FLEETPATCH_CLUSTER_PORT_FRONTEND_MEMBERSHIP: String(ports.frontendMembership),
    FLEETPATCH_CLUSTER_PORT_HISTORY: String(ports.history),
    FLEETPATCH_CLUSTER_PORT_HISTORY_MEMBERSHIP: String(ports.historyMembership),
    FLEETPATCH_CLUSTER_PORT_MATCHING: String(ports.matching),
    FLEETPATCH_CLUSTER_PORT_MATCHING_MEMBERSHIP: String(ports.matchingMembership),
    FLEETPATCH_CLUSTER_PORT_WORKER: String(ports.worker),
    FLEETPATCH_CLUSTER_PORT_WORKER_MEMBERSHIP: String(ports.workerMembership),
  };
  const args = ['--root', '/', '--config', CLUSTER_CONFIG_DIR, '--env', 'cluster', '--allow-no-auth', 'start'];
  const logPath = path.join(opts.stateDir, 'server.log');
  const logFd = openSync(logPath, 'a');
  const child: ChildProcess = spawn(bins.server, args, { detached: true, env, cwd: opts.stateDir, stdio: ['ignore', logFd, logFd] });
  closeSync(logFd);
  let exited: number | null | undefined;
  child.on('exit', (code) => (exited = code));
  child.on('error', (e) => logger.error({ err: e.message }, 'Temporal cluster failed to start'));
  const address = `127.0.0.1:${ports.frontend}`;
  const fail = async (why: string): Promise<never> => {
    killGroup(child.pid, 'SIGKILL');
    const tail = logTail(await readFile(logPath, 'utf8').catch(() => ''));
    throw new FleetpatchError('TEMPORAL_UNAVAILABLE', `${why}${tail ? `; its log (${logPath}) ends: ${tail}` : ''}`);
  };
  // The rings form within ~15 s; the first seconds log "Not enough hosts", which is normal.
  const up = await waitFor(async () => exited !== undefined || ((await isListening(ports.frontend)) && (await ready(address))), 120_000, 250);
  if (exited !== undefined) return fail(`the Temporal cluster exited with code ${exited}`);
  if (!up) return fail(`the Temporal cluster did not become healthy on ${address} within 120 s`);
  await ensureNamespace(address, opts.namespace).catch((e: Error) => fail(`cannot create namespace "${opts.namespace}" on the Temporal cluster: ${e.message}`));
  if (!(await waitFor(() => namespaceUsable(address, opts.namespace), 60_000, 500))) return fail(`namespace "${opts.namespace}" did not become usable on ${address} within 60 s`);
  child.unref();
  await writeFile(recordFile, JSON.stringify({ pid: child.pid!, port: ports.frontend, ownerPid: process.pid, database: opts.database.name } satisfies ClusterRecord));
  logger.info({ address, shards: CLUSTER_HISTORY_SHARDS, database: `${opts.database.host}:${opts.database.port}/${opts.database.name}`, log: logPath, ms: Date.now() - started }, 'Temporal cluster started');
  return handle(address, child.pid!, recordFile, logger);
}

/** The last lines of the server's JSON log, message and error only (no Go stack traces). */
function logTail(text: string): string {
  return text
    .trim()
    .split('\n')
    .slice(-3)
    .map((line) => {
      try {
        const j = JSON.parse(line) as { level?: string; msg?: string; error?: string };
        return `${j.level ?? '?'}: ${j.msg ?? ''}${j.error ? ` (${j.error})` : ''}`;
      } catch {
        return line.slice(0, 300);
      }
    })
    .join(' | ');
}

function handle(address: string, pid: number, recordFile: string, logger: Logger): TemporalDevServer {
  return {
    address,
    startedHere: true,
    stop: async () => {
      killGroup(pid, 'SIGTERM');
      if (!(await waitFor(async () => !isAlive(pid), 15_000))) killGroup(pid, 'SIGKILL');
      await sleep(50);
      await rm(recordFile, { force: true });
      logger.info({ address }, 'Temporal cluster stopped');
    },
  };
}

async function withConnection<T>(address: string, fn: (c: Connection) => Promise<T>): Promise<T> {
  const connection = await connectTemporalClient({ address, security: PLAIN }, { connectTimeout: 2_000 });
  try {
    return await fn(connection);
  } finally {
    await connection.close().catch(() => undefined);
  }
}

/** The frontend says SERVING (what `temporal operator cluster health` asks). */
async function ready(address: string): Promise<boolean> {
  try {
    return await withConnection(address, async (c) => {
      const r = await c.healthService.check({ service: 'temporal.api.workflowservice.v1.WorkflowService' });
      return r.status === 1;
    });
  } catch {
    return false;
  }
}

async function ensureNamespace(address: string, namespace: string): Promise<void> {
  await withConnection(address, async (c) => {
    for (let attempt = 0; ; attempt++) {
      try {
        await c.workflowService.describeNamespace({ namespace });
        return;
      } catch (e) {
        if ((e as { code?: number }).code !== 5 && attempt < 40) {
          await sleep(500); // not ready yet
          continue;
        }
        if ((e as { code?: number }).code !== 5) throw e;
      }
      try {
        await c.workflowService.registerNamespace({ namespace, workflowExecutionRetentionPeriod: msToTs(RETENTION_SECONDS * 1000) });
        return;
      } catch (e) {
        if ((e as { code?: number }).code === 6) return; // ALREADY_EXISTS: a concurrent starter made it
        if (attempt >= 40) throw e;
        await sleep(500);
      }
    }
  });
}

/**
 * A request that goes through the history ring for this namespace answers "workflow not found":
 * the namespace is known to every service and the history shards are owned.
 */
async function namespaceUsable(address: string, namespace: string): Promise<boolean> {
  try {
    return await withConnection(address, async (c) => {
      try {
        await c.workflowService.getWorkflowExecutionHistory({ namespace, execution: { workflowId: `fleetpatch-probe-${randomBytes(6).toString('hex')}` } });
        return true;
      } catch (e) {
        const err = e as { code?: number; details?: string; message?: string };
        return err.code === 5 && !/namespace/i.test(`${err.details ?? ''} ${err.message ?? ''}`);
      }
    });
  } catch {
    return false;
  }
}
