/**
 * PostgreSQL over TLS, for real: an embedded PostgreSQL with ssl=on and a certificate from a CA
 * made by openssl for this run (the server's name: 127.0.0.1 only), reached through openPool with
 * libpq's sslmodes.
 */
import { chmod } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openPool } from '../../src/runtime/database.ts';
import { startEmbeddedPostgres, type EmbeddedPostgres } from '../../src/runtime/embedded-postgres.ts';
import { createLogger } from '../../src/runtime/logger.ts';
import { tempDir } from '../support/rollout.ts';
import { makeTestPki, type TestPki } from '../support/tls.ts';
import { refusalOf as refusal } from '../support/refusal.ts';

let pki: TestPki;
let server: EmbeddedPostgres;
const NO_ENV = { HOME: '/nonexistent' };

/** Whether the pool's connection is encrypted, as the server sees it. */
async function sslInUse(url: string, env: Record<string, string> = NO_ENV): Promise<boolean> {
  const pool = await openPool(url, { env, max: 1 });
  try {
    const r = await pool.query<{ ssl: boolean }>('SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()');
    return r.rows[0]!.ssl;
  } finally {
    await pool.end();
  }
}

describe('PostgreSQL over TLS (embedded server with ssl=on)', () => {
  beforeAll(async () => {
    const dir = await tempDir('pg-tls');
    // Embedded PostgreSQL runs as its own user under root and must get in.
    await chmod(dir, 0o755);
    pki = await makeTestPki(path.join(dir, 'pki'), ['127.0.0.1']);
    server = await startEmbeddedPostgres({ dataDir: dir, port: 0, logger: createLogger('warn', { pretty: false, name: 'pg-tls' }), tls: { certFile: pki.serverCert, keyFile: pki.serverKey } });
  }, 180_000);
  afterAll(async () => {
    await server?.stop();
  });

  it('connects with sslmode=verify-full and the CA, encrypted', async () => {
    expect(await sslInUse(`${server.url}?sslmode=verify-full&sslrootcert=${encodeURIComponent(pki.caCert)}`)).toBe(true);
    // The same through PGSSLMODE / PGSSLROOTCERT.
    expect(await sslInUse(server.url, { ...NO_ENV, PGSSLMODE: 'verify-full', PGSSLROOTCERT: pki.caCert })).toBe(true);
  });

  it('prefer (the default) takes TLS when the server offers it; disable stays plain', async () => {
    expect(await sslInUse(server.url)).toBe(true);
    expect(await sslInUse(`${server.url}?sslmode=disable`)).toBe(false);
    expect(await sslInUse(`${server.url}?sslmode=allow`)).toBe(false);
  });

  it('refuses verify-full for a host name the certificate does not carry, which verify-ca accepts', async () => {
    const byName = server.url.replace('@127.0.0.1:', '@localhost:');
    const e = await refusal(openPool(`${byName}?sslmode=verify-full&sslrootcert=${encodeURIComponent(pki.caCert)}`, { env: NO_ENV }));
    expect(e.code).toBe('TLS_REFUSED');
    expect(e.message).toContain(`the server's certificate is not for the host "localhost"`);
    expect(e.message).not.toContain(new URL(server.url).password);
    expect(await sslInUse(`${byName}?sslmode=verify-ca&sslrootcert=${encodeURIComponent(pki.caCert)}`)).toBe(true);
  });

  it('refuses a CA that did not sign the server certificate', async () => {
    const e = await refusal(openPool(`${server.url}?sslmode=verify-full&sslrootcert=${encodeURIComponent(pki.foreignCaCert)}`, { env: NO_ENV }));
    expect(e.code).toBe('TLS_REFUSED');
    expect(e.message).toContain(`the server's certificate is not signed by the CA of sslrootcert in DATABASE_URL=${pki.foreignCaCert}`);
    expect(e.message).not.toContain(new URL(server.url).password);
  });
});
