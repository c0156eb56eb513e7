/**
 * Cluster mode end to end: `fleetpatch services --cluster` builds (if needed), migrates and starts
 * the Temporal server on PostgreSQL with 4 history shards; two `fleetpatch worker` processes share
 * one rollout's batches. Every host is patched exactly once, no event is missing or duplicated,
 * every hash chain verifies, the live stacks equal the replayed ones, and both workers did batches
 * (from the events' correlation: each fact names the activity that recorded it, and the history
 * names the worker that ran that activity).
 *
 * The first build of the server takes ~5 min on 2 cores; `.ci/run` builds it before the tests.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmod } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Client, Connection } from '@temporalio/client';
import { hostImage, startFleetServer, type RunningFleet } from '../../src/emulator/index.ts';
import { FleetClient } from '../../src/agent/client.ts';
import { readPlanFile, resolvePlanPayloads, startRollout } from '../../src/control/rollouts.ts';
import { EventStore } from '../../src/events/store.ts';
import { rolloutStream } from '../../src/events/streams.ts';
import { verifyChains } from '../../src/events/audit/verify.ts';
import { createLogger } from '../../src/runtime/logger.ts';
import { isAlive } from '../../src/runtime/process-utils.ts';
import { resolveClusterBinaries } from '../../src/runtime/temporal-cluster.ts';
import { createTestDatabase, type TestDatabase } from '../support/database.ts';
import { hostEvents, IMAGE_A, IMAGE_B, replayDifferences, tempDir, writePayload, writePlan } from '../support/rollout.ts';

const BIN = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'bin', 'fleetpatch.js');
const HOSTS = 200;

interface Proc {
  child: ChildProcess;
  out: () => string;
  exited: Promise<number | null>;
}

function spawnFleetpatch(args: string[], env: NodeJS.ProcessEnv): Proc {
  const child = spawn(process.execPath, [BIN, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  return { child, out: () => out, exited: new Promise((r) => child.on('exit', (code) => r(code))) };
}

async function waitForText(p: Proc, re: RegExp, timeoutMs: number): Promise<RegExpExecArray> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const m = re.exec(p.out());
    if (m) return m;
    if (p.child.exitCode !== null || Date.now() > deadline) throw new Error(`no ${re} in: ${p.out().slice(-3000)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Every run of the workflow, first to last, through the continue-as-new chain. */
type HistoryEvent = NonNullable<Awaited<ReturnType<ReturnType<Client['workflow']['getHandle']>['fetchHistory']>>['events']>[number];

async function allHistories(client: Client, workflowId: string): Promise<{ runId: string; events: HistoryEvent[] }[]> {
  const first = (await client.workflow.getHandle(workflowId).describe()).raw.workflowExecutionInfo?.firstRunId ?? undefined;
  const runs: { runId: string; events: HistoryEvent[] }[] = [];
  for (let runId = first; runId; ) {
    const h = await client.workflow.getHandle(workflowId, runId).fetchHistory();
    runs.push({ runId, events: h.events ?? [] });
    runId = h.events?.at(-1)?.workflowExecutionContinuedAsNewEventAttributes?.newExecutionRunId ?? undefined;
  }
  return runs;
}

describe('cluster mode: the Temporal server on PostgreSQL, two workers', () => {
  let db: TestDatabase;
  let fleet: RunningFleet;
  let services: Proc | undefined;
  let connection: Connection | undefined;
  let client: Client;
  let workerEnv: NodeJS.ProcessEnv;
  let clusterDb: string;
  const workers: Proc[] = [];

  beforeAll(async () => {
    // Builds the server on a machine that lacks it (CI builds it before the tests).
    await resolveClusterBinaries(createLogger('warn', { pretty: false, name: 'test' }));
    db = await createTestDatabase();
    const dataDir = await tempDir('cluster');
    await chmod(dataDir, 0o755);
    clusterDb = `fp_cluster_${randomBytes(4).toString('hex')}`;
    const env: NodeJS.ProcessEnv = { ...process.env, FLEETPATCH_DATA_DIR: dataDir, DATABASE_URL: db.url, FLEETPATCH_CLUSTER_PORT: '0', FLEETPATCH_CLUSTER_DB: clusterDb, LOG_LEVEL: 'info' };
    delete env.TEMPORAL_ADDRESS;
    delete env.FLEETPATCH_TEMPORAL;
    services = spawnFleetpatch(['services', '--cluster'], env);
    const address = (await waitForText(services, /^TEMPORAL_ADDRESS=(\S+)$/m, 180_000))[1]!;
    await waitForText(services, /# Temporal cluster: 4 history shards/, 10_000);

    // Each host's actions stay pending 100 ms: the batches are busy long enough to be shared.
    fleet = await startFleetServer({ hosts: HOSTS, images: [hostImage(IMAGE_A), hostImage(IMAGE_B)], seed: 11, actionDurationMs: 100 });
    connection = await Connection.connect({ address });
    client = new Client({ connection, namespace: 'default' });
    workerEnv = {
      ...process.env,
      TEMPORAL_ADDRESS: address,
      TEMPORAL_NAMESPACE: 'default',
      TEMPORAL_TASK_QUEUE: `cluster-${randomBytes(4).toString('hex')}`,
      DATABASE_URL: db.url,
      FLEETPATCH_FLEET_FILE: fleet.fleetFile,
      FLEETPATCH_DATA_DIR: dataDir,
      LOG_LEVEL: 'error',
    };
  }, 900_000);

  afterAll(async () => {
    for (const w of workers) w.child.kill('SIGKILL');
    await connection?.close();
    if (services) {
      // Ctrl-C stops the cluster (and nothing else runs in that data dir).
      services.child.kill('SIGINT');
      expect(await services.exited).toBe(130);
      expect(services.out()).toContain('Temporal cluster stopped');
    }
    await fleet?.close();
    if (db) {
      const admin = new pg.Client({ connectionString: db.url });
      await admin.connect();
      try {
        for (const name of [clusterDb, `${clusterDb}_visibility`]) await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      } finally {
        await admin.end();
      }
      await db.drop();
    }
  }, 120_000);

  it('two workers share the batches of one rollout: each host patched once, every fact once, chains intact', { timeout: 300_000 }, async () => {
    // At most 3 activities per worker: the 4 batches of each wave step (concurrency 100 = 4 x 25
    // lanes) cannot all land on one worker, so both do batches whatever the dispatch order.
    for (const identity of ['worker-a', 'worker-b']) {
      const w = spawnFleetpatch(['worker', '--identity', identity, '--max-activities', '3'], workerEnv);
      workers.push(w);
      await waitForText(w, /worker polling/, 120_000);
    }

    const dir = await tempDir('cluster-plan');
    const a = await writePayload(dir, 'fix-a', { funcs: [{ target: 'xen_extra_version', returns: '-fix' }] }, IMAGE_A);
    const b = await writePayload(dir, 'fix-b', { funcs: [{ target: 'xen_extra_version', returns: '-fix' }] }, IMAGE_B);
    const { plan, dir: d } = await readPlanFile(
      await writePlan(dir, {
        name: 'cluster',
        payloads: [{ file: a.file }, { file: b.file }],
        waves: [
          { name: 'canary', hosts: 40 },
          { name: 'rest', hosts: '100%' },
        ],
        concurrency: 100,
        verify: { call: 'xen_extra_version', expect: '-fix' },
      }),
    );
    const resolved = await resolvePlanPayloads(plan, d, { pool: db.pool, actor: { kind: 'user', id: 'test' }, store: true });
    const started = await startRollout(client, workerEnv.TEMPORAL_TASK_QUEUE!, resolved, { requestedBy: { kind: 'user', id: 'test' }, rolloutId: 'cluster-1' });
    const result = await started.handle.result();
    expect(result.status).toBe('succeeded');
    expect(result.waves.map((w) => w.patched)).toEqual([40, HOSTS - 40]);

    // Every host: our payload applied once, never reverted; each fact recorded exactly once.
    const fleetClient = await FleetClient.open(fleet.fleetFile);
    const finishedBy = new Map<string, string>();
    for (const id of fleetClient.hostIds) {
      const list = await fleetClient.host(id).listAll();
      expect(list.entries.map((e) => [e.state, e.reverted]), id).toEqual([['APPLIED', false]]);
      const recorded = await hostEvents(db.pool, id);
      const events = recorded.map((e) => e.event);
      const count = (type: string) => events.filter((e) => e.type === type).length;
      expect(count('PayloadUploaded'), id).toBe(1);
      expect(count('PayloadApplied'), id).toBe(1);
      expect(count('PayloadReverted'), id).toBe(0);
      expect(count('HealthChecked'), id).toBe(1);
      // fleetpatch's own check of the APPLY is durable before the UPLOAD (with the upload's intent);
      // the hypervisor's checks come with its answers to the UPLOAD and the APPLY.
      const story = events.flatMap((e) => {
        if (e.type === 'PayloadUploaded' || e.type === 'PayloadApplied') return [e.type];
        if (e.type !== 'DependencyChecked') return [];
        const c = e as { phase: string; reason?: string };
        return [c.phase === 'preflight' ? 'preflight check' : `${c.phase} check by ${c.reason?.startsWith('checked by fleetpatch') ? 'fleetpatch' : 'the hypervisor'}`];
      });
      expect(story, id).toEqual(['preflight check', 'apply check by fleetpatch', 'upload check by the hypervisor', 'PayloadUploaded', 'apply check by the hypervisor', 'PayloadApplied']);
      expect(new Set(recorded.map((e) => e.eventId)).size, id).toBe(recorded.length);
      const applied = events.find((e) => e.type === 'PayloadApplied')!;
      finishedBy.set(id, `${applied.correlation?.runId}/${applied.correlation?.activityId}`);
    }
    const rollout = (await new EventStore(db.pool).readStream(rolloutStream('cluster-1'))).map((e) => e.event);
    const finished = rollout.filter((e) => e.type === 'HostPatchFinished').map((e) => (e as { hostId: string }).hostId);
    expect(finished).toHaveLength(HOSTS);
    expect(new Set(finished).size).toBe(HOSTS);
    expect(rollout.filter((e) => e.type === 'RolloutStarted')).toHaveLength(1);
    expect(rollout.filter((e) => e.type === 'RolloutFinished')).toHaveLength(1);

    const report = await verifyChains(new EventStore(db.pool));
    expect(report.breaks).toEqual([]);
    expect(report.orderBreaks).toEqual([]);
    expect(report.ok).toBe(true);
    expect(await replayDifferences(db.pool, fleet.fleetFile)).toEqual([]);

    // Which worker ran each batch: the history's ActivityTaskStarted names it (by --identity).
    const ranBy = new Map<string, string>();
    for (const run of await allHistories(client, started.workflowId)) {
      const scheduled = new Map<string, { activityId: string; type: string }>();
      for (const e of run.events) {
        const s = e.activityTaskScheduledEventAttributes;
        if (s) scheduled.set(String(e.eventId), { activityId: s.activityId ?? '', type: s.activityType?.name ?? '' });
        const st = e.activityTaskStartedEventAttributes;
        if (st) {
          const what = scheduled.get(String(st.scheduledEventId));
          if (what?.type === 'patchBatch') ranBy.set(`${run.runId}/${what.activityId}`, st.identity ?? '?');
        }
      }
    }
    const hostsByWorker = new Map<string, number>();
    for (const activity of finishedBy.values()) {
      const who = ranBy.get(activity) ?? `unknown activity ${activity}`;
      hostsByWorker.set(who, (hostsByWorker.get(who) ?? 0) + 1);
    }
    expect([...new Set(ranBy.values())].sort()).toEqual(['worker-a', 'worker-b']);
    expect([...hostsByWorker.keys()].sort()).toEqual(['worker-a', 'worker-b']);
    console.log(`cluster mode: ${ranBy.size} batches; hosts applied by ${[...hostsByWorker].map(([w, n]) => `${w}: ${n}`).join(', ')}`);

    // Both workers stop cleanly.
    for (const w of workers) w.child.kill('SIGTERM');
    await Promise.all(workers.map((w) => w.exited));
    expect(workers.every((w) => !isAlive(w.child.pid!))).toBe(true);
  });
});
