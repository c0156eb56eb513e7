import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { ConfigSchema, POSTGRES_TLS_SETTINGS, TEMPORAL_CONNECTION_SETTINGS, loadConfig } from '../../src/runtime/config.ts';
import { FleetpatchError } from '../../src/errors.ts';

function configError(env: Record<string, string>): FleetpatchError {
  try {
    loadConfig(env);
  } catch (e) {
    if (e instanceof FleetpatchError) return e;
    throw e;
  }
  throw new Error('expected loadConfig to refuse the environment');
}

describe('configuration from the environment', () => {
  it('runs on embedded defaults when nothing is set', () => {
    const c = loadConfig({});
    expect(c.temporal.address).toBeUndefined();
    expect(c.database.url).toBeUndefined();
    expect(c.temporal.namespace).toBe('default');
    expect(c.dataDir).toBe(path.resolve('.fleetpatch'));
    expect(c.logLevel).toBe('info');
  });

  it('takes the services the environment names', () => {
    const c = loadConfig({
      TEMPORAL_ADDRESS: 'temporal.internal:7233',
      TEMPORAL_NAMESPACE: 'patching',
      DATABASE_URL: 'postgres://fp:secret@db.internal:5432/fleetpatch',
      FLEETPATCH_DATA_DIR: '/var/lib/fleetpatch',
      LOG_LEVEL: 'debug',
    });
    expect(c.temporal).toMatchObject({ address: 'temporal.internal:7233', namespace: 'patching' });
    expect(c.database.url).toBe('postgres://fp:secret@db.internal:5432/fleetpatch');
    expect(c.dataDir).toBe('/var/lib/fleetpatch');
    expect(c.logLevel).toBe('debug');
  });

  it('treats empty variables as unset', () => {
    expect(loadConfig({ DATABASE_URL: '', TEMPORAL_ADDRESS: '' }).database.url).toBeUndefined();
  });

  it.each([
    ['DATABASE_URL', 'not-a-url'],
    ['DATABASE_URL', 'mysql://root@localhost/db'],
    ['TEMPORAL_ADDRESS', 'localhost'],
    ['LOG_LEVEL', 'verbose'],
    ['TEMPORAL_PORT', '70000'],
  ])('names %s when it is %s', (key, value) => {
    const e = configError({ [key]: value });
    expect(e.code).toBe('CONFIG_INVALID');
    expect(e.message).toContain(`${key}=${JSON.stringify(value)}`);
    expect(e.message).not.toContain('\n');
  });

  it('names every bad setting at once', () => {
    const e = configError({ DATABASE_URL: 'x', LOG_LEVEL: 'loud' });
    expect(e.message).toContain('DATABASE_URL');
    expect(e.message).toContain('LOG_LEVEL');
  });

  it.each([
    ['TEMPORAL_PORT', '0x1F91'],
    ['TEMPORAL_PORT', '1e3'],
    ['TEMPORAL_UI_PORT', '+80'],
    ['FLEETPATCH_PG_PORT', ' '],
    ['FLEETPATCH_PG_PORT', '5432 '],
    ['FLEETPATCH_PG_PORT', '65536'],
    ['TEMPORAL_ADDRESS', 'host:99999'],
    ['TEMPORAL_ADDRESS', 'host:0'],
    ['TEMPORAL_ADDRESS', 'host:0x1F91'],
  ])('refuses %s=%j instead of reading it as a number', (key, value) => {
    const e = configError({ [key]: value });
    expect(e.code).toBe('CONFIG_INVALID');
    expect(e.message).toContain(key);
  });

  it('takes ports in decimal digits, and host:port with an IPv6 literal', () => {
    const c = loadConfig({ TEMPORAL_PORT: '0', TEMPORAL_UI_PORT: '65535', FLEETPATCH_PG_PORT: '5432', TEMPORAL_ADDRESS: '[::1]:7233' });
    expect(c.temporal).toMatchObject({ port: 0, uiPort: 65535, address: '[::1]:7233' });
    expect(c.database.embeddedPort).toBe(5432);
  });

  it.each([
    'postgres://user:secret@:5432/x',
    'postgres://user:s3cr@t:pw@/x',
    'mysql://root:secret@localhost/db',
    // Unencoded /, # and ? end the authority for a URL parser, so these do not parse at all.
    'postgres://u:ab/cdsecret@127.0.0.1:1/x',
    'postgres://u:ab#cdsecret@127.0.0.1:1/x',
    'postgres://u:ab?cdsecret@127.0.0.1:1/x',
    'mysql://db/x?password=secret',
    'mysql://db/x?user=u&sslpassword=secret&sslmode=require',
    'host=db user=fp password=secret dbname=x',
    "host=db password='my secret' dbname=x",
    'fp:secret@db:5432/x',
  ])('never shows the password of DATABASE_URL=%s, which it refuses', (url) => {
    const e = configError({ DATABASE_URL: url });
    expect(e.message).toMatch(/^DATABASE_URL="/);
    expect(e.message).not.toMatch(/secret|s3cr|cdsecret/);
    expect(e.message).toContain('***');
    expect(JSON.stringify(e.details)).not.toContain('secret');
  });

  it('takes the webhook secret from the environment, and never shows one it refuses', () => {
    expect(loadConfig({ FLEETPATCH_WEBHOOK_SECRET: 'a-long-enough-secret' }).webhookSecret).toBe('a-long-enough-secret');
    expect(loadConfig({}).webhookSecret).toBeUndefined();
    const e = configError({ FLEETPATCH_WEBHOOK_SECRET: 'hunter2' });
    expect(e.message).toMatch(/^FLEETPATCH_WEBHOOK_SECRET=\(hidden\): must be at least 16 characters/);
    expect(e.message + JSON.stringify(e.details)).not.toContain('hunter2');
  });

  it('every setting it reads is in the README\'s configuration table, and the table names no other', () => {
    const readme = readFileSync(path.join(import.meta.dirname, '..', '..', 'README.md'), 'utf8');
    // The first cell of each row names one setting or several (`A`, `B`).
    const firstCells = [...readme.matchAll(/^\| (`[A-Z][A-Z0-9_]+`(?:, `[A-Z][A-Z0-9_]+`)*) \|/gm)].map((m) => m[1]!);
    const inTable = new Set(firstCells.flatMap((cell) => [...cell.matchAll(/`([A-Z0-9_]+)`/g)].map((m) => m[1])));
    expect([...inTable].sort()).toEqual([...Object.keys(ConfigSchema.shape), ...TEMPORAL_CONNECTION_SETTINGS, ...POSTGRES_TLS_SETTINGS].sort());
  });

  it('starts the dev server by default, the Temporal cluster with FLEETPATCH_TEMPORAL=cluster', () => {
    expect(loadConfig({}).temporal).toMatchObject({ mode: 'dev', cluster: { port: 7333, database: 'temporal' } });
    const c = loadConfig({ FLEETPATCH_TEMPORAL: 'cluster', FLEETPATCH_CLUSTER_PORT: '0', FLEETPATCH_CLUSTER_DB: 'fp_temporal' });
    expect(c.temporal).toMatchObject({ mode: 'cluster', cluster: { port: 0, database: 'fp_temporal' } });
  });

  it.each([
    ['FLEETPATCH_TEMPORAL', 'production'],
    ['FLEETPATCH_CLUSTER_PORT', '7e3'],
    ['FLEETPATCH_CLUSTER_DB', 'Temporal'],
    ['FLEETPATCH_CLUSTER_DB', 'temporal; DROP DATABASE x'],
  ])('refuses %s=%j', (key, value) => {
    const e = configError({ [key]: value });
    expect(e.code).toBe('CONFIG_INVALID');
    expect(e.message).toContain(key);
  });

  it('names where trusted keys are: FLEETPATCH_TRUSTED_KEYS, else <data dir>/trusted-keys', () => {
    expect(loadConfig({}).trustedKeys).toEqual({ path: path.resolve('.fleetpatch', 'trusted-keys'), explicit: false });
    expect(loadConfig({ FLEETPATCH_TRUSTED_KEYS: '/etc/fleetpatch/keys' }).trustedKeys).toEqual({ path: '/etc/fleetpatch/keys', explicit: true });
  });
});
