/**
 * The PostgreSQL connection: a DATABASE_URL server, or the embedded one. Connection failures
 * become DATABASE_UNAVAILABLE with the address in words, not a raw ECONNREFUSED stack.
 */
import pg from 'pg';
import { FleetpatchError } from '../errors.ts';
import { maskSecrets } from '../secrets.ts';

export type Pool = pg.Pool;
export type PoolClient = pg.PoolClient;

export function createPool(url: string, opts: { max?: number; applicationName?: string } = {}): pg.Pool {
  const pool = new pg.Pool({
    connectionString: url,
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

/** Connects once to prove the database answers; names the address when it does not. */
export async function assertReachable(pool: pg.Pool, url: string): Promise<void> {
  try {
    await pool.query('SELECT 1');
  } catch (e) {
    throw new FleetpatchError('DATABASE_UNAVAILABLE', `cannot reach PostgreSQL at ${redactUrl(url)}: ${(e as Error).message}`);
  }
}

/** The URL without its password, for logs and error messages: maskSecrets, under the name callers know. */
export function redactUrl(url: string): string {
  return maskSecrets(url);
}
