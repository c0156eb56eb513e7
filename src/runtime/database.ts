/**
 * The PostgreSQL connection: a DATABASE_URL server, or the embedded one. Connection failures
 * become DATABASE_UNAVAILABLE with the address in words, not a raw ECONNREFUSED stack.
 *
 * TLS follows libpq, not node-postgres: `sslmode` (disable, allow, prefer, require, verify-ca,
 * verify-full; default prefer), `sslrootcert` (a file, or `system` for the system's CAs),
 * `sslcert` and `sslkey`, from the URL's query or else PGSSLMODE, PGSSLROOTCERT, PGSSLCERT,
 * PGSSLKEY, else libpq's files in ~/.postgresql. (node-postgres alone would read `sslmode=require`
 * as verify-full and ignore PGSSLROOTCERT.) Files are read and checked when the pool is opened: a
 * missing one, a certificate out of its validity or a key of another certificate is one
 * TLS_MATERIAL_INVALID naming the setting; a server whose certificate the CA does not sign, or
 * that is for another host, is TLS_REFUSED.
 */
import { existsSync, readFileSync } from 'node:fs';
import { checkServerIdentity, type ConnectionOptions, type PeerCertificate } from 'node:tls';
import path from 'node:path';
import os from 'node:os';
import pg from 'pg';
import { FleetpatchError } from '../errors.ts';
import { maskSecrets } from '../secrets.ts';
import { checkCertificates, checkKeyPair } from './tls-material.ts';

export type Pool = pg.Pool;
export type PoolClient = pg.PoolClient;

export const SSL_MODES = ['disable', 'allow', 'prefer', 'require', 'verify-ca', 'verify-full'] as const;
export type SslMode = (typeof SSL_MODES)[number];

/** A TLS file setting: where it came from (`sslrootcert in DATABASE_URL`, `PGSSLCERT`, a default) and its path. */
export interface TlsFile {
  path: string;
  origin: string;
  /** A libpq default file (~/.postgresql/...): used when it exists, not an error when it does not. */
  implicit: boolean;
}

/** What the URL and the environment say about TLS, before any file is read (pure). */
export interface PostgresTls {
  mode: SslMode;
  modeOrigin: string;
  /** 'system': the system's CAs. */
  rootCert?: TlsFile | 'system';
  cert?: TlsFile;
  key?: TlsFile;
  /** The host name verify-full checks the certificate against. */
  host: string;
  /** The URL without the ssl* parameters (node-postgres would read them its own way). */
  connectionString: string;
}

/** node-postgres's `ssl` option: false, or tls.connect options. */
export type PgSsl = false | ConnectionOptions;

const SSL_PARAMS = ['sslmode', 'sslrootcert', 'sslcert', 'sslkey'] as const;

function invalid(message: string): FleetpatchError {
  return new FleetpatchError('CONFIG_INVALID', maskSecrets(message));
}

/** The libpq reading of a URL's and the environment's TLS settings. Pure: no file is touched. */
export function resolvePostgresTls(url: string, env: Record<string, string | undefined> = process.env, home: string = env.HOME || os.homedir()): PostgresTls {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw invalid(`DATABASE_URL=${JSON.stringify(maskSecrets(url))}: not a URL`);
  }
  for (const legacy of ['ssl', 'uselibpqcompat', 'sslpassword', 'sslnegotiation']) {
    if (u.searchParams.has(legacy)) {
      throw invalid(`DATABASE_URL: the parameter "${legacy}" is not taken; TLS is set with sslmode (${SSL_MODES.join(', ')}), sslrootcert, sslcert and sslkey, as for libpq`);
    }
  }
  const param = (name: (typeof SSL_PARAMS)[number], envName: string): { value: string; origin: string } | undefined => {
    const all = u.searchParams.getAll(name);
    if (all.length > 1) throw invalid(`DATABASE_URL: ${name} is given ${all.length} times`);
    if (all.length === 1) {
      if (all[0] === '') throw invalid(`DATABASE_URL: ${name} is empty`);
      return { value: all[0]!, origin: `${name} in DATABASE_URL` };
    }
    const v = env[envName];
    return v ? { value: v, origin: envName } : undefined;
  };
  const bad = (v: string) => v.includes('\0') || /[\n\r]/.test(v);
  const modeParam = param('sslmode', 'PGSSLMODE');
  const mode = (modeParam?.value ?? 'prefer') as SslMode;
  if (!SSL_MODES.includes(mode)) {
    throw invalid(`${modeParam!.origin}=${JSON.stringify(modeParam!.value.slice(0, 40))}: must be one of ${SSL_MODES.join(', ')} (as for libpq; "no-verify" is require)`);
  }
  const file = (name: 'sslrootcert' | 'sslcert' | 'sslkey', envName: string, fallback: string): TlsFile => {
    const p = param(name, envName);
    if (p && bad(p.value)) throw invalid(`${p.origin}: a file path must not hold NUL or line breaks`);
    return p ? { path: path.resolve(p.value), origin: `${p.origin}=${p.value}`, implicit: false } : { path: path.join(home, '.postgresql', fallback), origin: `the default ~/.postgresql/${fallback}`, implicit: true };
  };
  const root = param('sslrootcert', 'PGSSLROOTCERT');
  let rootCert: PostgresTls['rootCert'];
  if (root?.value === 'system') {
    // libpq 16+: the system's CAs are for verify-full only (any public CA signs someone's server).
    if (mode !== 'verify-full') throw invalid(`${root.origin}=system needs sslmode=verify-full (${modeParam?.origin ?? 'the default'} is ${mode}): the system's CAs sign certificates for every host on the Internet`);
    rootCert = 'system';
  } else {
    rootCert = file('sslrootcert', 'PGSSLROOTCERT', 'root.crt');
  }
  const cert = file('sslcert', 'PGSSLCERT', 'postgresql.crt');
  const key = file('sslkey', 'PGSSLKEY', 'postgresql.key');
  for (const name of SSL_PARAMS) u.searchParams.delete(name);
  const host = decodeURIComponent(u.hostname.replace(/^\[(.*)\]$/, '$1'));
  return { mode, modeOrigin: modeParam?.origin ?? 'the default (prefer)', ...(rootCert ? { rootCert } : {}), cert, key, host, connectionString: u.toString() };
}

function readTlsFile(f: TlsFile, what: string): Buffer {
  try {
    return readFileSync(f.path);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT' ? 'no such file' : code === 'EISDIR' ? 'it is a directory' : code === 'EACCES' ? 'permission denied' : `cannot be read (${code ?? (e as Error).message})`;
    throw new FleetpatchError('TLS_MATERIAL_INVALID', `${f.origin}: the ${what} file: ${why}`, { path: f.path });
  }
}

/**
 * The `ssl` options to try, in order: libpq's allow tries plain first and TLS second, prefer the
 * other way round; every other mode has one. Reads and checks the files (a libpq default file is
 * used when it exists).
 */
export function sslAttempts(tls: PostgresTls, now: Date = new Date()): PgSsl[] {
  if (tls.mode === 'disable') return [false];
  const exists = (f: TlsFile | undefined): boolean => f !== undefined && (!f.implicit || existsSync(f.path));
  const client: ConnectionOptions = {};
  if (tls.cert && exists(tls.cert)) {
    if (!tls.key || !exists(tls.key)) throw new FleetpatchError('TLS_MATERIAL_INVALID', `${tls.cert.origin}: a client certificate needs its private key (sslkey or PGSSLKEY): ${tls.key?.origin ?? 'none'} is not there`);
    const cert = readTlsFile(tls.cert, 'client certificate');
    const key = readTlsFile(tls.key, 'client private key');
    checkKeyPair(cert, key, tls.cert.origin, tls.key.origin, now);
    client.cert = cert;
    // node-postgres hides `key` from logs the same way (non-enumerable).
    Object.defineProperty(client, 'key', { value: key, enumerable: false });
  } else if (tls.key && !tls.key.implicit) {
    throw new FleetpatchError('TLS_MATERIAL_INVALID', `${tls.key.origin}: a client private key needs its certificate (sslcert or PGSSLCERT)`);
  }
  const withClient = (o: ConnectionOptions): ConnectionOptions => {
    const out: ConnectionOptions = { ...o, ...client };
    if ((client as { key?: Buffer }).key) Object.defineProperty(out, 'key', { value: (client as { key?: Buffer }).key, enumerable: false });
    return out;
  };
  let verify: SslMode = tls.mode;
  let ca: Buffer | undefined;
  const root = tls.rootCert;
  if (tls.mode === 'verify-ca' || tls.mode === 'verify-full') {
    if (root !== 'system') {
      if (!root || !existsSync(root.path)) {
        throw new FleetpatchError(
          'TLS_MATERIAL_INVALID',
          `sslmode=${tls.mode} (${tls.modeOrigin}) needs the CA that signs the server's certificate: ${root?.origin ?? 'sslrootcert'} (${root?.path}) does not exist; set sslrootcert in DATABASE_URL or PGSSLROOTCERT, sslrootcert=system for the system's CAs, or a weaker sslmode`,
        );
      }
      ca = readTlsFile(root, 'root CA certificate');
      checkCertificates(ca, root.origin, now);
    }
  } else if (tls.mode === 'require' && root && root !== 'system' && exists(root)) {
    // libpq: require with a root CA file behaves as verify-ca.
    ca = readTlsFile(root, 'root CA certificate');
    checkCertificates(ca, root.origin, now);
    verify = 'verify-ca';
  }
  let encrypted: ConnectionOptions;
  if (verify === 'verify-full') {
    const host = tls.host;
    encrypted = withClient({ rejectUnauthorized: true, ...(ca ? { ca } : {}), checkServerIdentity: (_name: string, cert: PeerCertificate) => checkServerIdentity(host, cert) });
  } else if (verify === 'verify-ca') {
    encrypted = withClient({ rejectUnauthorized: true, ca, checkServerIdentity: () => undefined });
  } else {
    encrypted = withClient({ rejectUnauthorized: false });
  }
  if (tls.mode === 'allow') return [false, encrypted];
  if (tls.mode === 'prefer') return [encrypted, false];
  return [encrypted];
}

/** The sslmode words of an error: which side refused TLS, or why the certificate is not trusted. */
export function explainPostgresFailure(e: unknown, url: string, tls: PostgresTls | undefined, ssl: PgSsl | undefined): FleetpatchError {
  if (e instanceof FleetpatchError) return e;
  const err = e as Error & { code?: string };
  const msg = err.message ?? String(e);
  const at = `PostgreSQL at ${redactUrl(url)}`;
  const mode = tls ? `sslmode=${tls.mode} (${tls.modeOrigin})` : 'TLS';
  const ca = tls?.rootCert === 'system' ? "the system's CAs" : tls?.rootCert ? `the CA of ${tls.rootCert.origin}` : 'the CA given';
  if (/does not support SSL/i.test(msg)) return new FleetpatchError('TLS_REFUSED', `${at}: the server does not accept TLS, and ${mode} requires it`);
  if (/self[- ]signed|unable to (?:verify|get local issuer)|UNABLE_TO_VERIFY_LEAF_SIGNATURE|certificate signature failure|unknown ca/i.test(msg) || err.code === 'SELF_SIGNED_CERT_IN_CHAIN' || err.code === 'DEPTH_ZERO_SELF_SIGNED_CERT') {
    return new FleetpatchError('TLS_REFUSED', `${at}: the server's certificate is not signed by ${ca} (${mode}): ${maskSecrets(msg)}`);
  }
  if (err.code === 'ERR_TLS_CERT_ALTNAME_INVALID' || /altnames|Hostname\/IP does not match/i.test(msg)) {
    return new FleetpatchError('TLS_REFUSED', `${at}: the server's certificate is not for the host "${tls?.host}" (${mode} checks the name; verify-ca does not): ${maskSecrets(msg)}`);
  }
  if (err.code === 'CERT_HAS_EXPIRED' || err.code === 'CERT_NOT_YET_VALID') return new FleetpatchError('TLS_REFUSED', `${at}: the server's certificate is expired or not yet valid: ${maskSecrets(msg)}`);
  if (ssl && /certificate required|bad certificate|alert|handshake/i.test(msg)) {
    return new FleetpatchError('TLS_REFUSED', `${at}: the server refused the TLS handshake (${tls?.cert && !tls.cert.implicit ? `client certificate ${tls.cert.origin}` : 'no client certificate: set sslcert and sslkey'}): ${maskSecrets(msg)}`);
  }
  return new FleetpatchError('DATABASE_UNAVAILABLE', `cannot reach ${at}: ${maskSecrets(msg)}`);
}

/**
 * A pool for `url`. `ssl` is the option openPool negotiated; without it, the first attempt of the
 * URL's sslmode is used (for allow and prefer no second attempt: callers that need libpq's fallback
 * use openPool).
 */
export function createPool(url: string, opts: { max?: number; applicationName?: string; ssl?: PgSsl } = {}): pg.Pool {
  const tls = resolvePostgresTls(url);
  const pool = new pg.Pool({
    connectionString: tls.connectionString,
    // Always given: unset, node-postgres would read PGSSLMODE its own way.
    ssl: opts.ssl ?? firstAttempt(tls),
    max: opts.max ?? 10,
    application_name: opts.applicationName ?? 'fleetpatch',
    connectionTimeoutMillis: 10_000,
  });
  // A client losing its connection must not crash the process: an idle one reports to the pool,
  // a checked-out one to itself (pg emits 'error' on it, and an unheard 'error' event is fatal in
  // Node). Its query fails with the error; the next checkout reconnects.
  pool.on('error', () => undefined);
  pool.on('connect', (client) => {
    client.on('error', () => undefined);
  });
  return pool;
}

function firstAttempt(tls: PostgresTls): PgSsl {
  // The sync path cannot fall back: allow and prefer start plain here (what allow tries first).
  if (tls.mode === 'allow' || tls.mode === 'prefer') return false;
  return sslAttempts(tls)[0]!;
}

/** Whether a failed attempt is one the next attempt of allow/prefer answers. */
function tlsNegotiationFailure(e: unknown): boolean {
  const err = e as Error & { code?: string };
  // prefer: the server said N to SSLRequest; allow: pg_hba wants hostssl ("no encryption").
  return /does not support SSL/i.test(err.message) || (err.code === '28000' && /no encryption/i.test(err.message));
}

/**
 * A pool for `url` with libpq's sslmode semantics: the files read and checked, and for allow and
 * prefer the one that the server accepts (decided once, when the pool is opened). Proves the
 * server answers; throws DATABASE_UNAVAILABLE (retryable), TLS_REFUSED or TLS_MATERIAL_INVALID.
 */
export async function openPool(url: string, opts: { max?: number; applicationName?: string; env?: Record<string, string | undefined> } = {}): Promise<pg.Pool> {
  const tls = resolvePostgresTls(url, opts.env ?? process.env);
  const attempts = sslAttempts(tls);
  let lastError: unknown;
  for (const [i, ssl] of attempts.entries()) {
    const client = new pg.Client({ connectionString: tls.connectionString, ssl, connectionTimeoutMillis: 10_000, application_name: opts.applicationName ?? 'fleetpatch' });
    client.on('error', () => undefined);
    try {
      await client.connect();
      await client.query('SELECT 1');
      await client.end();
      return createPool(url, { ...opts, ssl });
    } catch (e) {
      await client.end().catch(() => undefined);
      lastError = e;
      if (!(i < attempts.length - 1 && tlsNegotiationFailure(e))) throw explainPostgresFailure(e, url, tls, ssl);
    }
  }
  throw explainPostgresFailure(lastError, url, tls, undefined);
}

/** The URL without its password, for logs and error messages: maskSecrets, under the name callers know. */
export function redactUrl(url: string): string {
  return maskSecrets(url);
}
