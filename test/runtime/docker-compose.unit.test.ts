import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse } from 'yaml';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/runtime/config.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

interface Service {
  image?: string;
  build?: string;
  command?: string[];
  depends_on?: Record<string, { condition: string }>;
  environment?: Record<string, string>;
  ports?: string[];
}

// There is no Docker engine on CI machines, so the compose file is checked statically: every
// reference between services must resolve, and fleetpatch's settings must pass its own config.
describe('docker-compose.yml', async () => {
  const compose = parse(await readFile(path.join(ROOT, 'docker-compose.yml'), 'utf8'), { merge: true }) as { services: Record<string, Service>; volumes: Record<string, unknown> };
  const services = compose.services;
  const names = Object.keys(services);
  const hostOf = (address: string) => address.replace(/^[a-z]+:\/\/([^@]*@)?/, '').split(/[:/]/)[0]!;

  it('has PostgreSQL, a Temporal server on it, the Temporal UI and the fleetpatch worker', () => {
    expect(names).toEqual(expect.arrayContaining(['postgresql', 'temporal', 'temporal-ui', 'worker', 'fleet']));
    expect(services.temporal!.environment).toMatchObject({ DB: 'postgres12', POSTGRES_SEEDS: 'postgresql' });
    expect(services.worker!.command).toEqual(['worker']);
  });

  it('serves the API and dashboard with settings fleetpatch accepts, on the port it publishes', () => {
    const api = services.api!;
    expect(api.command?.[0]).toBe('api');
    const port = api.command![api.command!.indexOf('--port') + 1];
    expect(api.command![api.command!.indexOf('--listen') + 1]).toBe('0.0.0.0');
    expect(api.ports).toContain(`${port}:${port}`);
    expect(loadConfig(api.environment!).database.url).toBe(loadConfig(services.worker!.environment!).database.url);
    expect(Object.keys(api.depends_on ?? {})).toEqual(expect.arrayContaining(['postgresql', 'temporal']));
  });

  it('only depends on services that exist', () => {
    for (const [name, s] of Object.entries(services)) {
      for (const dep of Object.keys(s.depends_on ?? {})) expect(names, `${name} depends on ${dep}`).toContain(dep);
    }
  });

  it('points every address at a service that exists', () => {
    for (const [name, s] of Object.entries(services)) {
      for (const key of ['TEMPORAL_ADDRESS', 'DATABASE_URL', 'POSTGRES_SEEDS'] as const) {
        const value = s.environment?.[key];
        if (value) expect(names, `${name}: ${key}=${value}`).toContain(hostOf(value));
      }
    }
  });

  it('gives the worker settings that fleetpatch accepts, with Temporal on PostgreSQL credentials that match', () => {
    const env = services.worker!.environment!;
    const config = loadConfig(env);
    expect(config.temporal.address).toBe('temporal:7233');
    const db = new URL(config.database.url!);
    const pg = services.postgresql!.environment!;
    expect(db.username).toBe(pg.POSTGRES_USER);
    expect(db.password).toBe(pg.POSTGRES_PASSWORD);
    expect(db.pathname).toBe(`/${pg.POSTGRES_DB}`);
    expect(services.temporal!.environment!.POSTGRES_USER).toBe(pg.POSTGRES_USER);
    expect(services.temporal!.environment!.POSTGRES_PWD).toBe(pg.POSTGRES_PASSWORD);
  });

  it('declares every named volume it mounts', () => {
    for (const s of Object.values(services) as (Service & { volumes?: string[] })[]) {
      for (const v of s.volumes ?? []) {
        const source = v.split(':')[0]!;
        if (!source.startsWith('.') && !source.startsWith('/')) expect(Object.keys(compose.volumes)).toContain(source);
      }
    }
  });
});
