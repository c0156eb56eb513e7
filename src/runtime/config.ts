/**
 * Configuration comes from the environment only, validated once by zod at start-up. A wrong value
 * is reported as one line naming the variable (CONFIG_INVALID), never as a stack trace later.
 */
import path from 'node:path';
import { z } from 'zod';
import { FleetpatchError } from '../errors.ts';
import { maskSecrets } from '../secrets.ts';
import { resolveTemporalSettings, type TemporalSecurity } from './temporal-connection.ts';

const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const;

const hostPort = z
  .string()
  .regex(/^(?:[A-Za-z0-9.\-_]+|\[[0-9A-Fa-f:.]+\]):\d{1,5}$/, 'must be host:port, e.g. 127.0.0.1:7233 or [::1]:7233')
  .refine((v) => {
    const port = Number(v.slice(v.lastIndexOf(':') + 1));
    return port >= 1 && port <= 65535;
  }, 'the port must be a number from 1 to 65535');

const postgresUrl = z
  .string()
  .refine((v) => {
    try {
      const u = new URL(v);
      return (u.protocol === 'postgres:' || u.protocol === 'postgresql:') && u.hostname !== '';
    } catch {
      return false;
    }
  }, 'must be a URL like postgres://user@host:5432/database (with :password after the user if it needs one)');

/** FLEETPATCH_WEBHOOK_ALLOW: host:port endpoints, comma-separated, host names in lower case. */
const endpointList = z
  .string()
  .transform((v) => v.split(',').map((e) => e.trim()).filter((e) => e !== ''))
  .pipe(z.array(hostPort.transform((e) => e.toLowerCase()), { error: 'must be host:port endpoints separated by commas, e.g. 127.0.0.1:9999,hooks.internal:443' }));

/** A port as decimal digits only: "0x1F91", " " or "1e3" are refused, not read as numbers. */
const port = z
  .string()
  .regex(/^\d{1,5}$/, 'must be a port number from 0 to 65535, in decimal digits')
  .transform(Number)
  .refine((n) => n <= 65535, 'must be a port number from 0 to 65535');

export const ConfigSchema = z.object({
  TEMPORAL_ADDRESS: hostPort.optional(),
  TEMPORAL_NAMESPACE: z.string().min(1).default('default'),
  TEMPORAL_TASK_QUEUE: z.string().min(1).default('fleetpatch'),
  /** Port of the local dev server when fleetpatch starts one (0 = any free port). */
  TEMPORAL_PORT: port.optional(),
  TEMPORAL_UI_PORT: port.optional(),
  /** An existing `temporal` binary; otherwise PATH, then .tools/bin, then a build from source. */
  TEMPORAL_CLI: z.string().min(1).optional(),
  /**
   * Which local Temporal fleetpatch starts when TEMPORAL_ADDRESS is unset: `dev` (the CLI's dev
   * server on SQLite) or `cluster` (the Temporal server on PostgreSQL, several history shards).
   */
  FLEETPATCH_TEMPORAL: z.enum(['dev', 'cluster']).default('dev'),
  /** Frontend gRPC port of the local cluster; its other ports follow it (0 = any free ports). */
  FLEETPATCH_CLUSTER_PORT: port.optional(),
  /** The cluster's database on the PostgreSQL server (and `<name>_visibility`). */
  FLEETPATCH_CLUSTER_DB: z
    .string()
    .regex(/^[a-z_][a-z0-9_]{0,40}$/, 'must be a PostgreSQL database name of lower-case letters, digits and _ (at most 41 characters)')
    .default('temporal'),
  DATABASE_URL: postgresUrl.optional(),
  /** Port of the embedded PostgreSQL when fleetpatch starts one (0 = any free port). */
  FLEETPATCH_PG_PORT: port.optional(),
  FLEETPATCH_DATA_DIR: z.string().min(1).default('.fleetpatch'),
  /** The emulated (or real) fleet's file; default <data dir>/fleet.json. */
  FLEETPATCH_FLEET_FILE: z.string().min(1).optional(),
  /** A public key file, or a directory of *.pub files, that payload signatures must verify against. */
  FLEETPATCH_TRUSTED_KEYS: z.string().min(1).optional(),
  /** The worker's client certificate for enrolled hosts' agents (key.pem, cert.pem, ca.pem); default <data dir>/worker-tls. */
  FLEETPATCH_WORKER_TLS_DIR: z.string().min(1).optional(),
  /** The HMAC key webhook notifications are signed with; default: one made once in <data dir>/webhook-secret. */
  FLEETPATCH_WEBHOOK_SECRET: z.string().min(16, 'must be at least 16 characters (a receiver checks signatures with it)').optional(),
  /**
   * Endpoints (host:port) a plan's webhook may name although one of fleetpatch's own services
   * uses that port (src/rollout/webhook-target.ts); checked where the plan is validated and again
   * by the worker that sends.
   */
  FLEETPATCH_WEBHOOK_ALLOW: endpointList.optional(),
  LOG_LEVEL: z.enum(LOG_LEVELS).default('info'),
});

/**
 * Read by resolveTemporalSettings (temporal-connection.ts, through @temporalio/envconfig), not by
 * the schema above: listed here so that docs and `fleetpatch services` know them. Values of the
 * ones marked secret are never shown.
 */
export const TEMPORAL_CONNECTION_SETTINGS = [
  'TEMPORAL_CONFIG_FILE',
  'TEMPORAL_PROFILE',
  'TEMPORAL_API_KEY',
  'TEMPORAL_TLS',
  'TEMPORAL_TLS_SERVER_NAME',
  'TEMPORAL_TLS_SERVER_CA_CERT_PATH',
  'TEMPORAL_TLS_SERVER_CA_CERT_DATA',
  'TEMPORAL_TLS_CLIENT_CERT_PATH',
  'TEMPORAL_TLS_CLIENT_CERT_DATA',
  'TEMPORAL_TLS_CLIENT_KEY_PATH',
  'TEMPORAL_TLS_CLIENT_KEY_DATA',
] as const;

export type RawConfig = z.infer<typeof ConfigSchema>;

export interface Config {
  temporal: {
    /** TEMPORAL_ADDRESS, else the Temporal profile's address; unset: fleetpatch starts a local server. */
    address?: string;
    namespace: string;
    /** TLS, API key and gRPC headers towards `address` (plain for the local servers). */
    security: TemporalSecurity;
    /** The Temporal profile read, when one was (`profile "x" of <file>`). */
    profile?: string;
    taskQueue: string;
    port: number;
    uiPort: number;
    cli?: string;
    /** The local server fleetpatch starts when `address` is unset. */
    mode: 'dev' | 'cluster';
    cluster: { port: number; database: string };
  };
  database: { url?: string; embeddedPort: number };
  /** Absolute path; holds the dev server's database, embedded PostgreSQL and fleet files. */
  dataDir: string;
  /** Absolute path of the fleet file activities and commands use. */
  fleetFile: string;
  /** Where the trusted public keys are (a .pub file or a directory); `explicit`: named by the environment. */
  trustedKeys: { path: string; explicit: boolean };
  /** Absolute path of the worker's mutual-TLS directory (docs/enrolment.md). */
  workerTlsDir: string;
  /** FLEETPATCH_WEBHOOK_SECRET when set (webhook-secret.ts makes one otherwise). */
  webhookSecret?: string;
  webhooks: {
    /** The ports of fleetpatch's own services this configuration knows: no webhook goes there. */
    services: { port: number; service: string }[];
    /** FLEETPATCH_WEBHOOK_ALLOW: host:port endpoints allowed although a service uses the port. */
    allow: string[];
  };
  logLevel: (typeof LOG_LEVELS)[number];
}

/** Reads and validates the configuration; throws CONFIG_INVALID naming every bad setting. */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  // Empty strings count as unset, as they do for most Unix tools.
  const present = Object.fromEntries(Object.entries(env).filter(([, v]) => v !== undefined && v !== ''));
  const parsed = ConfigSchema.safeParse(present);
  if (!parsed.success) {
    const problems = parsed.error.issues.map((i) => {
      const key = String(i.path[0] ?? 'environment');
      const value = present[key];
      // A value may hold a password (DATABASE_URL in any form, valid or not): masked as the raw
      // value, before quoting, so that JSON escapes cannot hide a piece of it from the mask.
      const shown = value === undefined ? '(unset)' : /SECRET|PASSWORD|TOKEN|API_KEY|_DATA$/.test(key) ? '(hidden)' : JSON.stringify(maskSecrets(value));
      return `${key}=${shown}: ${i.message}`;
    });
    throw new FleetpatchError('CONFIG_INVALID', problems.join('; '), { issues: parsed.error.issues.map((i) => ({ path: i.path.map(String), message: i.message })) });
  }
  const c = parsed.data;
  // The Temporal profile and its env overrides (TLS files read and checked here, once).
  const profile = resolveTemporalSettings(present as Record<string, string>);
  if (!profile.address && (profile.security.tls || profile.security.apiKey !== undefined)) {
    throw new FleetpatchError(
      'CONFIG_INVALID',
      `${profile.security.apiKey !== undefined ? 'TEMPORAL_API_KEY' : 'TEMPORAL_TLS settings'} without TEMPORAL_ADDRESS: the local Temporal server fleetpatch starts when no address is set speaks plain gRPC; set TEMPORAL_ADDRESS (or the profile's address) to the server they are for`,
    );
  }
  const temporal: Config['temporal'] = {
    ...(profile.address ? { address: profile.address } : {}),
    namespace: present.TEMPORAL_NAMESPACE !== undefined ? c.TEMPORAL_NAMESPACE : (profile.namespace ?? c.TEMPORAL_NAMESPACE),
    security: profile.address ? profile.security : { tls: false },
    ...(profile.profile ? { profile: profile.profile } : {}),
    taskQueue: c.TEMPORAL_TASK_QUEUE,
    port: c.TEMPORAL_PORT ?? 7233,
    uiPort: c.TEMPORAL_UI_PORT ?? 8233,
    ...(c.TEMPORAL_CLI ? { cli: c.TEMPORAL_CLI } : {}),
    mode: c.FLEETPATCH_TEMPORAL,
    cluster: { port: c.FLEETPATCH_CLUSTER_PORT ?? 7333, database: c.FLEETPATCH_CLUSTER_DB },
  };
  const database: Config['database'] = { ...(c.DATABASE_URL ? { url: c.DATABASE_URL } : {}), embeddedPort: c.FLEETPATCH_PG_PORT ?? 54329 };
  return {
    temporal,
    database,
    dataDir: path.resolve(c.FLEETPATCH_DATA_DIR),
    fleetFile: path.resolve(c.FLEETPATCH_FLEET_FILE ?? path.join(c.FLEETPATCH_DATA_DIR, 'fleet.json')),
    workerTlsDir: path.resolve(c.FLEETPATCH_WORKER_TLS_DIR ?? path.join(c.FLEETPATCH_DATA_DIR, 'worker-tls')),
    trustedKeys: { path: path.resolve(c.FLEETPATCH_TRUSTED_KEYS ?? path.join(c.FLEETPATCH_DATA_DIR, 'trusted-keys')), explicit: c.FLEETPATCH_TRUSTED_KEYS !== undefined },
    ...(c.FLEETPATCH_WEBHOOK_SECRET ? { webhookSecret: c.FLEETPATCH_WEBHOOK_SECRET } : {}),
    webhooks: { services: servicePorts(temporal, database), allow: c.FLEETPATCH_WEBHOOK_ALLOW ?? [] },
    logLevel: c.LOG_LEVEL,
  };
}

/** `fleetpatch api`'s port when --port is not given (src/cli/api.ts; a test keeps the two equal). */
export const DEFAULT_API_PORT = 8300;
/** `fleetpatch emulate`'s port when --port is not given (src/cli/emulate.ts; a test keeps the two equal). */
export const DEFAULT_FLEET_PORT = 9400;

/** The ports this configuration says fleetpatch's services listen on (0 = a free port: unknown here). */
function servicePorts(temporal: Config['temporal'], database: Config['database']): Config['webhooks']['services'] {
  const ports: Config['webhooks']['services'] = [];
  const add = (port: number, service: string) => {
    if (port > 0 && !ports.some((p) => p.port === port)) ports.push({ port, service });
  };
  if (database.url) add(Number(new URL(database.url).port || 5432), "PostgreSQL's (DATABASE_URL)");
  else add(database.embeddedPort, "the embedded PostgreSQL's (FLEETPATCH_PG_PORT)");
  if (temporal.address) add(Number(temporal.address.slice(temporal.address.lastIndexOf(':') + 1)), "Temporal's (TEMPORAL_ADDRESS)");
  else if (temporal.mode === 'dev') {
    add(temporal.port, "the Temporal dev server's (TEMPORAL_PORT)");
    add(temporal.uiPort, "the Temporal UI's (TEMPORAL_UI_PORT)");
  } else if (temporal.cluster.port > 0) {
    // The cluster's services take the eight ports after its frontend's (temporal-cluster.ts).
    for (let i = 0; i <= 8; i++) add(temporal.cluster.port + i, "the Temporal cluster's (FLEETPATCH_CLUSTER_PORT and the eight after it)");
  }
  add(DEFAULT_API_PORT, "the HTTP API's (fleetpatch api's default port)");
  add(DEFAULT_FLEET_PORT, "the emulated fleet server's, with its /admin routes (fleetpatch emulate's default port)");
  return ports;
}
