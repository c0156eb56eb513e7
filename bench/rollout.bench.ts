/**
 * Fleet rollouts end to end, beside what they could cost at best. Every configuration is run
 * (after a warm-up) several times; each run measures, on a fresh emulated fleet each time:
 *
 * - the rollout itself: a real Temporal server (the dev server on a SQLite file, WAL, as
 *   `fleetpatch` runs it; or cluster mode, the Temporal server on PostgreSQL with 4 history shards),
 *   PostgreSQL (embedded), `fleetpatch emulate` and `fleetpatch worker` as separate processes;
 * - the ideal, derived from the plan actually run (its preflight's waves and steps) and the faults
 *   the emulator runs with (read back from it): sum over waves and steps of
 *   ceil(hosts / concurrency) x the emulated latency of one host's request chain;
 * - the floor: a bare client in this process making the same HTTP calls as the engine (the
 *   preflight's LIST of every host, then each host's chain), with the same waves and concurrency,
 *   against a fresh fleet, after the same warm-up as the engine's (below): once without recording
 *   anything, once appending the same events in groups to PostgreSQL (src/events/group-commit.ts)
 *   with the same points of durability;
 * - CPU seconds per process (Temporal server, worker(s), emulator, PostgreSQL: postmaster and every
 *   backend, from /proc/<pid>/stat utime+stime), Temporal history events over every workflow run
 *   (continue-as-new chain included), PostgreSQL commits (pg_stat_database.xact_commit of the
 *   rollout's database), the worker's peak RSS, and HTTP requests per host (engine and floor).
 *
 * Each run's workers are fresh processes, and a fleet's worker is long-lived: before the measured
 * rollout, they take the first FLEETPATCH_BENCH_WORKER_WARMUP_HOSTS hosts (default 1,000; 0: none)
 * through a rollout and its rollback, not measured, so that the figures are those of a worker that
 * has run rollouts before: a worker spends its first thousands of hosts compiling its hot code.
 * After 100 hosts, two workers that had shared them still used 2.4–2.5 CPU seconds for a
 * 1,000-host rollout, after 1,000 hosts 1.3–1.5 (one worker: 1.6–1.8 against 1.2–1.8). With
 * several workers, again (up to six times) until each of them has run batches and workflow tasks.
 * The measured rollout then patches every host of the fleet from its former stack, those included.
 *
 * The workers run at LOG_LEVEL=warn; whatever they warn of during a run (a slow group commit, a
 * slow work-list query, PostgreSQL away) is printed under that run's line.
 *
 * Reported: the median of the runs for each figure.
 *
 * Configurations (FLEETPATCH_BENCH_ROLLOUT_CONFIGS, comma-separated, default all):
 *   rollout   a rollout per size in FLEETPATCH_BENCH_ROLLOUT_HOSTS (default "1000,10000"), dev server
 *   rollback  rollbackWorkflow over the whole fleet after a rollout of the first size finished
 *   cluster   the rollout of the first size in cluster mode with FLEETPATCH_BENCH_ROLLOUT_WORKERS
 *             workers (default 2)
 * Runs: FLEETPATCH_BENCH_RUNS (default 3), FLEETPATCH_BENCH_WARMUP (default 1). Plan and faults:
 * FLEETPATCH_BENCH_ROLLOUT_LATENCY_MS (default 100, emulated latency of every ACTION request),
 * FLEETPATCH_BENCH_ROLLOUT_CONCURRENCY (default 50); waves canary: 10, rest: 100%; verification
 * on. FLEETPATCH_BENCH_WORKER_NODE_ARGS (e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof") profiles the
 * workers, FLEETPATCH_BENCH_EMULATOR_NODE_ARGS the emulators; FLEETPATCH_BENCH_TIMELINE=1 prints each
 * measured workflow's history events with their times. A quick run: FLEETPATCH_BENCH_ROLLOUT_HOSTS=200 FLEETPATCH_BENCH_RUNS=1 FLEETPATCH_BENCH_WARMUP=0.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmod, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { Client, Connection } from '@temporalio/client';
import { buildPayload, DEFAULT_IMAGE, parsePayload } from '../src/payload/index.ts';
import { createLogger } from '../src/runtime/logger.ts';
import { startEmbeddedPostgres } from '../src/runtime/embedded-postgres.ts';
import { resolveTemporalCli, startTemporalDevServer } from '../src/runtime/temporal-server.ts';
import { clusterDatabaseFromUrl, startTemporalCluster } from '../src/runtime/temporal-cluster.ts';
import { createPool, type Pool } from '../src/runtime/database.ts';
import { migrate } from '../src/events/migrate.ts';
import { EventStore } from '../src/events/store.ts';
import { GroupCommitter, type Fact } from '../src/events/group-commit.ts';
import { FleetClient, type HostAgent } from '../src/agent/client.ts';
import { FleetpatchError } from '../src/errors.ts';
import { readLiveStates } from '../src/agent/live-state.ts';
import type { Faults, RequestKind } from '../src/emulator/faults.ts';
import type { DependencyCheck as HostCheck } from '../src/emulator/state-machine.ts';
import { planWaves } from '../src/rollout/waves.ts';
import { batchLanes } from '../src/rollout/batches.ts';
import { readPlanFile, resolvePlanPayloads, startRollout } from '../src/control/rollouts.ts';
import type { RolloutProgress } from '../src/rollout/progress.ts';
import type { ResolvedPlan } from '../src/rollout/types.ts';
import { rollbackWorkflow } from '../workflows/rollback.ts';
import type { Bench, BenchContext } from './report.ts';
import { EmulatorAdmin } from '../src/emulator/admin-client.ts';

const BIN = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', 'bin', 'fleetpatch.js');
const env = process.env;
const SIZES = (env.FLEETPATCH_BENCH_ROLLOUT_HOSTS ?? '1000,10000').split(',').map(Number).filter((n) => n > 0);
const CONFIGS = new Set((env.FLEETPATCH_BENCH_ROLLOUT_CONFIGS ?? 'rollout,rollback,cluster').split(',').map((s) => s.trim()));
const RUNS = Math.max(1, Number(env.FLEETPATCH_BENCH_RUNS ?? 3));
const WARMUP = Math.max(0, Number(env.FLEETPATCH_BENCH_WARMUP ?? 1));
const LATENCY_MS = Number(env.FLEETPATCH_BENCH_ROLLOUT_LATENCY_MS ?? 100);
const CONCURRENCY = Number(env.FLEETPATCH_BENCH_ROLLOUT_CONCURRENCY ?? 50);
const CLUSTER_WORKERS = Math.max(1, Number(env.FLEETPATCH_BENCH_ROLLOUT_WORKERS ?? 2));
/** Hosts the workers (and the floor's fleet) are warmed on before each measured run; the variable keeps its first name. */
const WARM_UP_HOSTS = Math.max(0, Number(env.FLEETPATCH_BENCH_WORKER_WARMUP_HOSTS ?? 1000));
/** CPU seconds a worker must have spent in the warm-up to count as warm (a batch of 100 hosts takes about 0.5). */
const WARM_WORKER_CPU_S = 0.3;
const WORKER_NODE_ARGS = env.FLEETPATCH_BENCH_WORKER_NODE_ARGS?.split(' ').filter(Boolean) ?? [];
const TIMELINE = env.FLEETPATCH_BENCH_TIMELINE === '1';
const EMULATOR_NODE_ARGS = env.FLEETPATCH_BENCH_EMULATOR_NODE_ARGS?.split(' ').filter(Boolean) ?? [];
const CANARY = 10;
const VERIFY = { call: 'xen_extra_version', expect: '-fix' };
/** The engine's GET interval while an action runs (activities/host-engine.ts, actionPollMs). */
const POLL_MS = 20;
/** How long the host waits for an action's work before it answers, as the engine asks (its request timeout less 2 s). */
const ACTION_WAIT_MS = 8_000;
const CLK_TCK = Number(execFileSync('getconf', ['CLK_TCK']).toString().trim()) || 100;

// ---- processes --------------------------------------------------------------------------------

interface Proc {
  child: ChildProcess;
  pid: number;
  /** What the process logged at warn or above (pino JSON lines), the last 20. */
  warnings: string[];
}

function spawnUntil(args: string[], penv: Record<string, string>, ready: RegExp, nodeArgs: string[] = []): Promise<Proc> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [...nodeArgs, BIN, ...args], { env: { ...env, ...penv }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let ok = false;
    let partial = '';
    const warnings: string[] = [];
    const onData = (d: Buffer) => {
      out = (out + d.toString()).slice(-20_000);
      const lines = (partial + d.toString()).split('\n');
      partial = lines.pop() ?? '';
      for (const line of lines) {
        const m = /"level":(\d+)/.exec(line);
        if (m && Number(m[1]) >= 40) warnings.push((/"msg":"((?:[^"\\]|\\.)*)"/.exec(line)?.[1] ?? line).slice(0, 300));
      }
      warnings.splice(0, Math.max(0, warnings.length - 20));
      if (!ok && ready.test(out)) {
        ok = true;
        resolve({ child, pid: child.pid!, warnings });
      }
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    child.on('exit', (code) => {
      if (!ok) reject(new Error(`fleetpatch ${args[0]} exited with ${code}: ${out.slice(-1500)}`));
    });
  });
}

async function stop(p: Proc | undefined): Promise<void> {
  if (!p || p.child.exitCode !== null) return;
  const exited = new Promise((r) => p.child.once('exit', r));
  p.child.kill('SIGTERM');
  const t = setTimeout(() => p.child.kill('SIGKILL'), 20_000);
  await exited;
  clearTimeout(t);
}

/** utime+stime of a process (and of its reaped children), in seconds. */
async function procCpu(pid: number): Promise<{ self: number; reaped: number; ppid: number } | undefined> {
  const text = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => undefined);
  if (!text) return undefined;
  const f = text.slice(text.lastIndexOf(')') + 2).split(' ');
  // f[0] is field 3 (state): ppid is field 4, utime..cstime fields 14..17.
  return { ppid: Number(f[1]), self: (Number(f[11]) + Number(f[12])) / CLK_TCK, reaped: (Number(f[13]) + Number(f[14])) / CLK_TCK };
}

/** PostgreSQL's CPU so far: the postmaster, its live backends and the ones that exited. */
async function postgresCpu(postmaster: number): Promise<number> {
  const main = await procCpu(postmaster);
  if (!main) return Number.NaN;
  let total = main.self + main.reaped;
  for (const name of await readdir('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const p = await procCpu(Number(name));
    if (p && p.ppid === postmaster) total += p.self;
  }
  return total;
}

async function peakRssMiB(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8').catch(() => '');
  return Number(/VmHWM:\s+(\d+)/.exec(status)?.[1] ?? 'NaN') / 1024;
}

interface CpuSnapshot {
  temporal: number;
  worker: number;
  /** Each worker process's share of `worker`, in the order they were started. */
  perWorker: number[];
  emulator: number;
  postgres: number;
}

async function cpuSnapshot(pids: { temporal: number; workers: number[]; emulator: number; postmaster: number }): Promise<CpuSnapshot> {
  const self = async (pid: number) => (await procCpu(pid))?.self ?? Number.NaN;
  const perWorker: number[] = [];
  for (const w of pids.workers) perWorker.push(await self(w));
  const worker = perWorker.reduce((a, b) => a + b, 0);
  return { temporal: await self(pids.temporal), worker, perWorker, emulator: await self(pids.emulator), postgres: await postgresCpu(pids.postmaster) };
}

const cpuDelta = (a: CpuSnapshot, b: CpuSnapshot): CpuSnapshot => ({
  temporal: b.temporal - a.temporal,
  worker: b.worker - a.worker,
  perWorker: b.perWorker.map((c, i) => c - (a.perWorker[i] ?? 0)),
  emulator: b.emulator - a.emulator,
  postgres: b.postgres - a.postgres,
});

// ---- Temporal -----------------------------------------------------------------------------------

/** Names of the history event types a rollout's workflow has (the API's enum numbers). */
const EVENT_TYPE_NAMES: Record<number, string> = {
  1: 'WorkflowExecutionStarted',
  2: 'WorkflowExecutionCompleted',
  5: 'WorkflowTaskScheduled',
  6: 'WorkflowTaskStarted',
  7: 'WorkflowTaskCompleted',
  10: 'ActivityTaskScheduled',
  11: 'ActivityTaskStarted',
  12: 'ActivityTaskCompleted',
  13: 'ActivityTaskFailed',
  14: 'ActivityTaskTimedOut',
  17: 'TimerStarted',
  18: 'TimerFired',
  19: 'TimerCanceled',
  25: 'MarkerRecorded (local activity)',
  26: 'WorkflowExecutionSignaled',
  28: 'WorkflowExecutionContinuedAsNew',
  41: 'WorkflowExecutionUpdateAccepted',
  43: 'WorkflowExecutionUpdateCompleted',
};

type HistoryEvent = {
  eventTime?: { seconds?: unknown; nanos?: number | null } | null;
  eventType?: unknown;
  activityTaskScheduledEventAttributes?: { activityType?: { name?: string | null } | null } | null;
  activityTaskStartedEventAttributes?: { identity?: string | null } | null;
  workflowTaskStartedEventAttributes?: { identity?: string | null } | null;
};

/**
 * Each history event's type and time from the run's first event, and the worker that took each
 * task (FLEETPATCH_BENCH_TIMELINE=1): with two workers, who ran which batch.
 */
function printTimeline(workflowId: string, events: HistoryEvent[]): void {
  const at = (e: HistoryEvent) => Number(e.eventTime?.seconds ?? 0) * 1000 + (e.eventTime?.nanos ?? 0) / 1e6;
  const t0 = events[0] ? at(events[0]) : 0;
  process.stderr.write(`  timeline of ${workflowId}:\n`);
  for (const e of events) {
    const type = typeof e.eventType === 'number' ? (EVENT_TYPE_NAMES[e.eventType] ?? String(e.eventType)) : String(e.eventType);
    const what = e.activityTaskScheduledEventAttributes?.activityType?.name;
    const who = e.activityTaskStartedEventAttributes?.identity ?? e.workflowTaskStartedEventAttributes?.identity;
    process.stderr.write(`    ${(at(e) - t0).toFixed(0).padStart(6)} ms  ${type.replace(/^EVENT_TYPE_/, '')}${what ? ` ${what}` : ''}${who ? ` (${who})` : ''}\n`);
  }
}

/** Events over every run of a workflow (following continue-as-new), and the longest run. */
async function historyStats(client: Client, workflowId: string): Promise<{ runs: number; total: number; longest: number }> {
  const latest = await client.workflow.getHandle(workflowId).describe();
  let runId: string | undefined = latest.raw.workflowExecutionInfo?.firstRunId ?? undefined;
  let runs = 0;
  let total = 0;
  let longest = 0;
  while (runId) {
    const h = client.workflow.getHandle(workflowId, runId);
    const d = await h.describe();
    runs++;
    total += d.historyLength;
    longest = Math.max(longest, d.historyLength);
    const history = await h.fetchHistory();
    if (TIMELINE) printTimeline(workflowId, history.events ?? []);
    runId = history.events?.at(-1)?.workflowExecutionContinuedAsNewEventAttributes?.newExecutionRunId ?? undefined;
  }
  return { runs, total, longest };
}

// ---- the ideal ---------------------------------------------------------------------------------

interface ChainStep {
  kind: RequestKind;
  label: string;
  /** An asynchronous action: the host waits for its work before it answers (ACTION's waitMs). */
  async?: boolean;
  /** Sent at the same time as the step before it: the chain waits for the longer of the two. */
  beside?: boolean;
}

const PATCH_CHAIN: ChainStep[] = [
  { kind: 'list', label: 'LIST' },
  { kind: 'call', label: `CALL ${VERIFY.call} (former result, beside the LIST)`, beside: true },
  { kind: 'upload', label: 'UPLOAD' },
  { kind: 'action', label: 'ACTION apply (waited on the host)', async: true },
  { kind: 'call', label: `CALL ${VERIFY.call} (verify)` },
];

const RESTORE_CHAIN: ChainStep[] = [
  { kind: 'list', label: 'LIST' },
  { kind: 'action', label: 'ACTION revert (waited on the host)', async: true },
  { kind: 'action', label: 'ACTION unload' },
  { kind: 'list', label: 'LIST' },
  { kind: 'call', label: `CALL ${VERIFY.call} (former result again)` },
];

/** Every rule must concern every host at every request: the ideal of anything else is not one number. */
function fleetWide(rule: Faults['rules'][number]): boolean {
  return !rule.hosts && !rule.labels && !rule.images && rule.afterRequests === undefined && rule.forRequests === undefined && rule.times === undefined && !('payload' in rule && rule.payload);
}

/** The emulated latency of one host's request chain (expected value of probabilistic rules), and what it consists of. */
function chainLatency(faults: Faults, chain: ChainStep[]): { ms: number; describe: string } {
  const parts: string[] = [];
  let total = 0;
  let previous = 0;
  for (const step of chain) {
    let ms = faults.latencyMs + (step.kind === 'action' ? faults.actionLatencyMs : 0);
    let duration = step.async ? faults.actionDurationMs : 0;
    for (const rule of faults.rules) {
      if (!fleetWide(rule)) throw new Error(`the bench's ideal needs fleet-wide faults; rule ${JSON.stringify(rule)} selects hosts, payloads or requests`);
      if (rule.kind === 'latency' && (rule.on === 'all' || step.kind === 'action')) ms += rule.probability * rule.ms;
      if (rule.kind === 'actionDuration' && step.async) duration = rule.probability * rule.ms + (1 - rule.probability) * duration;
    }
    // Two requests sent together cost the longer one.
    total += step.beside ? Math.max(0, ms + duration - previous) : ms + duration;
    previous = step.beside ? Math.max(previous, ms + duration) : ms + duration;
    parts.push(`${step.label}${ms + duration > 0 ? ` (${ms + duration} ms)` : ''}`);
  }
  return { ms: total, describe: `${parts.join(', ')} = ${total} ms per host` };
}

/** sum over waves and steps of ceil(hosts / concurrency) x chain */
function idealOf(waves: { concurrency: number; steps: { size: number }[] }[], chainMs: number): { seconds: number; formula: string } {
  let rounds = 0;
  const terms: string[] = [];
  for (const w of waves) {
    for (const s of w.steps) {
      if (s.size === 0) continue;
      rounds += Math.ceil(s.size / w.concurrency);
      terms.push(`ceil(${s.size}/${w.concurrency})`);
    }
  }
  return { seconds: (rounds * chainMs) / 1000, formula: `(${terms.join(' + ')}) = ${rounds} rounds x ${chainMs} ms` };
}

// ---- the floor: a bare client ------------------------------------------------------------------

interface FloorPayload {
  name: string;
  buildId: string;
  depends: string;
  bytes: Buffer;
}

const ACTOR = { kind: 'system' as const, id: 'bench-floor' };

/** The same events as the engine, appended through a GroupCommitter with the same durable points. */
class FloorRecorder {
  private readonly committer: GroupCommitter;
  constructor(
    store: EventStore,
    private readonly rolloutId: string,
  ) {
    this.committer = new GroupCommitter(store);
  }
  fact(key: string, body: Record<string, unknown>): Fact {
    return { key: `${this.rolloutId}/${key}`, event: { ...body, schemaVersion: 1, occurredAt: new Date().toISOString(), actor: ACTOR, correlation: { rolloutId: this.rolloutId } } as Fact['event'] };
  }
  async durable(facts: Fact[]): Promise<void> {
    await this.committer.submit(facts);
  }
  /** Committed in the background, not waited for: as the engine records a host's outcome (flushed after what lanes wait for). */
  later(facts: Fact[]): void {
    this.committer.submit(facts, [], { background: true }).catch((e: unknown) => (this.failed ??= e));
  }
  async drain(): Promise<void> {
    await this.committer.drain();
    if (this.failed !== undefined) throw this.failed;
  }
  private failed: unknown;
}

function hostCheckBody(hostId: string, payload: { name: string; buildId: string }, c: HostCheck): Record<string, unknown> {
  return {
    type: 'DependencyChecked',
    hostId,
    payload,
    phase: c.operation === 'upload' ? 'upload' : 'apply',
    on: c.kind,
    expected: c.expected,
    found: c.found,
    against: c.against === 'hypervisor' ? { kind: 'hypervisor' } : { kind: 'payload', name: c.againstName ?? '?', buildId: c.found },
    outcome: c.outcome === 'mismatch' ? 'mismatch' : 'match',
    reason: `checked by the hypervisor at ${c.operation.toUpperCase()}`,
  };
}

/**
 * A host request with the engine's answer to a transient fault (a keep-alive socket the emulator
 * closed, ECONNRESET under load): try again, at most 4 times (the engine waits 500 ms first; the
 * floor does not, so a retry costs it nothing but the request).
 */
async function again<T>(fn: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn();
    } catch (e) {
      if (!(e instanceof FleetpatchError && e.retryable) || attempt >= 4) throw e;
      floorRetries++;
    }
  }
}
let floorRetries = 0;

/** `lanes` at a time over `ids`. */
async function inLanes(ids: string[], lanes: number, fn: (id: string) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.max(1, Math.min(lanes, ids.length)) }, async () => {
      while (next < ids.length) await fn(ids[next++]!);
    }),
  );
}

/**
 * The engine's patch chain on one host, bare: LIST beside the former CALL, UPLOAD, APPLY (waited on the host; GETs only if it had not finished), verify CALL.
 * Recording, the engine's one durable point: the former state and fleetpatch's check of the APPLY,
 * before the UPLOAD; the rest is committed in the background, and drained at the end.
 */
async function floorPatch(agent: HostAgent, p: FloorPayload, rec: FloorRecorder | undefined, wave: string): Promise<void> {
  const hostId = agent.hostId;
  const payload = { name: p.name, buildId: p.buildId };
  // The stack and the former result are read at once, as the engine reads them.
  const [list, former] = await Promise.all([again(() => agent.listAll()), again(() => agent.call(VERIFY.call))]);
  if (rec) {
    const top = list.appliedStack.at(-1);
    await rec.durable([
      rec.fact(`${hostId}/started`, {
        type: 'HostPatchStarted',
        hostId,
        rollout: 'floor',
        formerStack: list.appliedStack.map((e) => ({ name: e.name, buildId: e.buildId })),
        formerLoaded: list.entries.map((e) => ({ name: e.name, buildId: e.buildId })),
        formerResult: { call: VERIFY.call, kind: former.kind, value: former.result === null ? null : String(former.result) },
      }),
      rec.fact(`${hostId}/check`, {
        type: 'DependencyChecked',
        hostId,
        payload,
        phase: 'apply',
        on: 'depends',
        expected: p.depends,
        found: top ? top.buildId : list.hypervisor.buildId,
        against: top ? { kind: 'payload', name: top.name, buildId: top.buildId } : { kind: 'hypervisor' },
        outcome: (top ? top.buildId : list.hypervisor.buildId) === p.depends ? 'match' : 'mismatch',
        reason: 'checked by the bench floor before APPLY',
      }),
    ]);
  }
  const up = await again(() => agent.upload(p.name, p.bytes));
  const { answer: r, status } = await again(() => agent.actAndWait(p.name, 'apply', { waitMs: ACTION_WAIT_MS, pollMs: POLL_MS }));
  if (status?.state !== 'APPLIED') throw new Error(`${hostId}: floor apply ended ${status?.state} rc ${status?.rc}`);
  const v = await again(() => agent.call(VERIFY.call));
  rec?.later([
    ...(up.dependencyCheck ? [rec.fact(`${hostId}/upload-check`, hostCheckBody(hostId, payload, up.dependencyCheck))] : []),
    rec.fact(`${hostId}/uploaded`, { type: 'PayloadUploaded', hostId, payload }),
    ...(r.dependencyCheck ? [rec.fact(`${hostId}/apply-check`, hostCheckBody(hostId, payload, r.dependencyCheck))] : []),
    rec.fact(`${hostId}/applied`, { type: 'PayloadApplied', hostId, payload }),
    rec.fact(`${hostId}/health`, { type: 'HealthChecked', hostId, outcome: String(v.result) === VERIFY.expect ? 'healthy' : 'unhealthy', check: VERIFY, observed: String(v.result), reason: 'bench floor' }),
    rec.fact(`${hostId}/finished`, { type: 'HostPatchFinished', rolloutId: 'floor', hostId, wave, outcome: 'patched', applied: [payload] }),
  ]);
}

/** The engine's restore chain on one patched host, bare: LIST, REVERT (waited on the host), UNLOAD, LIST, CALL. */
async function floorRestore(agent: HostAgent, p: FloorPayload, rec: FloorRecorder | undefined): Promise<void> {
  const hostId = agent.hostId;
  const payload = { name: p.name, buildId: p.buildId };
  await again(() => agent.listAll());
  await rec?.durable([]);
  const { status } = await again(() => agent.actAndWait(p.name, 'revert', { waitMs: ACTION_WAIT_MS, pollMs: POLL_MS }));
  if (status?.state !== 'CHECKED') throw new Error(`${hostId}: floor revert ended ${status?.state} rc ${status?.rc}`);
  await rec?.durable([rec.fact(`${hostId}/reverted`, { type: 'PayloadReverted', hostId, payload })]);
  await again(() => agent.action(p.name, 'unload'));
  await again(() => agent.listAll());
  const v = await again(() => agent.call(VERIFY.call));
  rec?.later([
    rec.fact(`${hostId}/unloaded`, { type: 'PayloadUnloaded', hostId, payload }),
    rec.fact(`${hostId}/restore-health`, { type: 'HealthChecked', hostId, outcome: 'healthy', check: { call: VERIFY.call, expect: String(v.result) }, observed: String(v.result), reason: 'bench floor' }),
    rec.fact(`${hostId}/rollback-finished`, { type: 'HostRollbackFinished', rolloutId: 'floor', hostId, outcome: 'rolled-back', reverted: [payload], reapplied: [], stackNow: [], formerStack: [] }),
  ]);
}

// ---- one run -----------------------------------------------------------------------------------

interface RunFigures {
  measured: number;
  ideal: number;
  floorBare: number;
  floorRecording: number;
  cpu: CpuSnapshot;
  historyEvents: number;
  historyRuns: number;
  historyLongest: number;
  commits: number;
  workerPeakMiB: number;
  requestsPerHost: number;
  floorRequestsPerHost: number;
  eventsPerHost: number;
  floorEventsPerHost: number;
  /** CPU seconds of the bare client (this process) and of the emulator during the floor with recording. */
  floorClientCpu: number;
  floorEmulatorCpu: number;
  status: string;
  /** The run did what it was meant to (every host patched, or rolled back): only those are timed. */
  ok: boolean;
  idealFormula: string;
  chain: string;
  /** What the workers logged at warn or above during the run (slow commits, PostgreSQL away, ...). */
  workerWarnings: string[];
}

interface Shared {
  tmp: string;
  serverUrl: string;
  postmaster: number;
  dev: { address: string; pid: number; client: Client };
  cluster?: { address: string; pid: number; client: Client };
  payloadDir: string;
  payload: FloorPayload;
  admin: pg.Client;
}

interface ConfigSpec {
  label: string;
  kind: 'rollout' | 'rollback';
  hosts: number;
  server: 'dev' | 'cluster';
  workers: number;
}

async function freshDatabase(s: Shared): Promise<{ name: string; url: string }> {
  const name = `fp_bench_${randomBytes(4).toString('hex')}`;
  await s.admin.query(`CREATE DATABASE ${name}`);
  return { name, url: Object.assign(new URL(s.serverUrl), { pathname: `/${name}` }).toString() };
}

async function dropDatabase(s: Shared, name: string): Promise<void> {
  await s.admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`).catch(() => undefined);
}

async function xactCommits(s: Shared, db: string): Promise<number> {
  const r = await s.admin.query('SELECT xact_commit FROM pg_stat_database WHERE datname = $1', [db]);
  return Number(r.rows[0]?.xact_commit ?? Number.NaN);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Events stored in the database, to count what a run recorded (after minus before). */
async function countEvents(db: Pool): Promise<number> {
  return Number((await db.query('SELECT count(*) AS n FROM events')).rows[0].n);
}
/** Backends publish their statistics at most once a second when idle. */
const STATS_SETTLE_MS = 1_600;

async function startEmulator(s: Shared, dir: string, hosts: number): Promise<{ proc: Proc; fleetFile: string; fleet: FleetClient }> {
  const fleetFile = path.join(dir, `fleet-${randomBytes(3).toString('hex')}.json`);
  const faultsFile = path.join(dir, 'faults.json');
  await writeFile(faultsFile, JSON.stringify({ actionLatencyMs: LATENCY_MS }));
  const proc = await spawnUntil(['emulate', '--hosts', String(hosts), '--port', '0', '--seed', '1', '--faults', faultsFile, '--fleet-file', fleetFile], { LOG_LEVEL: 'error', FLEETPATCH_DATA_DIR: s.tmp }, /Fleet file:/, EMULATOR_NODE_ARGS);
  return { proc, fleetFile, fleet: await FleetClient.open(fleetFile) };
}

/** The floor: a fresh fleet, the bare client, with or without recording. */
async function floorRun(
  s: Shared,
  dir: string,
  spec: ConfigSpec,
  record: boolean,
): Promise<{ seconds: number; requestsPerHost: number; eventsPerHost: number; clientCpu: number; emulatorCpu: number }> {
  const emu = await startEmulator(s, dir, spec.hosts);
  let db: { name: string; url: string } | undefined;
  let pool: Pool | undefined;
  try {
    const ids = emu.fleet.hostIds;
    const rolloutId = `floor-${randomBytes(4).toString('hex')}`;
    let rec: FloorRecorder | undefined;
    let store: EventStore | undefined;
    if (record) {
      db = await freshDatabase(s);
      pool = createPool(db.url, { max: 10 });
      await migrate(pool);
      store = new EventStore(pool);
      rec = new FloorRecorder(store, rolloutId);
    }
    // The fleet warms up as the engine's does (its emulator is a fresh process too): the first
    // hosts patched and restored, not timed, recorded under a rollout id of their own.
    const warm = ids.slice(0, Math.min(WARM_UP_HOSTS, ids.length));
    if (warm.length > 0) {
      const warmRec = store ? new FloorRecorder(store, `${rolloutId}-warm-up`) : undefined;
      await inLanes(warm, CONCURRENCY, (id) => floorPatch(emu.fleet.host(id), s.payload, warmRec, 'warm-up'));
      await inLanes(warm, CONCURRENCY, (id) => floorRestore(emu.fleet.host(id), s.payload, warmRec));
      await warmRec?.drain();
    }
    const eventsBefore = pool ? await countEvents(pool) : 0;
    if (spec.kind === 'rollback') {
      // The fleet is patched first (not timed), as a rollout would leave it.
      await inLanes(ids, CONCURRENCY, (id) => floorPatch(emu.fleet.host(id), s.payload, undefined, 'rest'));
    }
    const before = (await new EmulatorAdmin(emu.fleet.fleet).stats()).requests;
    const started = performance.now();
    const cpu0 = process.cpuUsage();
    const emuCpu0 = (await procCpu(emu.proc.pid))?.self ?? Number.NaN;
    if (spec.kind === 'rollout') {
      // The preflight reads every host (64 at a time, as the preflight activity), recording its checks.
      const live = await readLiveStates(emu.fleet, ids, { concurrency: 64 });
      if (rec) {
        const facts = ids.map((id) => {
          const st = live.get(id);
          const found = st?.ok ? st.state.hypervisorBuildId : null;
          return rec.fact(`${id}/preflight`, { type: 'DependencyChecked', hostId: id, payload: { name: s.payload.name, buildId: s.payload.buildId }, phase: 'preflight', on: 'depends', expected: s.payload.depends, found, against: { kind: 'hypervisor' }, outcome: found === s.payload.depends ? 'match' : 'mismatch', reason: 'bench floor preflight' });
        });
        for (let i = 0; i < facts.length; i += 500) await rec.durable(facts.slice(i, i + 500));
      }
      const waves = planWaves(
        ids.map((id) => ({ id, labels: {} })),
        [
          { name: 'canary', hosts: CANARY },
          { name: 'rest', hosts: '100%' },
        ],
        { seed: rolloutId, concurrency: CONCURRENCY },
      );
      for (const w of waves) for (const step of w.steps) await inLanes(step.hostIds, w.concurrency, (id) => floorPatch(emu.fleet.host(id), s.payload, rec, w.name));
    } else {
      await inLanes(ids, CONCURRENCY, (id) => floorRestore(emu.fleet.host(id), s.payload, rec));
    }
    await rec?.drain();
    const seconds = (performance.now() - started) / 1000;
    const requests = (await new EmulatorAdmin(emu.fleet.fleet).stats()).requests - before - 1;
    let events = 0;
    if (pool) events = (await countEvents(pool)) - eventsBefore;
    const cpu = process.cpuUsage(cpu0);
    const clientCpu = (cpu.user + cpu.system) / 1e6;
    const emulatorCpu = ((await procCpu(emu.proc.pid))?.self ?? Number.NaN) - emuCpu0;
    return { seconds, requestsPerHost: requests / spec.hosts, eventsPerHost: events / spec.hosts, clientCpu, emulatorCpu };
  } finally {
    await pool?.end();
    if (db) await dropDatabase(s, db.name);
    await stop(emu.proc);
  }
}

/**
 * Takes `hostIds` through a rollout of the plan and its rollback (restoring them), so that the
 * workers measured next are warm, as a fleet's long-lived workers are. Returns the workers that
 * ran workflow tasks of them: in cluster runs, a worker that had run none took 120-160 ms over the
 * first workflow task of the measured rollout, where one that had took 20-40 ms.
 */
async function warmWorkers(client: Client, taskQueue: string, plan: ResolvedPlan, hostIds: string[], requestedBy: { kind: 'system'; id: string }): Promise<Set<string>> {
  const rolloutId = `bench-warm-up-${randomBytes(4).toString('hex')}`;
  const st = await startRollout(client, taskQueue, { ...plan, hosts: { ids: hostIds } }, { requestedBy, rolloutId });
  const progress = (await st.handle.result()) as RolloutProgress;
  if (progress.status !== 'succeeded') throw new Error(`the workers' warm-up rollout ended ${progress.status}: ${progress.stopReason ?? ''}`);
  const rollbackId = `${st.workflowId}/rollback-warm-up`;
  const rb = await client.workflow.execute(rollbackWorkflow, {
    taskQueue,
    workflowId: rollbackId,
    args: [{ rolloutId, requestedBy, reason: 'bench: the warm-up hosts go back to their former stack', ours: plan.payloads.map((p) => p.buildId), verifyCall: VERIFY.call, concurrency: CONCURRENCY }],
  });
  if (rb.outcome !== 'rolled-back') throw new Error(`the workers' warm-up rollback ended ${rb.outcome}`);
  const ran = new Set<string>();
  for (const id of [st.workflowId, rollbackId]) {
    for (const e of (await client.workflow.getHandle(id).fetchHistory()).events ?? []) {
      const who = e.workflowTaskStartedEventAttributes?.identity;
      if (who) ran.add(who);
    }
  }
  return ran;
}

/** The Temporal identity of the bench's i-th worker process (0-based), as the timeline names it. */
const workerIdentity = (i: number) => `bench-worker-${i + 1}`;

/** The engine: fresh fleet and database, worker processes, the rollout (and, for rollback, then the rollback). */
async function engineRun(s: Shared, dir: string, spec: ConfigSpec): Promise<Omit<RunFigures, 'floorBare' | 'floorRecording' | 'floorRequestsPerHost' | 'floorEventsPerHost' | 'floorClientCpu' | 'floorEmulatorCpu'>> {
  const temporal = spec.server === 'cluster' ? s.cluster! : s.dev;
  const emu = await startEmulator(s, dir, spec.hosts);
  const db = await freshDatabase(s);
  const workers: Proc[] = [];
  try {
    const setupPool = createPool(db.url, { max: 2 });
    await migrate(setupPool);
    const { plan, dir: planDir } = await readPlanFile(path.join(s.payloadDir, 'plan.yaml'));
    const resolved = await resolvePlanPayloads(plan, planDir, { pool: setupPool, actor: { kind: 'system', id: 'bench' }, store: true });
    const taskQueue = `bench-${randomBytes(4).toString('hex')}`;
    const wenv = { LOG_LEVEL: 'warn', FLEETPATCH_DATA_DIR: s.tmp, TEMPORAL_ADDRESS: temporal.address, DATABASE_URL: db.url, FLEETPATCH_FLEET_FILE: emu.fleetFile, TEMPORAL_TASK_QUEUE: taskQueue };
    for (let i = 0; i < spec.workers; i++) workers.push(await spawnUntil(['worker', '--identity', workerIdentity(i)], wenv, /worker polling/, WORKER_NODE_ARGS));
    const faults = await new EmulatorAdmin(emu.fleet.fleet).faults();
    const pids = { temporal: temporal.pid, workers: workers.map((w) => w.pid), emulator: emu.proc.pid, postmaster: s.postmaster };
    const requester = { kind: 'system' as const, id: 'bench' };
    const rolloutId = `bench-${spec.hosts}-${randomBytes(4).toString('hex')}`;
    if (WARM_UP_HOSTS > 0) {
      // Batches and workflow tasks go to whichever worker polls first, so one warm-up may leave a
      // worker cold: again (up to six times) until every worker has run batches and workflow tasks.
      const cpu = async () => Promise.all(workers.map(async (w) => (await procCpu(w.pid))?.self ?? 0));
      const before = await cpu();
      const ranWorkflows = new Set<string>();
      for (let round = 0; round < 6; round++) {
        for (const who of await warmWorkers(temporal.client, taskQueue, resolved, emu.fleet.hostIds.slice(0, Math.min(WARM_UP_HOSTS, spec.hosts)), requester)) ranWorkflows.add(who);
        const warm = (await cpu()).every((c, i) => c - before[i]! >= WARM_WORKER_CPU_S && ranWorkflows.has(workerIdentity(i)));
        if (warm) break;
      }
    }

    const measure = async <T>(fn: () => Promise<T>) => {
      await sleep(STATS_SETTLE_MS);
      const commits0 = await xactCommits(s, db.name);
      const requests0 = (await new EmulatorAdmin(emu.fleet.fleet).stats()).requests;
      const events0 = await countEvents(setupPool);
      const cpu0 = await cpuSnapshot(pids);
      const t0 = performance.now();
      const value = await fn();
      const seconds = (performance.now() - t0) / 1000;
      const cpu = cpuDelta(cpu0, await cpuSnapshot(pids));
      const requests = (await new EmulatorAdmin(emu.fleet.fleet).stats()).requests - requests0 - 1;
      const events = (await countEvents(setupPool)) - events0;
      await sleep(STATS_SETTLE_MS);
      // Our own two queries above (events before and after) are commits too.
      const commits = (await xactCommits(s, db.name)) - commits0 - 2;
      return { value, seconds, cpu, requests, events, commits };
    };

    const rollout = await measure(async () => {
      const st = await startRollout(temporal.client, taskQueue, resolved, { requestedBy: requester, rolloutId });
      return { started: st, result: (await st.handle.result()) as RolloutProgress };
    });
    const progress = rollout.value.result;
    const patched = progress.waves.reduce((n, w) => n + w.patched, 0);
    const failed = progress.waves.reduce((n, w) => n + w.failed, 0);
    const why = progress.failures.slice(0, 3).map((f) => `${f.hostId}: ${f.stage} ${f.code}: ${f.reason}`);
    const status = `${progress.status}, ${patched}/${spec.hosts} patched${failed ? `, ${failed} failed (${why.join('; ')}${progress.stopReason ? `; ${progress.stopReason}` : ''})` : ''}`;
    if (spec.kind === 'rollout') {
      const chain = chainLatency(faults, PATCH_CHAIN);
      const ideal = idealOf(progress.preflight!.waves, chain.ms);
      const hist = await historyStats(temporal.client, rollout.value.started.workflowId);
      const peak = Math.max(...(await Promise.all(workers.map((w) => peakRssMiB(w.pid)))));
      return {
        measured: rollout.seconds,
        ideal: ideal.seconds,
        idealFormula: ideal.formula,
        chain: chain.describe,
        cpu: rollout.cpu,
        historyEvents: hist.total,
        historyRuns: hist.runs,
        historyLongest: hist.longest,
        commits: rollout.commits,
        workerPeakMiB: peak,
        workerWarnings: workers.flatMap((w) => w.warnings),
        requestsPerHost: rollout.requests / spec.hosts,
        eventsPerHost: rollout.events / spec.hosts,
        status,
        ok: progress.status === 'succeeded' && patched === spec.hosts,
      };
    }

    // Rollback of the whole fleet, as `fleetpatch rollout rollback` starts it.
    const rollbackId = `${rollout.value.started.workflowId}/rollback-bench`;
    const rb = await measure(async () => {
      const handle = await temporal.client.workflow.start(rollbackWorkflow, {
        taskQueue,
        workflowId: rollbackId,
        args: [{ rolloutId, requestedBy: requester, reason: 'bench: roll the whole fleet back', ours: resolved.payloads.map((p) => p.buildId), verifyCall: VERIFY.call, concurrency: CONCURRENCY }],
      });
      return handle.result();
    });
    const chain = chainLatency(faults, RESTORE_CHAIN);
    // One work list over every host the rollout touched, `concurrency` lanes across its batches.
    const lanes = batchLanes(CONCURRENCY).reduce((a, b) => a + b, 0);
    const ideal = idealOf([{ concurrency: lanes, steps: [{ size: rb.value.hosts }] }], chain.ms);
    const hist = await historyStats(temporal.client, rollbackId);
    const peak = Math.max(...(await Promise.all(workers.map((w) => peakRssMiB(w.pid)))));
    return {
      measured: rb.seconds,
      ideal: ideal.seconds,
      idealFormula: ideal.formula,
      chain: chain.describe,
      cpu: rb.cpu,
      historyEvents: hist.total,
      historyRuns: hist.runs,
      historyLongest: hist.longest,
      commits: rb.commits,
      workerPeakMiB: peak,
      workerWarnings: workers.flatMap((w) => w.warnings),
      requestsPerHost: rb.requests / spec.hosts,
      eventsPerHost: rb.events / spec.hosts,
      status: `${rb.value.outcome}, ${rb.value.rolledBack}/${rb.value.hosts} rolled back (rollout: ${status})`,
      ok: rb.value.outcome === 'rolled-back' && rb.value.rolledBack === spec.hosts,
    };
  } finally {
    for (const w of workers) await stop(w);
    await stop(emu.proc);
    await dropDatabase(s, db.name);
  }
}

async function oneRun(s: Shared, spec: ConfigSpec, n: number): Promise<RunFigures> {
  const dir = path.join(s.tmp, `${spec.kind}-${spec.server}-${spec.hosts}-${n}`);
  await mkdir(dir, { recursive: true });
  const bare = await floorRun(s, dir, spec, false);
  const recording = await floorRun(s, dir, spec, true);
  const engine = await engineRun(s, dir, spec);
  await rm(dir, { recursive: true, force: true });
  return {
    ...engine,
    floorBare: bare.seconds,
    floorRecording: recording.seconds,
    floorRequestsPerHost: bare.requestsPerHost,
    floorEventsPerHost: recording.eventsPerHost,
    floorClientCpu: recording.clientCpu,
    floorEmulatorCpu: recording.emulatorCpu,
  };
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

const fmt = (n: number, d = 2) => (Number.isFinite(n) ? n.toFixed(d) : String(n));

function report(ctx: BenchContext, spec: ConfigSpec, all: RunFigures[]): string {
  // A run that did not do what it was meant to (a host failed, so the rollout rolled back) is
  // not a time of the same work: it is listed, and left out of the medians.
  const good = all.filter((r) => r.ok);
  const runs = good.length > 0 ? good : all;
  const m = (f: (r: RunFigures) => number) => median(runs.map(f));
  const L = spec.label;
  const measured = m((r) => r.measured);
  const ideal = m((r) => r.ideal);
  const floorBare = m((r) => r.floorBare);
  const floorRec = m((r) => r.floorRecording);
  const cpu = { temporal: m((r) => r.cpu.temporal), worker: m((r) => r.cpu.worker), emulator: m((r) => r.cpu.emulator), postgres: m((r) => r.cpu.postgres) };
  const perWorker = spec.workers > 1 ? `; per worker, each run: ${runs.map((r) => r.cpu.perWorker.map((c) => fmt(c, 1)).join(' + ')).join(', ')} s` : '';
  const r0 = runs[0]!;
  const of = `median of ${runs.length}${good.length < all.length ? ` (${all.length - good.length} of ${all.length} runs not counted: ${all.filter((r) => !r.ok).map((r) => `${fmt(r.measured)} s, ${r.status}`).join(' | ')})` : ''}`;
  ctx.report({ name: `${L}: measured`, value: measured, unit: 's', note: `${of}: ${runs.map((r) => fmt(r.measured)).join(', ')} s; ${r0.status}; ${fmt(spec.hosts / measured, 1)} hosts/s` });
  ctx.report({ name: `${L}: ideal`, value: ideal, unit: 's', note: `${r0.idealFormula}; chain: ${r0.chain}` });
  ctx.report({ name: `${L}: floor, bare client`, value: floorBare, unit: 's', note: `${of}: ${runs.map((r) => fmt(r.floorBare)).join(', ')} s; same HTTP calls, waves and concurrency, nothing recorded` });
  ctx.report({ name: `${L}: floor, recording events`, value: floorRec, unit: 's', note: `${of}: ${runs.map((r) => fmt(r.floorRecording)).join(', ')} s; the same events group-committed with the same durable points (no work-list rows)` });
  ctx.report({ name: `${L}: measured / ideal`, value: measured / ideal, unit: 'x', note: `median run ${fmt(m((r) => r.measured / r.ideal))}x` });
  ctx.report({ name: `${L}: measured / floor (recording)`, value: measured / floorRec, unit: 'x', note: `per run ${runs.map((r) => fmt(r.measured / r.floorRecording)).join(', ')}x; vs the bare floor ${fmt(measured / floorBare)}x` });
  ctx.report({ name: `${L}: CPU Temporal server`, value: cpu.temporal, unit: 's', note: spec.server === 'cluster' ? 'the cluster server process' : 'the dev server process' });
  ctx.report({
    name: `${L}: CPU worker`,
    value: cpu.worker,
    unit: 's',
    note: `${spec.workers} fleetpatch worker process(es), summed${perWorker}; the floor's bare client (recording) used ${fmt(m((r) => r.floorClientCpu))} s, the emulator ${fmt(m((r) => r.floorEmulatorCpu))} s during it`,
  });
  ctx.report({ name: `${L}: CPU emulator`, value: cpu.emulator, unit: 's' });
  ctx.report({ name: `${L}: CPU PostgreSQL`, value: cpu.postgres, unit: 's', note: spec.server === 'cluster' ? 'postmaster + backends, including the Temporal cluster\'s persistence' : 'postmaster + backends' });
  ctx.report({ name: `${L}: Temporal history events`, value: m((r) => r.historyEvents), unit: 'events', note: `over ${m((r) => r.historyRuns)} workflow run(s); longest run ${m((r) => r.historyLongest)} (Temporal warns at 10,240)` });
  ctx.report({ name: `${L}: longest workflow run`, value: Math.max(...runs.map((r) => r.historyLongest)), unit: 'events', note: 'the largest over all runs measured' });
  ctx.report({ name: `${L}: PostgreSQL commits`, value: m((r) => r.commits), unit: 'commits', note: `${fmt(m((r) => r.commits) / spec.hosts, 1)} per host (xact_commit of the rollout's database)` });
  ctx.report({ name: `${L}: worker peak RSS`, value: Math.max(...runs.map((r) => r.workerPeakMiB)), unit: 'MiB', note: 'VmHWM, the largest worker over all runs' });
  ctx.report({ name: `${L}: requests per host`, value: m((r) => r.requestsPerHost), unit: 'requests', note: `the floor makes ${fmt(m((r) => r.floorRequestsPerHost), 1)}; events per host: engine ${fmt(m((r) => r.eventsPerHost), 1)}, floor ${fmt(m((r) => r.floorEventsPerHost), 1)}` });
  return `| ${L} | ${fmt(ideal)} s | ${fmt(floorBare)} / ${fmt(floorRec)} s | ${fmt(measured)} s | ${fmt(measured / ideal)}x | ${fmt(measured / floorRec)}x | ${fmt(cpu.temporal, 1)} / ${fmt(cpu.worker, 1)} / ${fmt(cpu.emulator, 1)} / ${fmt(cpu.postgres, 1)} | ${m((r) => r.historyEvents)} (${m((r) => r.historyRuns)} runs, max ${Math.max(...runs.map((r) => r.historyLongest))}) | ${m((r) => r.commits)} | ${fmt(Math.max(...runs.map((r) => r.workerPeakMiB)), 0)} MiB | ${fmt(m((r) => r.floorClientCpu), 1)} s |`;
}

export default (async (ctx) => {
  const logger = createLogger('error', { pretty: false });
  const tmp = await mkdtemp(path.join(os.tmpdir(), 'fleetpatch-bench-rollout-'));
  await chmod(tmp, 0o755);
  const stops: (() => Promise<void>)[] = [];
  try {
    let serverUrl = env.DATABASE_URL;
    if (!serverUrl) {
      const embedded = await startEmbeddedPostgres({ dataDir: tmp, port: 0, logger });
      stops.push(embedded.stop);
      serverUrl = embedded.url;
    }
    const admin = new pg.Client({ connectionString: serverUrl });
    await admin.connect();
    stops.push(() => admin.end());
    const backend = (await admin.query('SELECT pg_backend_pid() AS pid')).rows[0].pid as number;
    const postmaster = (await procCpu(backend))!.ppid;

    const dev = await startTemporalDevServer({ cli: await resolveTemporalCli(logger), namespace: 'default', logger, port: 0, stateDir: path.join(tmp, 'temporal') });
    stops.push(dev.stop);
    const devPid = (JSON.parse(await readFile(path.join(tmp, 'temporal', 'server.json'), 'utf8')) as { pid: number }).pid;
    const devConnection = await Connection.connect({ address: dev.address });
    stops.push(() => devConnection.close());

    const payloadDir = path.join(tmp, 'plan');
    await mkdir(payloadDir, { recursive: true });
    const bytes = Buffer.from(buildPayload({ name: 'fix', funcs: [{ target: 'xen_extra_version', returns: '-fix' }] }, { image: DEFAULT_IMAGE }));
    await writeFile(path.join(payloadDir, 'fix.livepatch'), bytes);
    await writeFile(
      path.join(payloadDir, 'plan.yaml'),
      `name: bench\npayloads: [{ file: fix.livepatch }]\nallowUnsigned: true\nwaves: [{ name: canary, hosts: ${CANARY} }, { name: rest, hosts: "100%" }]\nconcurrency: ${CONCURRENCY}\nverify: { call: ${VERIFY.call}, expect: "${VERIFY.expect}" }\n`,
    );
    const parsed = parsePayload(bytes);
    const shared: Shared = {
      tmp,
      serverUrl,
      postmaster,
      dev: { address: dev.address, pid: devPid, client: new Client({ connection: devConnection, namespace: 'default' }) },
      payloadDir,
      payload: { name: 'fix', buildId: parsed.buildIdHex, depends: parsed.dependsHex, bytes },
      admin,
    };

    const specs: ConfigSpec[] = [];
    const first = SIZES[0] ?? 1000;
    if (CONFIGS.has('rollout')) for (const n of SIZES) specs.push({ label: `rollout ${n.toLocaleString('en-US')} hosts, dev server, 1 worker`, kind: 'rollout', hosts: n, server: 'dev', workers: 1 });
    if (CONFIGS.has('rollback')) specs.push({ label: `rollback ${first.toLocaleString('en-US')} hosts, dev server, 1 worker`, kind: 'rollback', hosts: first, server: 'dev', workers: 1 });
    if (CONFIGS.has('cluster')) specs.push({ label: `rollout ${first.toLocaleString('en-US')} hosts, cluster, ${CLUSTER_WORKERS} workers`, kind: 'rollout', hosts: first, server: 'cluster', workers: CLUSTER_WORKERS });

    // The cluster server starts when its configuration comes (the last): started with the others,
    // it ran its system workflows (scanners) and polled PostgreSQL through the dev server's runs.
    const startCluster = async () => {
      const stateDir = path.join(tmp, 'temporal-cluster');
      const cluster = await startTemporalCluster({ namespace: 'default', logger, stateDir, port: 0, database: clusterDatabaseFromUrl(serverUrl, `fp_bench_temporal_${randomBytes(3).toString('hex')}`) });
      stops.push(cluster.stop);
      const pid = (JSON.parse(await readFile(path.join(stateDir, 'server.json'), 'utf8')) as { pid: number }).pid;
      const connection = await Connection.connect({ address: cluster.address });
      stops.push(() => connection.close());
      shared.cluster = { address: cluster.address, pid, client: new Client({ connection, namespace: 'default' }) };
    };

    ctx.log(`${os.cpus().length} CPUs, load average ${os.loadavg().map((l) => l.toFixed(2)).join(' ')} at the start; ${WARMUP} warm-up + ${RUNS} run(s) per configuration`);
    const rows: string[] = [];
    for (const spec of specs) {
      if (spec.server === 'cluster' && !shared.cluster) await startCluster();
      for (let i = 0; i < WARMUP; i++) {
        const w = await oneRun(shared, spec, -1 - i);
        ctx.log(`${spec.label}: warm-up ${fmt(w.measured)} s (ideal ${fmt(w.ideal)} s, floor ${fmt(w.floorRecording)} s)${w.ok ? '' : `; ${w.status}`}`);
      }
      const runs: RunFigures[] = [];
      for (let i = 0; i < RUNS; i++) {
        const r = await oneRun(shared, spec, i);
        ctx.log(`${spec.label}: run ${i + 1}: ${fmt(r.measured)} s, ideal ${fmt(r.ideal)} s, floor ${fmt(r.floorBare)} / ${fmt(r.floorRecording)} s; load ${os.loadavg()[0]!.toFixed(2)}${r.ok ? '' : `; NOT COUNTED: ${r.status}`}`);
        for (const w of r.workerWarnings.slice(-5)) ctx.log(`  a worker warned: ${w}`);
        runs.push(r);
      }
      rows.push(report(ctx, spec, runs));
    }
    ctx.log('');
    ctx.log('| configuration | ideal | floor bare / recording | measured | / ideal | / floor | CPU s Temporal / worker / emulator / PostgreSQL | history events | PG commits | worker peak RSS | floor client CPU |');
    ctx.log('|---|---|---|---|---|---|---|---|---|---|---|');
    for (const row of rows) ctx.log(row);
    ctx.log(`load average at the end ${os.loadavg().map((l) => l.toFixed(2)).join(' ')}; the floor retried ${floorRetries} request(s) after a transient fault`);
  } finally {
    for (const s of stops.reverse()) await s().catch(() => undefined);
    await rm(tmp, { recursive: true, force: true });
  }
}) satisfies Bench;
