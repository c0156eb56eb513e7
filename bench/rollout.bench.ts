/**
 * Fleet rollouts end to end: a real Temporal dev server (SQLite file, WAL, as `fleetpatch` runs
 * it), PostgreSQL, `fleetpatch emulate` and `fleetpatch worker` as their own processes, and one
 * rollout per fleet size. Reported: wall time, the ratio to the ideal time for the emulated action
 * latency and the concurrency (every host needs one APPLY action; ceil(N / concurrency) rounds of
 * that latency), the worker's peak memory (VmHWM), and how far the longest workflow run stayed
 * from Temporal's history limits.
 *
 * Sizes: FLEETPATCH_BENCH_ROLLOUT_HOSTS (default "1000,10000"); latency 100 ms, concurrency 50.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { Client, Connection } from '@temporalio/client';
import { buildPayload, DEFAULT_IMAGE } from '../src/payload/index.ts';
import { createLogger } from '../src/runtime/logger.ts';
import { startEmbeddedPostgres } from '../src/runtime/embedded-postgres.ts';
import { resolveTemporalCli, startTemporalDevServer } from '../src/runtime/temporal-server.ts';
import { createPool } from '../src/runtime/database.ts';
import { migrate } from '../src/events/migrate.ts';
import { readPlanFile, resolvePlanPayloads, startRollout } from '../src/cli/rollouts.ts';
import type { Bench } from './report.ts';

const BIN = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', 'bin', 'fleetpatch.js');
const LATENCY_MS = 100;
const CONCURRENCY = 50;

function spawnUntil(args: string[], env: Record<string, string>, ready: RegExp, nodeArgs: string[] = []): Promise<ChildProcess> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [...nodeArgs, BIN, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    const onData = (d: Buffer) => {
      out += d.toString();
      if (ready.test(out)) resolve(child);
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
    child.on('exit', (code) => reject(new Error(`fleetpatch ${args[0]} exited with ${code}: ${out.slice(-1500)}`)));
  });
}

async function peakRssMiB(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const kb = Number(/VmHWM:\s+(\d+)/.exec(status)?.[1] ?? 'NaN');
  return kb / 1024;
}

async function historyStats(client: Client, workflowId: string): Promise<{ runs: number; longest: number }> {
  // Walk the continue-as-new chain from the first run.
  const latest = await client.workflow.getHandle(workflowId).describe();
  let runId: string | undefined = latest.raw.workflowExecutionInfo?.firstRunId ?? undefined;
  let runs = 0;
  let longest = 0;
  while (runId) {
    const d = await client.workflow.getHandle(workflowId, runId).describe();
    runs++;
    longest = Math.max(longest, d.historyLength);
    const history = await client.workflow.getHandle(workflowId, runId).fetchHistory();
    const last = history.events?.at(-1);
    runId = last?.workflowExecutionContinuedAsNewEventAttributes?.newExecutionRunId ?? undefined;
  }
  return { runs, longest };
}

export default (async (ctx) => {
  const sizes = (process.env.FLEETPATCH_BENCH_ROLLOUT_HOSTS ?? '1000,10000').split(',').map(Number);
  const logger = createLogger('error', { pretty: false });
  const tmp = await mkdtemp(path.join(os.tmpdir(), 'fleetpatch-bench-rollout-'));
  await chmod(tmp, 0o755);
  const stops: (() => Promise<void>)[] = [];
  try {
    let serverUrl = process.env.DATABASE_URL;
    if (!serverUrl) {
      const embedded = await startEmbeddedPostgres({ dataDir: tmp, port: 0, logger });
      stops.push(embedded.stop);
      serverUrl = embedded.url;
    }
    const server = await startTemporalDevServer({ cli: await resolveTemporalCli(logger), namespace: 'default', logger, port: 0, stateDir: path.join(tmp, 'temporal') });
    stops.push(server.stop);
    const connection = await Connection.connect({ address: server.address });
    stops.push(() => connection.close());
    const client = new Client({ connection, namespace: 'default' });

    for (const hosts of sizes) {
      const dbName = `fp_bench_${randomBytes(4).toString('hex')}`;
      const admin = new pg.Client({ connectionString: serverUrl });
      await admin.connect();
      await admin.query(`CREATE DATABASE ${dbName}`);
      await admin.end();
      const dbUrl = Object.assign(new URL(serverUrl), { pathname: `/${dbName}` }).toString();
      const pool = createPool(dbUrl);
      await migrate(pool);

      const dir = path.join(tmp, `n${hosts}`);
      await mkdir(dir, { recursive: true });
      const fleetFile = path.join(dir, 'fleet.json');
      await writeFile(path.join(dir, 'faults.json'), JSON.stringify({ actionLatencyMs: LATENCY_MS }));
      const env = { LOG_LEVEL: 'error', FLEETPATCH_DATA_DIR: dir, TEMPORAL_ADDRESS: server.address, DATABASE_URL: dbUrl, FLEETPATCH_FLEET_FILE: fleetFile, TEMPORAL_TASK_QUEUE: `bench-${hosts}` };
      const emulator = await spawnUntil(['emulate', '--hosts', String(hosts), '--port', '0', '--seed', '1', '--faults', path.join(dir, 'faults.json'), '--fleet-file', fleetFile], env, /Fleet file:/);
      // FLEETPATCH_BENCH_WORKER_NODE_ARGS: e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof" to profile the worker.
      const workerNodeArgs = process.env.FLEETPATCH_BENCH_WORKER_NODE_ARGS?.split(' ').filter(Boolean) ?? [];
      const worker = await spawnUntil(['worker'], env, /worker polling/, workerNodeArgs);
      try {
        await writeFile(path.join(dir, 'fix.livepatch'), buildPayload({ name: 'fix', funcs: [{ target: 'xen_extra_version', returns: '-fix' }] }, { image: DEFAULT_IMAGE }));
        await writeFile(
          path.join(dir, 'plan.yaml'),
          `name: bench-${hosts}\npayloads: [{ file: fix.livepatch }]\nwaves: [{ name: canary, hosts: 10 }, { name: rest, hosts: "100%" }]\nconcurrency: ${CONCURRENCY}\nverify: { call: xen_extra_version, expect: "-fix" }\n`,
        );
        const { plan, dir: planDir } = await readPlanFile(path.join(dir, 'plan.yaml'));
        const resolved = await resolvePlanPayloads(plan, planDir, { pool, actor: { kind: 'system', id: 'bench' }, store: true });
        const started = Date.now();
        const s = await startRollout(client, env.TEMPORAL_TASK_QUEUE, resolved, { requestedBy: { kind: 'system', id: 'bench' } });
        const result = await s.handle.result();
        const wallS = (Date.now() - started) / 1000;
        const ok = result.waves.reduce((n, w) => n + w.patched, 0);
        const idealS = (Math.ceil(10 / CONCURRENCY) + Math.ceil((hosts - 10) / CONCURRENCY)) * (LATENCY_MS / 1000);
        const peak = await peakRssMiB(worker.pid!);
        const hist = await historyStats(client, s.workflowId);
        ctx.report({ name: `rollout of ${hosts} hosts: wall time`, value: wallS, unit: 's', note: `${ok} patched (${result.status}), ${(hosts / wallS).toFixed(1)} hosts/s, latency ${LATENCY_MS} ms, concurrency ${CONCURRENCY}` });
        ctx.report({ name: `rollout of ${hosts} hosts: ratio to ideal`, value: wallS / idealS, unit: 'x', note: `ideal ${idealS.toFixed(1)} s = ceil(N/${CONCURRENCY}) rounds of one ${LATENCY_MS} ms APPLY` });
        ctx.report({ name: `rollout of ${hosts} hosts: worker peak RSS`, value: peak, unit: 'MiB', note: 'VmHWM of the `fleetpatch worker` process' });
        ctx.report({ name: `rollout of ${hosts} hosts: longest workflow run`, value: hist.longest, unit: 'events', note: `${hist.runs} runs (continue-as-new); Temporal warns at 10,240 and fails at 51,200` });
      } finally {
        worker.kill('SIGTERM');
        emulator.kill('SIGTERM');
        await new Promise((r) => setTimeout(r, 500));
        worker.kill('SIGKILL');
        emulator.kill('SIGKILL');
        await pool.end();
      }
    }
  } finally {
    for (const stop of stops.reverse()) await stop().catch(() => undefined);
    await rm(tmp, { recursive: true, force: true });
  }
}) satisfies Bench;
