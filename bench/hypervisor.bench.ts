/**
 * The fleet server: how many hosts one `fleetpatch emulate` process serves, its memory (RSS, read
 * from the server's own /admin/stats) and the action round-trip latency with 1, 100 and 10,000
 * hosts. Each size runs in a fresh `fleetpatch emulate` subprocess, so the load generator's
 * memory is not counted.
 *
 * Round trip = POST .../action {"cmd":"apply"|"revert"} and GETs every millisecond until rc is no
 * longer -EAGAIN (emulated action duration 0): what an activity waits for one action. Measured
 * after a warm-up, with 64 hosts in flight (1 for the one-host fleet), client in this process.
 * Then the engine's patch chain over an emulated 20 ms network, with the APPLY as an ACTION and
 * GETs and as one waited ACTION (`actionOverANetwork`).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { FleetClient } from '../src/agent/client.ts';
import { buildPayload } from '../src/payload/builder.ts';
import { DEFAULT_IMAGE } from '../src/payload/image.ts';
import { percentile, type Bench } from './report.ts';
import { EmulatorAdmin } from '../src/emulator/admin-client.ts';
import { startFleetServer } from '../src/emulator/server.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const BIN = path.join(ROOT, 'bin', 'fleetpatch.js');
const SIZES = [1, 100, 10_000];
const CONCURRENCY = 64;

async function startEmulator(hosts: number, fleetFile: string): Promise<{ child: ChildProcess; startMs: number }> {
  const t0 = performance.now();
  const child = spawn(process.execPath, [BIN, 'emulate', '--hosts', String(hosts), '--port', '0', '--fleet-file', fleetFile], {
    cwd: ROOT,
    env: { ...process.env, LOG_LEVEL: 'warn' },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let out = '';
  await new Promise<void>((resolve, reject) => {
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('Press Ctrl-C')) resolve();
    });
    child.once('exit', (code) => reject(new Error(`fleetpatch emulate exited with ${code}: ${out}`)));
  });
  return { child, startMs: performance.now() - t0 };
}

async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  await exited;
}

/** Runs `fn` over `items` with at most `limit` in flight. */
async function pool<T>(items: readonly T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let i = 0;
  await Promise.all(
    Array.from({ length: Math.min(limit, items.length) }, async () => {
      while (i < items.length) await fn(items[i++]!);
    }),
  );
}

export default (async (ctx) => {
  const bytes = buildPayload({ name: 'bench', funcs: [{ target: 'xen_extra_version', returns: 'Hello World' }] }, { image: DEFAULT_IMAGE });
  const dir = await mkdtemp(path.join(os.tmpdir(), 'fleetpatch-bench-'));
  try {
    for (const n of SIZES) {
      const fleetFile = path.join(dir, `fleet-${n}.json`);
      const { child, startMs } = await startEmulator(n, fleetFile);
      try {
        const client = await FleetClient.open(fleetFile, { timeoutMs: 30_000 });
        const ids = client.hostIds;
        const idle = await new EmulatorAdmin(client.fleet).stats();

        // Every host: upload, apply, and prove it answers (the patched function's result).
        const t0 = performance.now();
        let served = 0;
        await pool(ids, CONCURRENCY, async (id) => {
          const agent = client.host(id);
          await agent.upload('bench', bytes);
          await agent.action('bench', 'apply');
          const s = await agent.waitForAction('bench', { pollMs: 1 });
          if (s.state === 'APPLIED' && (await agent.call('xen_extra_version')).result === 'Hello World') served++;
        });
        const rolloutMs = performance.now() - t0;
        const loaded = await new EmulatorAdmin(client.fleet).stats();

        // Round trips: revert, then apply again, alternately. Each of `conc` workers owns its own
        // hosts, so no host ever has two actions in flight (Xen would say EBUSY).
        const conc = n === 1 ? 1 : Math.min(CONCURRENCY, n);
        const roundTrips = async (count: number, record: number[] | null) => {
          await Promise.all(
            Array.from({ length: conc }, async (_, w) => {
              const owned = ids.filter((_, i) => i % conc === w);
              for (let k = 0; k < Math.ceil(count / conc); k++) {
                const agent = client.host(owned[k % owned.length]!);
                const state = (await agent.get('bench')).state;
                const t = performance.now();
                await agent.action('bench', state === 'APPLIED' ? 'revert' : 'apply');
                await agent.waitForAction('bench', { pollMs: 1 });
                record?.push(performance.now() - t);
              }
            }),
          );
        };
        await roundTrips(Math.min(500, Math.max(100, n / 10)), null); // warm-up, not recorded
        const latencies: number[] = [];
        await roundTrips(Math.max(2000, n), latencies);
        latencies.sort((a, b) => a - b);
        const after = await new EmulatorAdmin(client.fleet).stats();

        ctx.report({ name: `hosts served by one fleet process (${n} hosts)`, value: served, unit: 'hosts', note: `each uploaded, applied and answering xen_extra_version = "Hello World"; started in ${Math.round(startMs)} ms` });
        ctx.report({ name: `fleet process RSS, idle (${n} hosts)`, value: idle.rssBytes / 2 ** 20, unit: 'MiB' });
        ctx.report({ name: `fleet process RSS, one payload applied per host (${n} hosts)`, value: Math.max(loaded.rssBytes, after.rssBytes) / 2 ** 20, unit: 'MiB', note: `heap ${(after.heapUsedBytes / 2 ** 20).toFixed(1)} MiB` });
        ctx.report({ name: `upload+apply+verify of every host (${n} hosts)`, value: rolloutMs, unit: 'ms', note: `${CONCURRENCY} hosts at a time, ${((n / rolloutMs) * 1000).toFixed(0)} hosts/s` });
        ctx.report({ name: `action round-trip p50 (${n} hosts)`, value: percentile(latencies, 50), unit: 'ms', note: `${latencies.length} apply/revert round trips (POST action + GET until rc != -EAGAIN), ${conc} in flight` });
        ctx.report({ name: `action round-trip p99 (${n} hosts)`, value: percentile(latencies, 99), unit: 'ms' });
        ctx.log(`${n} hosts: ${after.requests} requests served`);
      } finally {
        await stop(child);
      }
    }
    await actionOverANetwork(ctx);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}) satisfies Bench;

/**
 * What the waited ACTION (`waitMs`) saves where every request crosses a network: the engine's
 * patch chain on 500 hosts, 50 at a time, every request 20 ms away and the APPLY 100 ms more, with
 * the APPLY as an ACTION and GETs, and as one waited ACTION. Alternating, twice each; the fleet is
 * in this process (the time is the network's, not the CPU's).
 */
async function actionOverANetwork(ctx: Parameters<Bench>[0]): Promise<void> {
  const hosts = 500;
  const lanes = 50;
  const bytes = buildPayload({ name: 'fix', funcs: [{ target: 'xen_extra_version', returns: '-fix' }] }, { image: DEFAULT_IMAGE });
  const times: Record<'ACTION and GETs' | 'waited ACTION', number[]> = { 'ACTION and GETs': [], 'waited ACTION': [] };
  for (const mode of ['ACTION and GETs', 'waited ACTION', 'ACTION and GETs', 'waited ACTION'] as const) {
    const fleet = await startFleetServer({ hosts, port: 0, faults: { latencyMs: 20, actionLatencyMs: 100 } });
    try {
      const client = new FleetClient(fleet.fleet);
      const ids = fleet.fleet.hosts.map((h) => h.id);
      let next = 0;
      const t0 = performance.now();
      await Promise.all(
        Array.from({ length: lanes }, async () => {
          while (next < ids.length) {
            const a = client.host(ids[next++]!);
            await Promise.all([a.listAll(), a.call('xen_extra_version')]);
            await a.upload('fix', bytes);
            const status = mode === 'waited ACTION' ? (await a.actAndWait('fix', 'apply', { waitMs: 8_000, pollMs: 20 })).status : (await a.action('fix', 'apply'), await a.waitForAction('fix', { pollMs: 20 }));
            if (status?.state !== 'APPLIED') throw new Error(`${a.hostId}: the APPLY ended ${status?.state}`);
            await a.call('xen_extra_version');
          }
        }),
      );
      times[mode].push((performance.now() - t0) / 1000);
    } finally {
      await fleet.close();
    }
  }
  for (const [mode, t] of Object.entries(times)) {
    ctx.report({ name: `patch chain over a 20 ms network, ${mode} (${hosts} hosts)`, value: Math.min(...t), unit: 's', note: `best of ${t.map((x) => x.toFixed(2)).join(', ')} s; ${lanes} at a time, APPLY 100 ms; ${mode === 'waited ACTION' ? 'ideal 1.80 s (LIST, UPLOAD, ACTION, CALL)' : 'ideal 2.00 s (LIST, UPLOAD, ACTION, GET, CALL)'}` });
  }
}
