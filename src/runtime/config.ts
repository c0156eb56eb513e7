/**
 * Configuration comes from the environment only, validated once by zod at start-up. A wrong value
 * is reported as one line naming the variable (CONFIG_INVALID), never as a stack trace later.
 */
import path from 'node:path';
import { z } from 'zod';
import { FleetpatchError } from '../errors.ts';

const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const;

const hostPort = z
  .string()
  .regex(/^[A-Za-z0-9.\-_[\]:]+:\d{1,5}$/, 'must be host:port, e.g. 127.0.0.1:7233');

const postgresUrl = z
  .string()
  .refine((v) => {
    try {
      const u = new URL(v);
      return (u.protocol === 'postgres:' || u.protocol === 'postgresql:') && u.hostname !== '';
    } catch {
      return false;
    }
  }, 'must be a URL like postgres://user:password@host:5432/database');

const port = z.coerce.number().int().min(0).max(65535);

export const ConfigSchema = z.object({
  TEMPORAL_ADDRESS: hostPort.optional(),
  TEMPORAL_NAMESPACE: z.string().min(1).default('default'),
  TEMPORAL_TASK_QUEUE: z.string().min(1).default('fleetpatch'),
  /** Port of the local dev server when fleetpatch starts one (0 = any free port). */
  TEMPORAL_PORT: port.default(7233),
  TEMPORAL_UI_PORT: port.default(8233),
  /** An existing `temporal` binary; otherwise PATH, then .tools/bin, then a build from source. */
  TEMPORAL_CLI: z.string().min(1).optional(),
  DATABASE_URL: postgresUrl.optional(),
  /** Port of the embedded PostgreSQL when fleetpatch starts one (0 = any free port). */
  FLEETPATCH_PG_PORT: port.default(54329),
  FLEETPATCH_DATA_DIR: z.string().min(1).default('.fleetpatch'),
  /** The emulated (or real) fleet's file; default <data dir>/fleet.json. */
  FLEETPATCH_FLEET_FILE: z.string().min(1).optional(),
  LOG_LEVEL: z.enum(LOG_LEVELS).default('info'),
});

export type RawConfig = z.infer<typeof ConfigSchema>;

export interface Config {
  temporal: { address?: string; namespace: string; taskQueue: string; port: number; uiPort: number; cli?: string };
  database: { url?: string; embeddedPort: number };
  /** Absolute path; holds the dev server's database, embedded PostgreSQL and fleet files. */
  dataDir: string;
  /** Absolute path of the fleet file activities and commands use. */
  fleetFile: string;
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
      return `${key}=${value === undefined ? '(unset)' : JSON.stringify(value)}: ${i.message}`;
    });
    throw new FleetpatchError('CONFIG_INVALID', problems.join('; '), { issues: parsed.error.issues });
  }
  const c = parsed.data;
  return {
    temporal: {
      ...(c.TEMPORAL_ADDRESS ? { address: c.TEMPORAL_ADDRESS } : {}),
      namespace: c.TEMPORAL_NAMESPACE,
      taskQueue: c.TEMPORAL_TASK_QUEUE,
      port: c.TEMPORAL_PORT,
      uiPort: c.TEMPORAL_UI_PORT,
      ...(c.TEMPORAL_CLI ? { cli: c.TEMPORAL_CLI } : {}),
    },
    database: { ...(c.DATABASE_URL ? { url: c.DATABASE_URL } : {}), embeddedPort: c.FLEETPATCH_PG_PORT },
    dataDir: path.resolve(c.FLEETPATCH_DATA_DIR),
    fleetFile: path.resolve(c.FLEETPATCH_FLEET_FILE ?? path.join(c.FLEETPATCH_DATA_DIR, 'fleet.json')),
    logLevel: c.LOG_LEVEL,
  };
}
