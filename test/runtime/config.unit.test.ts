import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/runtime/config.ts';
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
});
