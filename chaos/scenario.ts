/**
 * A chaos run, in four phases over one emulated fleet, each with its faults:
 *
 * 1. rollout: the rollout of `fix` to every host while worker processes are SIGKILLed, the
 *    Temporal server is killed and restarted on its file, PostgreSQL is stopped and started again,
 *    hosts hang, refuse APPLY, answer wrongly or slowly, and reboot: hosts already patched (the
 *    repair's work) and hosts being patched;
 * 2. repair (what an operator does after reboots): APPLY refused on a host that lost the payload,
 *    every worker SIGKILLed while the repair's batch holds hosts, a host the repair patched
 *    rebooting; then the repair's record is compared with the live hosts;
 * 3. replace: a REPLACE rollout of `fix2` over part of the fleet, the hosts that run nothing
 *    (REPLACE on an empty stack) among them, then its rollback (back to `fix`);
 * 4. rollback of the whole rollout (what an operator does when the patch turns out bad): every
 *    worker SIGKILLed while its batch holds hosts, a host rebooting in the middle of it.
 *
 * Faults are timed by progress (the share of the phase's hosts finished, read from the work
 * list), not by the clock, so they land while the phase runs whatever the machine's speed. Then a
 * read of every host's boot, and the invariants (invariants.ts) over the live hosts, the
 * hypervisors' own journal and the event store.
 *
 * Everything runs on this machine with its own Temporal dev server (SQLite file) and its own
 * embedded PostgreSQL, so the run can kill them without hurting anything else. The seed decides
 * every fault, its phase, its moment (the progress it waits for) and its host (among the ones in
 * the state it needs at that moment), and is printed first.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, writeFile, chmod } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Client, Connection } from '@temporalio/client';
import { verifyChains } from '../src/events/audit/verify.ts';
import type { DomainEvent } from '../src/events/catalogue.ts';
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
import { rollbackHosts, rollbackProgress, rolloutHosts, rolloutProgress, type Progress } from './progress.ts';
import { EmulatorAdmin } from '../src/emulator/admin-client.ts';

type LiveStates = Awaited<ReturnType<typeof readLiveStates>>;

const BIN = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', 'bin', 'fleetpatch.js');
/** The plan's waves; a repair's hosts run in the wave after them. */
const PLAN_WAVES = 3;

export interface ChaosOptions {
  seed: number;
  hosts: number;
  /** Worker processes sharing the rollout's batches. */
  workers: number;
  concurrency: number;
  /** Emulated duration of every asynchronous action (ms): the rollout's pace. */
  actionMs: number;
  /** How many of each fault to inject, over the phases (`PHASES_OF`). */
  faults: { workerKills: number; temporalRestarts: number; postgresOutages: number; reboots: number; hungHosts: number; applyFailures: number; wrongAnswers: number; slowHosts: number };
  /** PostgreSQL stays down this long (ms). */
  postgresDownMs: number;
  /** The whole run gives up after this long (ms). */
  deadlineMs: number;
  /** Where to say what happens (a line per fault and phase). */
  say: (line: string) => void;
}

export type Phase = 'rollout' | 'repair' | 'replace' | 'rollback';
export type FaultKind = keyof ChaosOptions['faults'];

/** A fault that landed: in which phase, at what share of the phase's hosts finished, on which host. */
export interface LandedFault {
  phase: Phase;
  kind: FaultKind;
  host?: string;
  progress: string;
}

export interface ChaosReport {
  seed: number;
  hosts: number;
  status: string;
  /** Faults that landed, by kind. */
  injected: Record<string, number>;
  landed: LandedFault[];
  /** Scheduled faults whose phase ended (or never ran) before their moment came. */
  missed: { phase: Phase; kind: FaultKind; why: string }[];
  /** What each phase after the rollout did, in words ('' when it did not run). */
  phases: { repair: string; replace: string; rollback: string };
  verdicts: inv.Verdict[];
  ok: boolean;
  seconds: number;
  /**
   * For every host a failed invariant names: the hypervisor's journal of it and the events about
   * it, in order (the run's services are gone when it ends: this is what is left to look at).
   */
  offenders: Record<string, { journal: unknown[]; events: unknown[] }>;
}

export interface Fault {
  phase: Phase;
  /** The share of the phase's hosts finished (0..1) the fault waits for. */
  at: number;
  kind: FaultKind;
  /** Its number among the faults of its kind in its phase (which host it looks for). */
  n: number;
}

/**
 * The phases each kind of fault goes to, in turn: the first fault of a kind to the first phase
 * listed, the next to the second, round again when there are more. Reboots in the rollout hit a
 * host already patched (the repair's work), then one being patched, then one patched again.
 */
export const PHASES_OF: Record<FaultKind, readonly Phase[]> = {
  reboots: ['rollout', 'rollout', 'repair', 'rollback', 'rollout', 'replace'],
  workerKills: ['rollout', 'repair', 'rollback', 'replace'],
  applyFailures: ['rollout', 'repair', 'replace'],
  temporalRestarts: ['rollout', 'rollback'],
  postgresOutages: ['rollout', 'replace'],
  hungHosts: ['rollout'],
  wrongAnswers: ['rollout'],
  slowHosts: ['rollout'],
};

const HOST_FAULTS = new Set<FaultKind>(['hungHosts', 'applyFailures', 'wrongAnswers', 'slowHosts']);

/**
 * The range of progress a fault is placed in: late enough that there is something to hit, early
 * enough that it lands. A repair has few hosts: its faults come while they are being worked on.
 */
function windowOf(kind: FaultKind, phase: Phase): [number, number] {
  if (phase === 'rollout') return kind === 'reboots' ? [0.25, 0.85] : HOST_FAULTS.has(kind) ? [0, 0.6] : [0.05, 0.85];
  // A REPLACE or repair that must fail somewhere is told before it starts.
  if (kind === 'applyFailures') return [0, 0];
  if (phase === 'repair') return [0, 0.3];
  // A rollback's reboot comes before its worker kill: a kill leaves no held host to reboot for a
  // while (see rebootTarget), and late in a rollback no host is still waiting either.
  if (phase === 'rollback') return kind === 'reboots' ? [0.1, 0.35] : kind === 'workerKills' ? [0.45, 0.7] : [0.1, 0.7];
  return [0.1, 0.7];
}

/** The seeded schedule: every fault's phase and the progress it waits for. */
export function schedule(opts: Pick<ChaosOptions, 'seed' | 'faults'>): Fault[] {
  const rand = mulberry32(hash32(`chaos\u0000${opts.seed}`));
  const out: Fault[] = [];
  for (const [kind, count] of Object.entries(opts.faults) as [FaultKind, number][]) {
    const phases = PHASES_OF[kind];
    const perPhase = new Map<Phase, number>();
    for (let i = 0; i < count; i++) {
      const phase = phases[i % phases.length]!;
      const [lo, hi] = windowOf(kind, phase);
      const n = perPhase.get(phase) ?? 0;
      perPhase.set(phase, n + 1);
      out.push({ phase, at: lo + rand() * (hi - lo), kind, n });
    }
  }
  const order: Phase[] = ['rollout', 'repair', 'replace', 'rollback'];
  return out.sort((a, b) => order.indexOf(a.phase) - order.indexOf(b.phase) || a.at - b.at);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

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
    await writeFile(path.join(dir, 'fix2.livepatch'), buildPayload({ name: 'fix2', funcs: [{ target: 'xen_extra_version', returns: '-chaos-2' }] }, { image: DEFAULT_IMAGE }));
    const hostFaults = opts.faults.hungHosts + opts.faults.applyFailures + opts.faults.wrongAnswers;
    await writeFile(
      path.join(dir, 'plan.yaml'),
      [
        `name: chaos-${opts.seed}`,
        'payloads: [{ file: fix.livepatch }]',
        'allowUnsigned: true',
        `waves: [{ name: canary, hosts: 5 }, { name: quarter, hosts: "25%" }, { name: rest, hosts: "100%" }]`,
        `concurrency: ${opts.concurrency}`,
        `budget: { perWave: ${hostFaults + 1}, total: ${hostFaults + 1} }`,
        'verify: { call: xen_extra_version, expect: "-chaos" }',
        'onFailure: rollback',
        '',
      ].join('\n'),
    );
    const system = { kind: 'system' as const, id: 'chaos' };
    const { plan, dir: planDir } = await readPlanFile(path.join(dir, 'plan.yaml'));
    const resolved = await resolvePlanPayloads(plan, planDir, { pool, actor: system, store: true });
    const ours = new Set(resolved.payloads.map((p) => p.buildId));

    const connection = await Connection.connect({ address: temporal.address });
    stops.push(() => connection.close());
    const client = new Client({ connection, namespace: 'default' });
    const rolloutId = `chaos-${opts.seed}`;
    const hostIds = fleetClient.hostIds;

    const faults = schedule(opts);
    const injected: Record<string, number> = {};
    const landed: LandedFault[] = [];
    const missed: ChaosReport['missed'] = [];
    const faultyHosts = new Set<string>();
    /** Hosts that rebooted after the rollout patched them: what the repair has to do. */
    const lostCandidates = new Set<string>();
    /** A host takes one fault of the rollout's (a repair's failure goes to a host that lost the payload). */
    const used = new Set<string>();
    const rules: NonNullable<FaultsInput['rules']> = [];
    const t0 = Date.now();
    const when = () => `+${((Date.now() - t0) / 1000).toFixed(1)}s`;
    const pushRules = async () => fleet.setFaults({ rules: [...rules] });
    const liftRules = async () => {
      rules.length = 0;
      await pushRules();
    };
    /** Hosts a fault told before its phase went to (they may have had a fault of the rollout's). */
    const told = new Set<string>();
    /** A host among `candidates` (host order) not `taken` yet, chosen by the seed and the fault; null when there is none. */
    const pick = (f: Fault, candidates: readonly string[], taken: Set<string> = used): string | null => {
      const free = candidates.filter((h) => !taken.has(h));
      if (free.length === 0) return null;
      const h = free[Math.floor(mulberry32(hash32(`${opts.seed}\u0000${f.phase}\u0000${f.kind}\u0000${f.n}`))() * free.length)]!;
      taken.add(h);
      used.add(h);
      return h;
    };
    /**
     * What no record can survive is kept apart: a worker killed while it holds a host with facts
     * not yet committed, and that host rebooting before anyone reads it again (the change went
     * with the reboot; nothing on the host shows it: see docs/reliability.md). So a reboot goes to
     * a host being worked on only when no worker was killed within a retried batch's reach
     * (heartbeat timeout and more), and a kill waits until a lane had time to notice a reboot of
     * its host (which commits what it holds first).
     */
    let lastKillAt = -Infinity;
    let lastBusyRebootAt = -Infinity;
    let rebooting: Promise<unknown> = Promise.resolve();
    const KILL_REACH_MS = 30_000;
    const NOTICE_MS = 5_000;
    const killWorkers = async (which: number[]) => {
      for (const i of which) {
        const victim = workers[i];
        if (victim && victim.exitCode === null && victim.signalCode === null) victim.kill('SIGKILL');
      }
      await sleep(1000);
      await Promise.all(which.map((i) => spawnWorker(i)));
    };
    /** The host a reboot goes to, in the state its phase needs. */
    const rebootTarget = async (f: Fault, ctx: PhaseContext): Promise<string | null> => {
      // Hosts a batch holds, unless a worker was killed lately (see above).
      const busy = Date.now() - lastKillAt > KILL_REACH_MS;
      const held = busy
        ? await (f.phase === 'rollback' ? rollbackHosts(pool, ctx.rolloutId, 'running') : f.phase === 'repair' ? Promise.resolve([]) : rolloutHosts(pool, ctx.rolloutId, 'running'))
        : [];
      let h: string | null;
      switch (f.phase) {
        case 'rollout': {
          // A host already patched (the repair's work), every third one being patched now.
          const patched = await rolloutHosts(pool, rolloutId, 'patched');
          h = f.n % 3 !== 1 ? (pick(f, patched) ?? pick(f, held)) : (pick(f, held) ?? pick(f, patched));
          if (h && patched.includes(h)) lostCandidates.add(h);
          break;
        }
        case 'repair':
          // One the repair patched already, else one the rollout patched (the rollback finds it rebooted).
          h = pick(f, await rolloutHosts(pool, rolloutId, 'patched', { is: ctx.wave! })) ?? pick(f, await rolloutHosts(pool, rolloutId, 'patched', { below: PLAN_WAVES }));
          break;
        case 'replace':
          h = pick(f, held) ?? pick(f, await rolloutHosts(pool, ctx.rolloutId, 'planned'));
          break;
        case 'rollback':
          // One being restored, else one the rollback has not reached yet.
          h = pick(f, held) ?? pick(f, await rollbackHosts(pool, ctx.rolloutId, 'planned'));
          break;
      }
      if (h && held.includes(h)) lastBusyRebootAt = Date.now();
      return h;
    };

    interface PhaseContext {
      /** The rollout whose work list the phase's progress is read from. */
      rolloutId: string;
      /** The repair's wave. */
      wave?: number;
      /** Hosts a fault told before the phase starts may go to. */
      before?: readonly string[];
    }

    const inject = async (f: Fault, ctx: PhaseContext, progress: string): Promise<void> => {
      const land = (host?: string) => {
        injected[f.kind] = (injected[f.kind] ?? 0) + 1;
        landed.push({ phase: f.phase, kind: f.kind, progress, ...(host ? { host } : {}) });
      };
      const tell = (what: string) => say(`${when()} [${f.phase} ${progress}] ${what}`);
      switch (f.kind) {
        case 'workerKills': {
          // In the rollout one worker; later, every worker: the phase's batch is certainly among them.
          const which = f.phase === 'rollout' ? [Math.floor(mulberry32(hash32(`${opts.seed}/${f.at}`))() * workers.length)] : workers.map((_, i) => i);
          lastKillAt = Date.now();
          await rebooting;
          const wait = lastBusyRebootAt + NOTICE_MS - Date.now();
          if (wait > 0) await sleep(wait);
          lastKillAt = Date.now();
          tell(`SIGKILL worker ${which.join(', ')}; restarted a second later`);
          land();
          await killWorkers(which);
          return;
        }
        case 'temporalRestarts': {
          tell('SIGKILL the Temporal server; restart in 5 s on its file');
          land();
          const record = JSON.parse(await readFile(path.join(temporalDir, 'server.json'), 'utf8')) as { pid: number };
          killGroup(record.pid, 'SIGKILL');
          await sleep(5000);
          // Same port and file: every client (ours, the workers') reconnects by itself.
          temporal = await startTemporalDevServer({ cli, namespace: 'default', logger, port: temporalPort, stateDir: temporalDir });
          say(`${when()} the Temporal server is back`);
          return;
        }
        case 'postgresOutages': {
          tell(`stop PostgreSQL for ${opts.postgresDownMs / 1000} s`);
          land();
          await pg.stop();
          await sleep(opts.postgresDownMs);
          pg = await startEmbeddedPostgres({ dataDir: tmp, port: pg.port, logger });
          say(`${when()} PostgreSQL is back`);
          return;
        }
        case 'reboots': {
          const target = rebootTarget(f, ctx);
          rebooting = target.catch(() => null);
          const host = await target;
          if (!host) {
            missed.push({ phase: f.phase, kind: f.kind, why: 'no host in the state it needed' });
            return;
          }
          tell(`reboot ${host}${lostCandidates.has(host) && f.phase === 'rollout' ? ' (already patched)' : ''}`);
          land(host);
          await fleetClient.host(host).reboot({ downMs: 500 }).catch(() => undefined);
          return;
        }
        default: {
          // Host faults: in the rollout on a host it has not reached yet; told to a later phase before it starts.
          const host = ctx.before ? pick(f, ctx.before, told) : (pick(f, await rolloutHosts(pool, rolloutId, 'planned')) ?? pick(f, hostIds));
          if (!host) {
            missed.push({ phase: f.phase, kind: f.kind, why: 'no host left to take it' });
            return;
          }
          faultyHosts.add(host);
          land(host);
          if (f.kind === 'hungHosts') {
            tell(`${host} hangs (every request, for the rest of the ${f.phase})`);
            rules.push({ kind: 'unreachable', hosts: [host], mode: 'hang' });
          } else if (f.kind === 'applyFailures') {
            tell(`APPLY will fail on ${host}`);
            rules.push({ kind: 'applyFailure', hosts: [host], errno: 'EINVAL', reason: 'chaos: patching failed' });
          } else if (f.kind === 'wrongAnswers') {
            tell(`${host}'s patched function will answer wrongly (verification fails)`);
            rules.push({ kind: 'verifyFailure', hosts: [host], result: '-wrong' });
          } else {
            tell(`${host} answers 300 ms slower`);
            rules.push({ kind: 'latency', hosts: [host], ms: 300, jitterMs: 0, on: 'all' });
          }
          await pushRules();
        }
      }
    };

    /**
     * Runs one phase with its faults: those told before it starts first, then each as soon as the
     * phase's progress reaches its moment (a worker kill after the first phase also waits for a
     * batch to hold a host). Every fault runs on its own, so an outage being waited out does not
     * delay the next one; the phase ends when its work is done and every fault that fired is over.
     */
    const during = async <T>(phase: Phase, ctx: PhaseContext, work: () => Promise<T>, progress: () => Promise<Progress>): Promise<T> => {
      const pending = faults.filter((f) => f.phase === phase);
      for (const f of pending.filter((x) => phase !== 'rollout' && x.kind === 'applyFailures')) {
        pending.splice(pending.indexOf(f), 1);
        await inject(f, ctx, 'before it starts');
      }
      const fired: Promise<void>[] = [];
      let over = false;
      const tick = async () => {
        let p: Progress;
        try {
          p = await progress();
        } catch {
          return; // PostgreSQL is away (one of the faults): ask again.
        }
        if (p.total === 0) return;
        // A host being worked on counts half: a phase of two hosts is under way before either is done.
        const share = (p.finished + p.running / 2) / p.total;
        for (const f of [...pending]) {
          if (share < f.at) continue;
          if (phase !== 'rollout' && f.kind === 'workerKills' && p.running === 0) continue;
          pending.splice(pending.indexOf(f), 1);
          const at = `${p.finished}/${p.total} done`;
          fired.push(inject(f, ctx, at).catch((e: Error) => say(`${when()} could not inject ${f.kind}: ${e.message}`)));
        }
      };
      const poll = (async () => {
        while (!over) {
          await tick();
          await sleep(200);
        }
      })();
      try {
        return await work();
      } finally {
        over = true;
        await poll;
        await Promise.all(fired);
        for (const f of pending) {
          missed.push({ phase, kind: f.kind, why: `the ${phase} ended before ${Math.round(f.at * 100)}% of its hosts were done` });
          say(`${when()} [${phase}] ${f.kind} did not land: the ${phase} ended first`);
        }
      }
    };
    const skip = (phase: Phase, why: string) => {
      for (const f of faults.filter((x) => x.phase === phase)) missed.push({ phase, kind: f.kind, why });
    };

    /** Until the rollout's workflow ends (or the run's deadline passes): its final status. */
    const deadline = started + opts.deadlineMs;
    const outcomeOf = async (workflowId: string): Promise<string> => {
      for (;;) {
        if (Date.now() > deadline) return 'timed out';
        try {
          const handle = client.workflow.getHandle(workflowId);
          const d = await handle.describe();
          if (d.status.name === 'COMPLETED') return ((await handle.result()) as { status: string }).status;
          if (d.status.name !== 'RUNNING') return d.status.name.toLowerCase();
        } catch {
          // Temporal is being restarted: ask again.
        }
        await sleep(500);
      }
    };

    // ---- 1. the rollout ----------------------------------------------------------------------
    const s = await startRollout(client, taskQueue, resolved, { requestedBy: system, rolloutId });
    say(`rollout ${s.rolloutId} started`);
    const status = await during('rollout', { rolloutId }, () => outcomeOf(s.workflowId), () => rolloutProgress(pool, rolloutId));
    say(`${when()} rollout ${s.rolloutId} ended: ${status}`);
    // Hung hosts answer again; the faults of the phases after it are their own.
    await liftRules();

    // ---- 2. the repair -----------------------------------------------------------------------
    const phases = { repair: '', replace: '', rollback: '' };
    let repairVerdict: inv.Verdict = { name: 'every repair outcome is recorded per host, and is what the host runs', ok: true, detail: `no repair: the rollout ended ${status}`, problems: [] };
    const readLive = async (): Promise<LiveStates> => {
      const live = await readLiveStates(fleetClient, hostIds);
      const boots = [...live].flatMap(([hostId, st]) => (st.ok && st.state.boot ? [{ hostId, bootId: st.state.boot.id, bootedAt: st.state.boot.at }] : []));
      // As `audit replay` would: reboots fleetpatch has not seen yet are recorded (a fact it can know from the boot id).
      await noticeBoots(store, boots, { actor: system });
      return live;
    };
    const stacksOf = (live: LiveStates) => new Map([...live].map(([id, st]) => [id, st.ok ? st.state.applied.map((a) => a.buildId) : ['<unreachable>']]));
    const readEvents = async (): Promise<DomainEvent[]> => (await store.readAll(0, 10_000_000)).map((e) => e.event);
    let replaceId: string | null = null;
    if (status === 'succeeded') {
      const wave = PLAN_WAVES;
      // The hosts that lost the payload answer slower: the repair runs long enough for its faults to land.
      if (lostCandidates.size > 0) {
        rules.push({ kind: 'latency', hosts: [...lostCandidates], ms: 300, jitterMs: 0, on: 'all' });
        await pushRules();
      }
      const r = await during(
        'repair',
        { rolloutId, wave, before: [...lostCandidates].sort() },
        async () => (await startRepair(client, taskQueue, store, rolloutId, system, 'hosts rebooted during the chaos run')).result(),
        () => rolloutProgress(pool, rolloutId, wave),
      );
      await liftRules();
      phases.repair = `${r.repair}: ${r.lost} host(s) had lost the payload, ${r.patched} patched again, ${r.failed} failed${r.budgetReason ? ` (stopped: ${r.budgetReason})` : ''}`;
      say(`${when()} ${phases.repair}`);
      // The repair's record against the hosts, read now: before anything else changes them.
      const live = stacksOf(await readLive());
      repairVerdict = inv.repairsRecorded(await readEvents(), live, ours, rolloutId);
    } else skip('repair', `the rollout ended ${status}`);

    // ---- 3. a REPLACE over part of the fleet, and its rollback ----------------------------------
    const ours2 = new Set(ours);
    let replaceOk = true;
    if (status === 'succeeded') {
      // Every tenth host (seeded), and every host that runs nothing of the rollout: a REPLACE on an empty stack.
      const rand = mulberry32(hash32(`replace\u0000${opts.seed}`));
      const empty = await rolloutHosts(pool, rolloutId, 'failed');
      const chosen = new Set([...hostIds.filter(() => rand() < 0.1), ...empty]);
      if (chosen.size < 5) for (const h of hostIds) if (chosen.size < 5) chosen.add(h);
      const ids = hostIds.filter((h) => chosen.has(h));
      await writeFile(
        path.join(dir, 'replace.yaml'),
        [
          `name: chaos-${opts.seed}-replace`,
          'payloads: [{ file: fix2.livepatch }]',
          'mode: replace',
          'allowUnsigned: true',
          `hosts: { ids: [${ids.join(', ')}] }`,
          'waves: [{ name: all, hosts: "100%" }]',
          `concurrency: ${opts.concurrency}`,
          'budget: { perWave: "50%", total: "50%" }',
          'verify: { call: xen_extra_version, expect: "-chaos-2" }',
          'onFailure: rollback',
          '',
        ].join('\n'),
      );
      const { plan: p2, dir: d2 } = await readPlanFile(path.join(dir, 'replace.yaml'));
      const resolved2 = await resolvePlanPayloads(p2, d2, { pool, actor: system, store: true });
      for (const p of resolved2.payloads) ours2.add(p.buildId);
      replaceId = `chaos-${opts.seed}-replace`;
      const id2 = replaceId;
      const s2 = await startRollout(client, taskQueue, resolved2, { requestedBy: system, rolloutId: id2 });
      say(`${when()} REPLACE rollout ${id2} started on ${ids.length} hosts (${empty.length} running nothing)`);
      const status2 = await during('replace', { rolloutId: id2, before: ids }, () => outcomeOf(s2.workflowId), () => rolloutProgress(pool, id2));
      await liftRules();
      replaceOk = status2 === 'succeeded';
      let back = '';
      if (status2 === 'succeeded') {
        const rb = await (await startRollback(client, taskQueue, id2, system, 'chaos: back to the first payload')).result();
        back = `; rolled back: ${rb.outcome}, ${rb.rolledBack} restored, ${rb.nothingToDo} had nothing to undo, ${rb.stackGrew + rb.unrecoverable + rb.failed} not back`;
        replaceOk = rb.outcome === 'rolled-back';
      }
      phases.replace = `${id2} ${status2} on ${ids.length} hosts (${empty.length} with an empty stack)${back}`;
      say(`${when()} ${phases.replace}`);
    } else skip('replace', `the rollout ended ${status}`);

    // ---- 4. the rollback of the whole rollout --------------------------------------------------
    // The patch turns out bad after all: the whole rollout is rolled back, on a fleet that went
    // through every fault above. (A rollout that rolled back by itself has done this already.)
    if (status === 'succeeded') {
      const rb = await during(
        'rollback',
        { rolloutId },
        async () => (await startRollback(client, taskQueue, rolloutId, system, 'chaos: the patch is bad after all')).result(),
        () => rollbackProgress(pool, rolloutId),
      );
      await liftRules();
      phases.rollback = `rollback ${rb.outcome}: ${rb.rolledBack} restored, ${rb.nothingToDo} had nothing to undo, ${rb.stackGrew + rb.unrecoverable + rb.failed} not back`;
      say(`${when()} ${phases.rollback}`);
    } else {
      phases.rollback = status === 'rolled-back' ? 'rolled back by the rollout itself' : '';
      skip('rollback', `the rollout ended ${status}`);
    }

    // Every host read once more; nothing else is written.
    const live = await readLive();
    const events = await readEvents();
    const liveStacks = stacksOf(live);
    const liveLoaded = new Map([...live].map(([id, st]) => [id, st.ok ? st.state.loaded.map((l) => l.buildId) : ['<unreachable>']]));
    const replayed = new Map<string, string[]>();
    for (const id of hostIds) replayed.set(id, foldHostStack(id, await store.readStream(hostStream(id))).applied.map((a) => a.buildId));
    const journal = await new EmulatorAdmin(fleetClient.fleet).journal();
    const failed = inv.failedHosts(events);
    // The rollout's budget counts its own waves' failures, not its repairs'.
    const rolloutFailed = new Set(events.flatMap((e) => (e.type === 'HostPatchFinished' && e.rolloutId === rolloutId && e.outcome === 'failed' && !e.wave.startsWith('repair-') ? [e.hostId] : [])));
    const chains = await verifyChains(store);
    const budgetOk = status === 'succeeded' ? rolloutFailed.size <= hostFaults + 1 : status === 'rolled-back';
    const verdicts: inv.Verdict[] = [
      inv.stacksAgree(liveStacks, replayed),
      inv.nothingAppliedTwice(journal, ours2),
      inv.everyChangeRecorded(journal, events),
      inv.everyCheckRecorded(journal, events),
      inv.failuresAreHostFaults(failed, faultyHosts),
      inv.noUnexplainedDrift(events),
      repairVerdict,
      inv.nothingLeftAfterRollback(liveLoaded, ours2, [phases.rollback, phases.replace && `the REPLACE: ${phases.replace}`].filter(Boolean).join('; ')),
      { name: 'every hash chain verifies, no event missing or duplicated', ok: chains.ok, detail: `${chains.events} events in ${chains.streams} streams`, problems: chains.ok ? [] : [JSON.stringify(chains).slice(0, 500)] },
      {
        name: 'the rollouts ended consistent with their budgets and the faults',
        ok: budgetOk && status !== 'timed out' && replaceOk,
        detail: `${status}; ${rolloutFailed.size} host(s) failed, budget ${hostFaults + 1}${phases.repair ? `; ${phases.repair}` : ''}${phases.replace ? `; the REPLACE: ${phases.replace}` : ''}`,
        problems: [...(budgetOk ? [] : [`ended ${status} with ${rolloutFailed.size} failures`]), ...(replaceOk ? [] : [`the REPLACE: ${phases.replace}`])],
      },
    ];
    const offenders: ChaosReport['offenders'] = {};
    for (const host of new Set(verdicts.flatMap((v) => (v.ok ? [] : v.problems.flatMap((p) => p.match(/host-\d+/g) ?? []))))) {
      offenders[host] = {
        journal: (journal[host] ?? []).map((e) => [e.at, e.boot, e.kind, e.name ?? '', e.check ? `${e.check.operation} ${e.check.kind} ${e.check.outcome}` : '', e.rc ?? '']),
        events: events
          .filter((e) => ('hostId' in e && e.hostId === host) || JSON.stringify(e).includes(`"${host}"`))
          .map((e) => [e.occurredAt, e.type, (e as { payload?: { name: string } }).payload?.name ?? '', (e as { wave?: string }).wave ?? '', (e as { outcome?: string }).outcome ?? '', e.correlation?.workflowId ?? '', ((e as { reason?: string }).reason ?? '').slice(0, 120)]),
      };
    }
    return { seed: opts.seed, hosts: opts.hosts, status, injected, landed, missed, phases, verdicts, ok: verdicts.every((v) => v.ok), seconds: Math.round((Date.now() - started) / 1000), offenders };
  } finally {
    for (const stop of stops.reverse()) await stop().catch(() => undefined);
    await rm(tmp, { recursive: true, force: true }).catch(() => undefined);
  }
}
