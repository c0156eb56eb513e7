/**
 * A chaos run: one rollout over an emulated fleet while, at seeded random moments, the worker
 * processes are SIGKILLed, the Temporal server is killed and restarted on its file, PostgreSQL is
 * stopped and started again, hosts reboot, hang, refuse APPLY or answer slowly. Afterwards a
 * repair (what an operator does after reboots), the rollback of the whole rollout (what an
 * operator does when the patch turns out bad), a read of every host's boot; then the invariants (invariants.ts) over the live hosts, the hypervisors' own journal and the event store.
 *
 * Everything runs on this machine with its own Temporal dev server (SQLite file) and its own
 * embedded PostgreSQL, so the run can kill them without hurting anything else. The seed decides
 * every fault, its host and its moment, and is printed first.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, writeFile, chmod } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Client, Connection } from '@temporalio/client';
import { verifyChains } from '../src/events/audit/verify.ts';
import { noticeBoots } from '../src/events/host-boots.ts';
import { migrate } from '../src/events/migrate.ts';
import { foldHostStack } from '../src/events/projections/host-stack.ts';
import { EventStore } from '../src/events/store.ts';
import { hostStream } from '../src/events/streams.ts';
import { hash32, mulberry32 } from '../src/emulator/faults.ts';
import { hostImage, startFleetServer, type RunningFleet } from '../src/emulator/index.ts';
import { FleetClient } from '../src/agent/index.ts';
import { readLiveStates } from '../src/agent/live-state.ts';
import { buildPayload, DEFAULT_IMAGE } from '../src/payload/index.ts';
import { readPlanFile, resolvePlanPayloads, startRollout } from '../src/control/rollouts.ts';
import { startRepair, startRollback } from '../src/control/steer.ts';
import { createPool } from '../src/runtime/database.ts';
import { startEmbeddedPostgres, type EmbeddedPostgres } from '../src/runtime/embedded-postgres.ts';
import { createLogger } from '../src/runtime/logger.ts';
import { killGroup, resolveTemporalCli, startTemporalDevServer, type TemporalDevServer } from '../src/runtime/temporal-server.ts';
import type { FaultsInput } from '../src/emulator/faults.ts';
import * as inv from './invariants.ts';
import { EmulatorAdmin } from '../src/emulator/admin-client.ts';

const BIN = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', 'bin', 'fleetpatch.js');

export interface ChaosOptions {
  seed: number;
  hosts: number;
  /** Worker processes sharing the rollout's batches. */
  workers: number;
  concurrency: number;
  /** Emulated duration of every asynchronous action (ms): the rollout's pace. */
  actionMs: number;
  /** How many of each fault to inject. */
  faults: { workerKills: number; temporalRestarts: number; postgresOutages: number; reboots: number; hungHosts: number; applyFailures: number; wrongAnswers: number; slowHosts: number };
  /** PostgreSQL stays down this long (ms). */
  postgresDownMs: number;
  /** The whole run gives up after this long (ms). */
  deadlineMs: number;
  /** Where to say what happens (a line per fault and phase). */
  say: (line: string) => void;
}

export interface ChaosReport {
  seed: number;
  hosts: number;
  status: string;
  injected: Record<string, number>;
  verdicts: inv.Verdict[];
  ok: boolean;
  seconds: number;
}

interface Fault {
  at: number;
  kind: keyof ChaosOptions['faults'];
  host?: string;
}

/** The seeded schedule: which fault, on which host, how many ms after the rollout starts. */
export function schedule(opts: Pick<ChaosOptions, 'seed' | 'hosts' | 'faults'>, windowMs: number): Fault[] {
  const rand = mulberry32(hash32(`chaos\u0000${opts.seed}`));
  const hostIds = Array.from({ length: opts.hosts }, (_, i) => `host-${String(i).padStart(4, '0')}`);
  const out: Fault[] = [];
  const used = new Set<string>();
  const pickHost = () => {
    for (;;) {
      const h = hostIds[Math.floor(rand() * hostIds.length)]!;
      if (!used.has(h)) {
        used.add(h);
        return h;
      }
    }
  };
  for (const [kind, n] of Object.entries(opts.faults) as [keyof ChaosOptions['faults'], number][]) {
    for (let i = 0; i < n; i++) {
      const hostFault = kind === 'reboots' || kind === 'hungHosts' || kind === 'applyFailures' || kind === 'wrongAnswers' || kind === 'slowHosts';
      out.push({ at: Math.floor(rand() * windowMs), kind, ...(hostFault ? { host: pickHost() } : {}) });
    }
  }
  return out.sort((a, b) => a.at - b.at);
}

export async function runChaos(opts: ChaosOptions): Promise<ChaosReport> {
  const started = Date.now();
  const logger = createLogger('error', { pretty: false, name: 'chaos' });
  const tmp = await mkdtemp(path.join(os.tmpdir(), 'fleetpatch-chaos-'));
  await chmod(tmp, 0o755);
  const say = opts.say;
  const stops: (() => Promise<void>)[] = [];
  const workers: ChildProcess[] = [];
  try {
    say(`seed ${opts.seed}: ${opts.hosts} hosts, ${opts.workers} workers, concurrency ${opts.concurrency}, actions ${opts.actionMs} ms`);
    // Services this run owns (and kills).
    let pg: EmbeddedPostgres = await startEmbeddedPostgres({ dataDir: tmp, port: 0, logger });
    stops.push(() => pg.stop());
    const temporalDir = path.join(tmp, 'temporal');
    const cli = await resolveTemporalCli(logger);
    let temporal: TemporalDevServer = await startTemporalDevServer({ cli, namespace: 'default', logger, port: 0, stateDir: temporalDir });
    const temporalPort = Number(temporal.address.split(':')[1]);
    stops.push(() => temporal.stop());
    const pool = createPool(pg.url, { max: 8, applicationName: 'fleetpatch-chaos' });
    stops.push(() => pool.end());
    await migrate(pool);
    const store = new EventStore(pool);

    const fleet: RunningFleet = await startFleetServer({ hosts: opts.hosts, images: [hostImage(DEFAULT_IMAGE)], seed: opts.seed, actionDurationMs: opts.actionMs, logger });
    stops.push(() => fleet.close());
    const fleetClient = await FleetClient.open(fleet.fleetFile);
    const taskQueue = `chaos-${opts.seed}`;
    const env = {
      TEMPORAL_ADDRESS: temporal.address,
      TEMPORAL_NAMESPACE: 'default',
      TEMPORAL_TASK_QUEUE: taskQueue,
      DATABASE_URL: pg.url,
      FLEETPATCH_FLEET_FILE: fleet.fleetFile,
      FLEETPATCH_DATA_DIR: path.join(tmp, 'data'),
      LOG_LEVEL: 'warn',
    };
    const spawnWorker = async (i: number): Promise<ChildProcess> => {
      const child = spawn(process.execPath, [BIN, 'worker'], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
      await new Promise<void>((resolve, reject) => {
        let out = '';
        const onData = (d: Buffer) => {
          out += d.toString();
          if (out.includes('worker polling')) resolve();
        };
        child.stdout!.on('data', onData);
        child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
        child.on('exit', (code) => reject(new Error(`worker ${i} exited with ${code} before polling: ${out.slice(-1000)}`)));
      });
      child.removeAllListeners('exit');
      workers[i] = child;
      return child;
    };
    await mkdir(env.FLEETPATCH_DATA_DIR, { recursive: true });
    for (let i = 0; i < opts.workers; i++) await spawnWorker(i);
    stops.push(async () => {
      for (const w of workers) w?.kill('SIGKILL');
    });

    // The rollout: waves, a budget wide enough for the host faults injected, verification, rollback on failure.
    const dir = path.join(tmp, 'plan');
    await mkdir(dir, { recursive: true });
    await writeFile(path.join(dir, 'fix.livepatch'), buildPayload({ name: 'fix', funcs: [{ target: 'xen_extra_version', returns: '-chaos' }], writableData: 8 }, { image: DEFAULT_IMAGE }));
    const hostFaults = opts.faults.hungHosts + opts.faults.applyFailures + opts.faults.wrongAnswers;
    await writeFile(
      path.join(dir, 'plan.yaml'),
      [
        `name: chaos-${opts.seed}`,
        'payloads: [{ file: fix.livepatch }]',
        'allowUnsigned: true',
        'waves: [{ name: canary, hosts: 5 }, { name: quarter, hosts: "25%" }, { name: rest, hosts: "100%" }]',
        `concurrency: ${opts.concurrency}`,
        `budget: { perWave: ${hostFaults + 1}, total: ${hostFaults + 1} }`,
        'verify: { call: xen_extra_version, expect: "-chaos" }',
        'onFailure: rollback',
        '',
      ].join('\n'),
    );
    const { plan, dir: planDir } = await readPlanFile(path.join(dir, 'plan.yaml'));
    const resolved = await resolvePlanPayloads(plan, planDir, { pool, actor: { kind: 'system', id: 'chaos' }, store: true });
    const ours = new Set(resolved.payloads.map((p) => p.buildId));

    const connection = await Connection.connect({ address: temporal.address });
    stops.push(() => connection.close());
    const client = new Client({ connection, namespace: 'default' });
    const s = await startRollout(client, taskQueue, resolved, { requestedBy: { kind: 'system', id: 'chaos' }, rolloutId: `chaos-${opts.seed}` });
    say(`rollout ${s.rolloutId} started`);

    // The faults, at their moments.
    const ideal = Math.ceil(opts.hosts / opts.concurrency) * opts.actionMs * 2;
    const faults = schedule(opts, Math.max(5_000, ideal));
    const injected: Record<string, number> = {};
    const faultyHosts = new Set<string>();
    const rules: NonNullable<FaultsInput['rules']> = [];
    const t0 = Date.now();
    const pushRules = async () => fleet.setFaults({ rules: [...rules] });
    const inject = async (f: Fault): Promise<void> => {
      injected[f.kind] = (injected[f.kind] ?? 0) + 1;
      switch (f.kind) {
        case 'workerKills': {
          const i = Math.floor(mulberry32(hash32(`${opts.seed}/${f.at}`))() * workers.length);
          say(`+${((Date.now() - t0) / 1000).toFixed(1)}s SIGKILL worker ${i}`);
          const victim = workers[i];
          if (!victim || victim.exitCode !== null || victim.signalCode !== null) return;
          victim.kill('SIGKILL');
          await new Promise((r) => setTimeout(r, 1000));
          await spawnWorker(i);
          return;
        }
        case 'temporalRestarts': {
          say(`+${((Date.now() - t0) / 1000).toFixed(1)}s SIGKILL the Temporal server; restart in 5 s on its file`);
          const record = JSON.parse(await readFile(path.join(temporalDir, 'server.json'), 'utf8')) as { pid: number };
          killGroup(record.pid, 'SIGKILL');
          await new Promise((r) => setTimeout(r, 5000));
          // Same port and file: every client (ours, the workers') reconnects by itself.
          temporal = await startTemporalDevServer({ cli, namespace: 'default', logger, port: temporalPort, stateDir: temporalDir });
          say(`+${((Date.now() - t0) / 1000).toFixed(1)}s the Temporal server is back`);
          return;
        }
        case 'postgresOutages': {
          say(`+${((Date.now() - t0) / 1000).toFixed(1)}s stop PostgreSQL for ${opts.postgresDownMs / 1000} s`);
          await pg.stop();
          await new Promise((r) => setTimeout(r, opts.postgresDownMs));
          pg = await startEmbeddedPostgres({ dataDir: tmp, port: pg.port, logger });
          say(`+${((Date.now() - t0) / 1000).toFixed(1)}s PostgreSQL is back`);
          return;
        }
        case 'reboots':
          say(`+${((Date.now() - t0) / 1000).toFixed(1)}s reboot ${f.host}`);
          await fleetClient.host(f.host!).reboot({ downMs: 500 }).catch(() => undefined);
          return;
        case 'hungHosts':
          say(`+${((Date.now() - t0) / 1000).toFixed(1)}s ${f.host} hangs (every request, for the rest of the rollout)`);
          faultyHosts.add(f.host!);
          rules.push({ kind: 'unreachable', hosts: [f.host!], mode: 'hang' });
          await pushRules();
          return;
        case 'applyFailures':
          say(`+${((Date.now() - t0) / 1000).toFixed(1)}s APPLY will fail on ${f.host}`);
          faultyHosts.add(f.host!);
          rules.push({ kind: 'applyFailure', hosts: [f.host!], errno: 'EINVAL', reason: 'chaos: patching failed' });
          await pushRules();
          return;
        case 'wrongAnswers':
          say(`+${((Date.now() - t0) / 1000).toFixed(1)}s ${f.host}'s patched function will answer wrongly (verification fails)`);
          faultyHosts.add(f.host!);
          rules.push({ kind: 'verifyFailure', hosts: [f.host!], result: '-wrong' });
          await pushRules();
          return;
        case 'slowHosts':
          say(`+${((Date.now() - t0) / 1000).toFixed(1)}s ${f.host} answers 300 ms slower`);
          rules.push({ kind: 'latency', hosts: [f.host!], ms: 300, jitterMs: 0, on: 'all' });
          await pushRules();
          return;
      }
    };
    // Each fault at its own moment: an outage being waited out does not delay the next fault.
    const chaos = Promise.all(
      faults.map(async (f) => {
        await new Promise((r) => setTimeout(r, Math.max(0, f.at - (Date.now() - t0))));
        await inject(f);
      }),
    );

    const deadline = started + opts.deadlineMs;
    let status = 'timed out';
    for (;;) {
      if (Date.now() > deadline) break;
      try {
        const d = await client.workflow.getHandle(s.workflowId).describe();
        if (d.status.name === 'COMPLETED') {
          status = (await client.workflow.getHandle(s.workflowId).result()).status;
          break;
        }
        if (d.status.name !== 'RUNNING') {
          status = d.status.name.toLowerCase();
          break;
        }
      } catch {
        // Temporal is being restarted: ask again.
      }
      await new Promise((r) => setTimeout(r, 500));
    }
    await chaos;
    say(`rollout ${s.rolloutId} ended: ${status} after ${((Date.now() - t0) / 1000).toFixed(1)} s`);

    // Faults off; hung hosts answer again. An operator repairs what reboots took away.
    await fleet.setFaults({ rules: [] });
    let repairSummary = '';
    if (status === 'succeeded') {
      const repair = await startRepair(client, taskQueue, store, s.rolloutId, { kind: 'system', id: 'chaos' }, 'hosts rebooted during the chaos run');
      const r = await repair.result();
      repairSummary = `${r.repair}: ${r.lost} host(s) had lost the payload, ${r.patched} patched again, ${r.failed} failed`;
      say(repairSummary);
    }
    // The patch turns out bad after all: the whole rollout is rolled back, on a fleet that went
    // through every fault above. (A rollout that rolled back by itself has done this already.)
    let rollbackSummary = status === 'rolled-back' ? 'rolled back by the rollout itself' : '';
    if (status === 'succeeded') {
      const rb = await (await startRollback(client, taskQueue, s.rolloutId, { kind: 'system', id: 'chaos' }, 'chaos: the patch is bad after all')).result();
      rollbackSummary = `rollback ${rb.outcome}: ${rb.rolledBack} restored, ${rb.nothingToDo} had nothing to undo, ${rb.stackGrew + rb.unrecoverable + rb.failed} not back`;
      say(rollbackSummary);
    }

    // Every host read once more, as `audit replay` would: reboots fleetpatch has not seen yet are
    // recorded (a fact it can know from the boot id); nothing else is written.
    const live = await readLiveStates(fleetClient, fleetClient.hostIds);
    const boots = [...live].flatMap(([hostId, st]) => (st.ok && st.state.boot ? [{ hostId, bootId: st.state.boot.id, bootedAt: st.state.boot.at }] : []));
    await noticeBoots(store, boots, { actor: { kind: 'system', id: 'chaos' } });

    const events = (await store.readAll(0, 10_000_000)).map((e) => e.event);
    const liveStacks = new Map([...live].map(([id, st]) => [id, st.ok ? st.state.applied.map((a) => a.buildId) : ['<unreachable>']]));
    const liveLoaded = new Map([...live].map(([id, st]) => [id, st.ok ? st.state.loaded.map((l) => l.buildId) : ['<unreachable>']]));
    const replayed = new Map<string, string[]>();
    for (const id of fleetClient.hostIds) replayed.set(id, foldHostStack(id, await store.readStream(hostStream(id))).applied.map((a) => a.buildId));
    const journal = await new EmulatorAdmin(fleetClient.fleet).journal();
    const failed = new Map<string, string>();
    for (const e of events) {
      if (e.type === 'HostPatchFinished' && e.outcome === 'failed') failed.set(e.hostId, `${e.failure?.stage} ${e.failure?.code}: ${e.failure?.reason}`);
      if (e.type === 'HostPatchFinished' && e.outcome !== 'failed') failed.delete(e.hostId);
    }
    const chains = await verifyChains(store);
    const budgetOk = status === 'succeeded' ? failed.size <= hostFaults + 1 : status === 'rolled-back';
    const verdicts: inv.Verdict[] = [
      inv.stacksAgree(liveStacks, replayed),
      inv.nothingAppliedTwice(journal, ours),
      inv.everyChangeRecorded(journal, events),
      inv.everyCheckRecorded(journal, events),
      inv.failuresAreHostFaults(failed, faultyHosts),
      inv.noUnexplainedDrift(events),
      inv.nothingLeftAfterRollback(liveLoaded, ours, rollbackSummary),
      { name: 'every hash chain verifies, no event missing or duplicated', ok: chains.ok, detail: `${chains.events} events in ${chains.streams} streams`, problems: chains.ok ? [] : [JSON.stringify(chains).slice(0, 500)] },
      { name: 'the rollout ended consistent with its budget and the faults', ok: budgetOk && status !== 'timed out', detail: `${status}; ${failed.size} host(s) failed, budget ${hostFaults + 1}${repairSummary ? `; ${repairSummary}` : ''}`, problems: budgetOk ? [] : [`ended ${status} with ${failed.size} failures`] },
    ];
    return { seed: opts.seed, hosts: opts.hosts, status, injected, verdicts, ok: verdicts.every((v) => v.ok), seconds: Math.round((Date.now() - started) / 1000) };
  } finally {
    for (const stop of stops.reverse()) await stop().catch(() => undefined);
    await rm(tmp, { recursive: true, force: true }).catch(() => undefined);
  }
}
