/**
 * The one place a Temporal connection is described and opened, for the worker (NativeConnection)
 * and for the CLI and API (Connection). Settings follow Temporal's own conventions
 * (@temporalio/envconfig): a TOML profile (TEMPORAL_CONFIG_FILE, else
 * ~/.config/temporalio/temporal.toml; TEMPORAL_PROFILE, else "default"), overridden setting by
 * setting by the environment (TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE, TEMPORAL_API_KEY, TEMPORAL_TLS,
 * TEMPORAL_TLS_*), so the same settings that drive the `temporal` CLI drive fleetpatch.
 *
 * Every certificate, key and CA is read and checked here, once, at start-up: a missing file, a PEM
 * that is none, an expired certificate or a key of another certificate is one TLS_MATERIAL_INVALID
 * naming the setting, instead of a handshake failure deep in a worker. A handshake the server
 * refuses becomes TLS_REFUSED saying which side did not trust the other. The API key and the
 * contents of key files never appear in a message: messages name settings and paths, not values.
 */
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { checkServerIdentity, connect as tlsConnect } from 'node:tls';
import path from 'node:path';
import { Connection } from '@temporalio/client';
import { loadClientConfigProfile, type ClientConfigProfile, type ConfigDataSource } from '@temporalio/envconfig';
import { NativeConnection } from '@temporalio/worker';
import { FleetpatchError } from '../errors.ts';
import { maskSecrets } from '../secrets.ts';
import { checkCertificates, checkKeyPair } from './tls-material.ts';

/** TLS towards the Temporal frontend; every piece already read and checked. */
export interface TemporalTls {
  /** The name the server's certificate must carry, when it is not the address's host. */
  serverName?: string;
  /** PEM bundle of the CAs to trust instead of the system's. */
  serverRootCA?: Buffer;
  /** Client certificate and key (mTLS): both or neither. */
  clientCert?: Buffer;
  clientKey?: Buffer;
  /** Where each piece came from (a setting and its path), for messages: never the contents. */
  origins: { serverRootCA?: string; clientCert?: string; clientKey?: string };
}

/** How to reach the Temporal frontend beyond its address: TLS, an API key, extra gRPC headers. */
export interface TemporalSecurity {
  /** false: plain gRPC. */
  tls: TemporalTls | false;
  /** Temporal Cloud's API key (sent as a bearer token; TLS is on whenever it is set). */
  apiKey?: string;
  metadata?: Record<string, string>;
}

export interface TemporalEndpoint {
  address: string;
  namespace: string;
  security: TemporalSecurity;
}

/** The profile's settings after env overrides: what loadConfig keeps (certificates already read). */
export interface TemporalProfileSettings {
  address?: string;
  /** The setting the address came from, for messages. */
  addressOrigin?: string;
  namespace?: string;
  security: TemporalSecurity;
  /** `profile "<name>" of <file>` when a profile file was read. */
  profile?: string;
}

export const PLAIN: TemporalSecurity = { tls: false };

const DEFAULT_PROFILE = 'default';

/** The TOML file envconfig would read, and whether the environment named it (then it must exist). */
function configFilePath(env: Record<string, string>): { file?: string; explicit: boolean } {
  if (env.TEMPORAL_CONFIG_FILE) return { file: env.TEMPORAL_CONFIG_FILE, explicit: true };
  const base = env.XDG_CONFIG_HOME && path.isAbsolute(env.XDG_CONFIG_HOME) ? env.XDG_CONFIG_HOME : env.HOME ? path.join(env.HOME, '.config') : undefined;
  return base ? { file: path.join(base, 'temporalio', 'temporal.toml'), explicit: false } : { explicit: false };
}

function invalid(message: string): FleetpatchError {
  return new FleetpatchError('CONFIG_INVALID', maskSecrets(message));
}

function readSettingFile(file: string, setting: string, what: string): Buffer {
  try {
    return readFileSync(file);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT' ? 'no such file' : code === 'EISDIR' ? 'it is a directory' : code === 'EACCES' ? 'permission denied' : `cannot be read (${code ?? (e as Error).message})`;
    throw new FleetpatchError('TLS_MATERIAL_INVALID', `${setting}=${file}: the ${what} file: ${why}`, { setting, path: file });
  }
}

/**
 * Reads the Temporal profile and the environment (env overrides the file, setting by setting) into
 * checked settings; `now` is for certificate validity.
 */
export function resolveTemporalSettings(given: Record<string, string | undefined>, now: Date = new Date()): TemporalProfileSettings {
  // Empty counts as unset, as in loadConfig (envconfig alone would take "" as a value).
  const env = Object.fromEntries(Object.entries(given).filter((e): e is [string, string] => e[1] !== undefined && e[1] !== ''));
  const { file, explicit } = configFilePath(env);
  let configText: string | undefined;
  if (file) {
    try {
      configText = readFileSync(file, 'utf8');
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (explicit || code !== 'ENOENT') throw invalid(`TEMPORAL_CONFIG_FILE=${file}: ${code === 'ENOENT' ? 'no such file' : `cannot be read (${code ?? (e as Error).message})`}`);
    }
  }
  const profileName = env.TEMPORAL_PROFILE ?? DEFAULT_PROFILE;
  const where = configText !== undefined ? `profile "${profileName}" of ${file}` : undefined;
  if (configText !== undefined && configText.includes('\0')) throw invalid(`${file}: contains a NUL character: not a TOML file`);
  if (env.TEMPORAL_TLS_DISABLE_HOST_VERIFICATION !== undefined) {
    throw invalid('TEMPORAL_TLS_DISABLE_HOST_VERIFICATION: not supported by the Temporal TypeScript SDK; name the certificate the server presents with TEMPORAL_TLS_SERVER_NAME instead');
  }
  if (env.TEMPORAL_TLS !== undefined && !['1', 'true', '0', 'false'].includes(env.TEMPORAL_TLS)) {
    throw invalid(`TEMPORAL_TLS=${JSON.stringify(env.TEMPORAL_TLS)}: must be true, false, 1 or 0`);
  }
  let profile: ClientConfigProfile;
  try {
    profile = loadClientConfigProfile({
      ...(configText !== undefined ? { configSource: { data: configText } } : { disableFile: env.TEMPORAL_PROFILE === undefined }),
      ...(env.TEMPORAL_PROFILE !== undefined ? { profile: env.TEMPORAL_PROFILE } : {}),
      configFileStrict: true,
      overrideEnvVars: env,
    });
  } catch (e) {
    // A TOML error quotes the offending line, which may hold the API key: only its first line and position.
    const err = e as Error & { line?: number; column?: number };
    const first = (err.message.split('\n')[0] ?? '').replace(/^Validation error: /, '');
    if (/^Profile '.*' not found/.test(err.message)) {
      throw invalid(`TEMPORAL_PROFILE=${profileName}: no such profile ${configText !== undefined ? `in ${file}` : `(no Temporal config file: set TEMPORAL_CONFIG_FILE)`}`);
    }
    const at = err.line !== undefined ? ` (line ${err.line}, column ${err.column})` : '';
    throw invalid(`${file ?? 'Temporal config'}: ${first}${at}`);
  }
  const origin = (envName: string, tomlKey: string): string => (env[envName] !== undefined ? envName : `${where ?? 'the profile'} (${tomlKey})`);

  const settings: TemporalProfileSettings = { security: PLAIN, ...(where ? { profile: where } : {}) };
  if (profile.address !== undefined) {
    const addressOrigin = origin('TEMPORAL_ADDRESS', 'address');
    if (typeof profile.address !== 'string' || !/^(?:[A-Za-z0-9.\-_]+|\[[0-9A-Fa-f:.]+\]):\d{1,5}$/.test(profile.address) || !validPort(profile.address)) {
      throw invalid(`${addressOrigin}=${JSON.stringify(String(profile.address))}: must be host:port, e.g. 127.0.0.1:7233 or my-ns.a1b2c.tmprl.cloud:7233`);
    }
    settings.address = profile.address;
    settings.addressOrigin = addressOrigin;
  }
  if (profile.namespace !== undefined) {
    if (typeof profile.namespace !== 'string' || profile.namespace === '' || /[\0-\x1f\x7f]/.test(profile.namespace)) {
      throw invalid(`${origin('TEMPORAL_NAMESPACE', 'namespace')}: must be a namespace name without control characters`);
    }
    settings.namespace = profile.namespace;
  }
  let apiKey: string | undefined;
  if (profile.apiKey !== undefined) {
    // It travels as an HTTP/2 header: visible ASCII only. The key itself is never shown.
    if (typeof profile.apiKey !== 'string' || !/^[\x21-\x7e]{1,16384}$/.test(profile.apiKey)) {
      throw invalid(`${origin('TEMPORAL_API_KEY', 'api_key')}: must be printable ASCII without spaces, at most 16 KiB (it is sent as a gRPC header); the value is not shown`);
    }
    apiKey = profile.apiKey;
  }
  const metadata = profile.grpcMeta && Object.keys(profile.grpcMeta).length > 0 ? profile.grpcMeta : undefined;
  if (metadata) {
    for (const [k, v] of Object.entries(metadata)) {
      if (!/^[a-z0-9\-_.]+$/.test(k) || typeof v !== 'string' || !/^[\x20-\x7e]*$/.test(v)) throw invalid(`gRPC header ${JSON.stringify(k)} (TEMPORAL_GRPC_META_* or grpc_meta): a header name of a-z 0-9 - _ . and a printable ASCII value`);
    }
  }
  const tlsSpec = profile.tls;
  let tls: TemporalTls | false = false;
  if (tlsSpec && tlsSpec.disabled === true) {
    if (apiKey !== undefined) throw invalid(`${origin('TEMPORAL_TLS', 'tls.disabled')} turns TLS off, but an API key is set: Temporal Cloud's API keys travel only over TLS`);
  } else if (tlsSpec || apiKey !== undefined) {
    tls = loadTls(
      {
        serverName: tlsSpec?.serverName,
        serverCACert: tlsSpec?.serverCACert,
        clientCert: tlsSpec?.clientCert,
        clientKey: tlsSpec?.clientKey,
      },
      env,
      where,
      now,
    );
  }
  const security: TemporalSecurity = { tls, ...(metadata ? { metadata } : {}) };
  if (apiKey !== undefined) hide(security, 'apiKey', apiKey);
  if (tls && tls.clientKey) hide(tls, 'clientKey', tls.clientKey);
  settings.security = security;
  return settings;
}

/**
 * A secret as a non-enumerable property: readable where it is used, but absent from JSON, from
 * pino's log records and from util.inspect, so logging a config object cannot leak it. (A spread
 * copy loses it: pass these objects on as they are.)
 */
function hide<T extends object>(target: T, key: string, value: unknown): void {
  Object.defineProperty(target, key, { value, enumerable: false, writable: false, configurable: false });
}

function validPort(address: string): boolean {
  const port = Number(address.slice(address.lastIndexOf(':') + 1));
  return port >= 1 && port <= 65535;
}

type Piece = 'serverCACert' | 'clientCert' | 'clientKey';
const PIECES: Record<Piece, { env: string; toml: string; what: string }> = {
  serverCACert: { env: 'TEMPORAL_TLS_SERVER_CA_CERT', toml: 'server_ca_cert', what: 'server CA certificate' },
  clientCert: { env: 'TEMPORAL_TLS_CLIENT_CERT', toml: 'client_cert', what: 'client certificate' },
  clientKey: { env: 'TEMPORAL_TLS_CLIENT_KEY', toml: 'client_key', what: 'client private key' },
};

function loadTls(
  spec: { serverName?: string | undefined; serverCACert?: ConfigDataSource | undefined; clientCert?: ConfigDataSource | undefined; clientKey?: ConfigDataSource | undefined },
  env: Record<string, string>,
  where: string | undefined,
  now: Date,
): TemporalTls {
  const origins: TemporalTls['origins'] = {};
  const read = (piece: Piece): Buffer | undefined => {
    const source = spec[piece];
    if (!source) return undefined;
    const p = PIECES[piece];
    if ('path' in source) {
      const setting = env[`${p.env}_PATH`] !== undefined ? `${p.env}_PATH` : `${where ?? 'the profile'} tls.${p.toml}_path`;
      origins[piece === 'serverCACert' ? 'serverRootCA' : piece] = `${setting}=${source.path}`;
      return readSettingFile(source.path, setting, p.what);
    }
    origins[piece === 'serverCACert' ? 'serverRootCA' : piece] = env[`${p.env}_DATA`] !== undefined ? `${p.env}_DATA` : `${where ?? 'the profile'} tls.${p.toml}_data`;
    return Buffer.from(source.data);
  };
  const serverRootCA = read('serverCACert');
  const clientCert = read('clientCert');
  const clientKey = read('clientKey');
  if ((clientCert === undefined) !== (clientKey === undefined)) {
    throw new FleetpatchError(
      'TLS_MATERIAL_INVALID',
      clientCert ? `${origins.clientCert}: a client certificate needs its private key too (TEMPORAL_TLS_CLIENT_KEY_PATH or tls.client_key_path)` : `${origins.clientKey}: a client private key needs its certificate too (TEMPORAL_TLS_CLIENT_CERT_PATH or tls.client_cert_path)`,
    );
  }
  if (spec.serverName !== undefined && !/^[A-Za-z0-9.\-_*]{1,253}$/.test(spec.serverName)) {
    throw invalid(`${env.TEMPORAL_TLS_SERVER_NAME !== undefined ? 'TEMPORAL_TLS_SERVER_NAME' : `${where ?? 'the profile'} tls.server_name`}=${JSON.stringify(spec.serverName)}: must be a DNS name`);
  }
  if (serverRootCA) checkCertificates(serverRootCA, origins.serverRootCA!, now);
  if (clientCert && clientKey) checkKeyPair(clientCert, clientKey, origins.clientCert!, origins.clientKey!, now);
  return { ...(spec.serverName !== undefined ? { serverName: spec.serverName } : {}), ...(serverRootCA ? { serverRootCA } : {}), ...(clientCert ? { clientCert } : {}), ...(clientKey ? { clientKey } : {}), origins };
}

/** Options for @temporalio/client's Connection and @temporalio/worker's NativeConnection (same shape). */
export function connectionOptions(endpoint: Pick<TemporalEndpoint, 'address' | 'security'>) {
  const { tls, apiKey, metadata } = endpoint.security;
  return {
    address: endpoint.address,
    tls: tls
      ? {
          ...(tls.serverName !== undefined ? { serverNameOverride: tls.serverName } : {}),
          ...(tls.serverRootCA ? { serverRootCACertificate: tls.serverRootCA } : {}),
          ...(tls.clientCert && tls.clientKey ? { clientCertPair: { crt: tls.clientCert, key: tls.clientKey } } : {}),
        }
      : false,
    ...(apiKey !== undefined ? { apiKey } : {}),
    ...(metadata ? { metadata } : {}),
  };
}

/**
 * A failed connect, in words: TLS_REFUSED when the handshake failed (which side refused whom),
 * TEMPORAL_UNAVAILABLE otherwise (retryable: the server may come back).
 */
export function explainConnectFailure(e: unknown, endpoint: Pick<TemporalEndpoint, 'address' | 'security'>): FleetpatchError {
  if (e instanceof FleetpatchError) return e;
  const raw = e instanceof Error ? `${e.message}${e.cause instanceof Error ? `: ${e.cause.message}` : ''}` : String(e);
  const text = maskSecrets(raw.replace(/\s*\n\s*/g, '; '));
  const { tls, apiKey } = endpoint.security;
  const at = `Temporal at ${endpoint.address}`;
  if (tls) {
    const ca = tls.origins.serverRootCA ? `the CA of ${tls.origins.serverRootCA}` : "the system's CAs (set TEMPORAL_TLS_SERVER_CA_CERT_PATH for a private CA)";
    // An alert is the server's refusal of us; the other words are our refusal of its certificate.
    const alert = /alert|CertificateRequired|certificate required|closed the connection after the TLS handshake/i.test(raw);
    if (!alert && /UnknownIssuer|unable to (?:verify|get local issuer)|self[- ]signed|certificate verify failed|BadSignature/i.test(raw)) {
      return new FleetpatchError('TLS_REFUSED', `${at}: the server's certificate is not signed by ${ca}: ${text}`, { address: endpoint.address });
    }
    if (!alert && /NotValidForName|altnames|hostname|does not match|NotValidForNameContext/i.test(raw)) {
      return new FleetpatchError('TLS_REFUSED', `${at}: the server's certificate is not for ${tls.serverName ?? endpoint.address.replace(/:\d+$/, '')} (set TEMPORAL_TLS_SERVER_NAME to the name it carries): ${text}`, { address: endpoint.address });
    }
    if (!alert && /Expired|NotValidYet|CERT_HAS_EXPIRED|CERT_NOT_YET_VALID/i.test(raw)) {
      return new FleetpatchError('TLS_REFUSED', `${at}: the server's certificate is expired or not yet valid: ${text}`, { address: endpoint.address });
    }
    if (alert || /HandshakeFailure|handshake failure|BadCertificate|bad certificate|CertificateUnknown|AccessDenied/i.test(raw)) {
      const mine = tls.origins.clientCert ? `the client certificate ${tls.origins.clientCert}` : 'no client certificate (set TEMPORAL_TLS_CLIENT_CERT_PATH and TEMPORAL_TLS_CLIENT_KEY_PATH)';
      return new FleetpatchError('TLS_REFUSED', `${at}: the server refused the TLS handshake with ${mine}: it requires one it trusts: ${text}`, { address: endpoint.address });
    }
    if (/wrong version number|InvalidContentType|CorruptMessage|packet length|record overflow|http\/1|not a TLS|unexpected eof|ECONNRESET|Connection reset/i.test(raw)) {
      return new FleetpatchError('TLS_REFUSED', `${at}: the TLS handshake failed: the server may not speak TLS (TLS is on${apiKey !== undefined ? ' because an API key is set' : ''}; TEMPORAL_TLS=false turns it off): ${text}`, { address: endpoint.address });
    }
  }
  return new FleetpatchError('TEMPORAL_UNAVAILABLE', `cannot reach ${at}${tls ? ' (TLS)' : ''}: ${text}`, { address: endpoint.address });
}

/** A description for logs and `fleetpatch services`: what is used, never a secret. */
export function describeTemporalSecurity(security: TemporalSecurity): string {
  const parts: string[] = [];
  if (!security.tls) parts.push('plain gRPC (no TLS)');
  else {
    parts.push(`TLS${security.tls.serverName ? ` (server name ${security.tls.serverName})` : ''}`);
    parts.push(security.tls.origins.serverRootCA ? `CA from ${security.tls.origins.serverRootCA}` : "the system's CAs");
    if (security.tls.origins.clientCert) parts.push(`client certificate ${security.tls.origins.clientCert}`);
  }
  if (security.apiKey !== undefined) parts.push('API key set (not shown)');
  return parts.join(', ');
}

/** A client Connection (CLI, API, probes), its failure explained. */
export async function connectTemporalClient(endpoint: Pick<TemporalEndpoint, 'address' | 'security'>, opts: { connectTimeout?: number } = {}): Promise<Connection> {
  try {
    return await Connection.connect({ ...connectionOptions(endpoint), ...(opts.connectTimeout !== undefined ? { connectTimeout: opts.connectTimeout } : {}) });
  } catch (e) {
    throw await explainWithDiagnosis(e, endpoint);
  }
}

/** The worker's NativeConnection (Rust core), its failure explained. */
export async function connectTemporalWorker(endpoint: Pick<TemporalEndpoint, 'address' | 'security'>): Promise<NativeConnection> {
  try {
    return await NativeConnection.connect(connectionOptions(endpoint));
  } catch (e) {
    throw await explainWithDiagnosis(e, endpoint);
  }
}

/**
 * gRPC says little about a failed handshake ("Failed to connect before the deadline", "connection
 * closed"): when TLS is on and the failure says nothing of TLS, one handshake of our own with the
 * same settings (node:tls, ALPN h2) finds which side refused whom.
 */
async function explainWithDiagnosis(e: unknown, endpoint: Pick<TemporalEndpoint, 'address' | 'security'>): Promise<FleetpatchError> {
  const first = explainConnectFailure(e, endpoint);
  if (first.code !== 'TEMPORAL_UNAVAILABLE' || !endpoint.security.tls) return first;
  const found = await diagnoseTls(endpoint).catch(() => undefined);
  if (!found) return first;
  const second = explainConnectFailure(new Error(found), endpoint);
  return second.code === 'TLS_REFUSED' ? second : first;
}

/** The HTTP/2 client preface and an empty SETTINGS frame: a server that took our certificate answers it. */
const H2_PREFACE = Buffer.concat([Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'), Buffer.from([0, 0, 0, 4, 0, 0, 0, 0, 0])]);

/**
 * One TLS handshake with the endpoint's settings: the error it ends with (the server's alert
 * included: in TLS 1.3 a refused client certificate shows only after the handshake), or
 * undefined when the server answers over TLS or cannot be reached at all.
 */
export function diagnoseTls(endpoint: Pick<TemporalEndpoint, 'address' | 'security'>, timeoutMs = 5_000): Promise<string | undefined> {
  const tls = endpoint.security.tls;
  if (!tls) return Promise.resolve(undefined);
  const colon = endpoint.address.lastIndexOf(':');
  const host = endpoint.address.slice(0, colon).replace(/^\[(.*)\]$/, '$1');
  const port = Number(endpoint.address.slice(colon + 1));
  const name = tls.serverName ?? host;
  return new Promise((resolve) => {
    const socket = tlsConnect({
      host,
      port,
      ...(isIP(name) ? {} : { servername: name }),
      ...(tls.serverRootCA ? { ca: tls.serverRootCA } : {}),
      ...(tls.clientCert && tls.clientKey ? { cert: tls.clientCert, key: tls.clientKey } : {}),
      ALPNProtocols: ['h2'],
      checkServerIdentity: (_host, cert) => checkServerIdentity(name, cert),
    });
    let settled = false;
    const done = (why: string | undefined) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      resolve(why);
    };
    const timer = setTimeout(() => done(undefined), timeoutMs);
    // Some servers (node's own, for one) refuse a client certificate by closing, with no alert:
    // a close right after our handshake, before any answer to the preface, is that refusal.
    let secured = false;
    const CLOSED = 'the server closed the connection after the TLS handshake without answering';
    socket.on('secureConnect', () => {
      secured = true;
      socket.write(H2_PREFACE);
    });
    socket.on('data', () => done(undefined));
    socket.on('error', (err: NodeJS.ErrnoException) => {
      if (secured && (err.code === 'ECONNRESET' || err.code === 'EPIPE')) return done(CLOSED);
      done(/ECONNREFUSED|ENOTFOUND|EHOSTUNREACH|ETIMEDOUT/.test(err.code ?? '') ? undefined : `${err.code ?? ''} ${err.message}`.trim());
    });
    socket.on('close', () => done(secured ? CLOSED : undefined));
  });
}

/**
 * Whether the frontend answers and the namespace exists: true, or why not. A TLS refusal is
 * thrown (waiting does not cure it); anything else is a reason to wait.
 */
export async function probeTemporal(endpoint: TemporalEndpoint, connectTimeout = 2_000): Promise<true | FleetpatchError> {
  let connection: Connection | undefined;
  try {
    connection = await connectTemporalClient(endpoint, { connectTimeout });
    await connection.workflowService.describeNamespace({ namespace: endpoint.namespace });
    return true;
  } catch (e) {
    const why = explainConnectFailure(e, endpoint);
    if (why.code === 'TLS_REFUSED' || why.code === 'TLS_MATERIAL_INVALID') throw why;
    return why;
  } finally {
    await connection?.close().catch(() => undefined);
  }
}
