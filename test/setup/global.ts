/**
 * Global setup for the int and e2e tiers: ONE Temporal dev server and ONE PostgreSQL for the whole
 * run (or the ones TEMPORAL_ADDRESS and DATABASE_URL name), and the workflow code bundled once.
 * Both tiers list this file; the services are shared through a process-wide singleton and torn
 * down when the last tier finishes, also when tests fail.
 */
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { TestProject } from 'vitest/node';
import { bundleWorkflowCode } from '@temporalio/worker';
import { createLogger } from '../../src/runtime/logger.ts';
import { startEmbeddedPostgres } from '../../src/runtime/embedded-postgres.ts';
import { resolveTemporalCli, startTemporalDevServer } from '../../src/runtime/temporal-server.ts';

declare module 'vitest' {
  export interface ProvidedContext {
    databaseUrl: string;
    temporalAddress: string;
    temporalNamespace: string;
    workflowBundlePath: string;
    /** True when our own dev server runs with a low continue-as-new threshold (60 events). */
    lowContinueAsNewThreshold: boolean;
  }
}

interface Shared {
  databaseUrl: string;
  temporalAddress: string;
  temporalNamespace: string;
  workflowBundlePath: string;
  lowContinueAsNewThreshold: boolean;
  stop: () => Promise<void>;
}

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const state = globalThis as typeof globalThis & { __fleetpatchTestServices?: { refs: number; ready: Promise<Shared> } };

async function startShared(): Promise<Shared> {
  const logger = createLogger((process.env.LOG_LEVEL as 'warn') ?? 'warn', { pretty: false, name: 'test-services' });
  const tmp = await mkdtemp(path.join(os.tmpdir(), 'fleetpatch-test-'));
  // mkdtemp makes it 0700; embedded PostgreSQL runs as its own user under root and must get in.
  await chmod(tmp, 0o755);
  const stops: (() => Promise<void>)[] = [];
  try {
    const namespace = process.env.TEMPORAL_NAMESPACE || 'default';
    const [databaseUrl, temporalAddress, workflowBundlePath] = await Promise.all([
      (async () => {
        if (process.env.DATABASE_URL) return process.env.DATABASE_URL;
        // os.tmpdir() is world-searchable, so embedded PostgreSQL can run as its own user under root.
        const pg = await startEmbeddedPostgres({ dataDir: tmp, port: 0, logger });
        stops.push(pg.stop);
        return pg.url;
      })(),
      (async () => {
        if (process.env.TEMPORAL_ADDRESS) return process.env.TEMPORAL_ADDRESS;
        const cli = await resolveTemporalCli(logger, process.env.TEMPORAL_CLI);
        const server = await startTemporalDevServer({
          cli,
          namespace,
          logger,
          port: 0,
          // Small continue-as-new threshold so tests exercise it without thousands of events.
          dynamicConfig: { 'limit.historyCount.suggestContinueAsNew': 60 },
        });
        stops.push(server.stop);
        return server.address;
      })(),
      (async () => {
        const { code } = await bundleWorkflowCode({ workflowsPath: path.join(ROOT, 'workflows', 'index.ts'), logger: quietBundlerLogger });
        const file = path.join(tmp, 'workflow-bundle.js');
        await writeFile(file, code);
        return file;
      })(),
    ]);
    return {
      databaseUrl,
      temporalAddress,
      temporalNamespace: namespace,
      workflowBundlePath,
      lowContinueAsNewThreshold: !process.env.TEMPORAL_ADDRESS,
      stop: async () => {
        for (const stop of stops.reverse()) await stop().catch(() => undefined);
        await rm(tmp, { recursive: true, force: true });
      },
    };
  } catch (e) {
    for (const stop of stops.reverse()) await stop().catch(() => undefined);
    await rm(tmp, { recursive: true, force: true });
    throw e;
  }
}

const quietBundlerLogger = {
  log: () => undefined,
  trace: () => undefined,
  debug: () => undefined,
  info: () => undefined,
  warn: (m: string) => console.warn(m),
  error: (m: string) => console.error(m),
};

export default async function setup(project: TestProject) {
  state.__fleetpatchTestServices ??= { refs: 0, ready: startShared() };
  const entry = state.__fleetpatchTestServices;
  entry.refs++;
  const shared = await entry.ready;
  project.provide('databaseUrl', shared.databaseUrl);
  project.provide('temporalAddress', shared.temporalAddress);
  project.provide('temporalNamespace', shared.temporalNamespace);
  project.provide('workflowBundlePath', shared.workflowBundlePath);
  project.provide('lowContinueAsNewThreshold', shared.lowContinueAsNewThreshold);
  return async () => {
    entry.refs--;
    if (entry.refs === 0) {
      state.__fleetpatchTestServices = undefined;
      await shared.stop();
    }
  };
}
