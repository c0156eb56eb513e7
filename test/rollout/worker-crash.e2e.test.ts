import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { Client, Connection } from '@temporalio/client';
import { hostImage, startFleetServer, type RunningFleet } from '../../src/emulator/index.ts';
import { FleetClient } from '../../src/agent/client.ts';
import { readPlanFile, resolvePlanPayloads, startRollout } from '../../src/control/rollouts.ts';
import { EventStore } from '../../src/events/store.ts';
import { verifyChains } from '../../src/events/audit/verify.ts';
import { rolloutStream } from '../../src/events/streams.ts';
import { createTestDatabase, type TestDatabase } from '../support/database.ts';
import { saveHistory } from '../support/histories.ts';
import { hostEvents, IMAGE_A, IMAGE_B, replayDifferences, tempDir, writePayload, writePlan } from '../support/rollout.ts';
import { EmulatorAdmin } from '../../src/emulator/admin-client.ts';

const BIN = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'bin', 'fleetpatch.js');

/** `fleetpatch worker` as its own process; resolves once it polls. */
function spawnWorker(env: Record<string, string>): Promise<ChildProcess> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, 'worker'], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    child.stdout!.on('data', (d: Buffer) => {
      if (d.toString().includes('worker polling')) resolve(child);
    });
    child.on('exit', (code) => reject(new Error(`worker exited with ${code} before polling: ${stderr.slice(-2000)}`)));
  });
}

describe('a worker killed with SIGKILL mid-rollout', () => {
  let db: TestDatabase;
  let fleet: RunningFleet;
  let client: Client;
  let connection: Connection;
  let workerEnv: Record<string, string>;
  const workers: ChildProcess[] = [];

  beforeAll(async () => {
    db = await createTestDatabase();
    // Each action stays pending 1.5 s, so the rollout is mid-flight for a while (both kills land mid-batch).
    fleet = await startFleetServer({ hosts: 200, images: [hostImage(IMAGE_A), hostImage(IMAGE_B)], seed: 9, actionDurationMs: 1500 });
    connection = await Connection.connect({ address: inject('temporalAddress') });
    client = new Client({ connection, namespace: inject('temporalNamespace') });
    const dataDir = await tempDir('crash-data');
    workerEnv = {
      TEMPORAL_ADDRESS: inject('temporalAddress'),
      TEMPORAL_NAMESPACE: inject('temporalNamespace'),
      TEMPORAL_TASK_QUEUE: `crash-${randomBytes(4).toString('hex')}`,
      DATABASE_URL: db.url,
      FLEETPATCH_FLEET_FILE: fleet.fleetFile,
      FLEETPATCH_DATA_DIR: dataDir,
      LOG_LEVEL: 'error',
    };
  });

  afterAll(async () => {
    for (const w of workers) w.kill('SIGKILL');
    await connection?.close();
    await fleet?.close();
    await db?.drop();
  });

  it('two workers share a 200-host rollout and each is SIGKILLed mid-batch: every host patched exactly once, nothing recorded twice or lost', { timeout: 300_000 }, async () => {
    const dir = await tempDir('crash');
    const a = await writePayload(dir, 'fix-a', { funcs: [{ target: 'xen_extra_version', returns: '-fix' }] }, IMAGE_A);
    const b = await writePayload(dir, 'fix-b', { funcs: [{ target: 'xen_extra_version', returns: '-fix' }] }, IMAGE_B);
    const { plan, dir: d } = await readPlanFile(
      await writePlan(dir, {
        name: 'crash',
        payloads: [{ file: a.file }, { file: b.file }],
        waves: [{ name: 'canary', hosts: 2 }, { name: 'rest', hosts: '100%' }],
        // Two batches of 15 lanes: both workers get one.
        concurrency: 30,
        verify: { call: 'xen_extra_version', expect: '-fix' },
        allowUnsigned: true,
      }),
    );
    const resolved = await resolvePlanPayloads(plan, d, { pool: db.pool, actor: { kind: 'user', id: 'test' }, store: true });

    workers.push(await spawnWorker(workerEnv), await spawnWorker(workerEnv));
    const started = await startRollout(client, workerEnv.TEMPORAL_TASK_QUEUE!, resolved, { requestedBy: { kind: 'user', id: 'test' }, rolloutId: 'crash-1' });
    // Hosts of wave 2 finished, from the work list itself: the workflow's live view refreshes less
    // often on a long step, and a kill timed by it could land after the last host (seen once).
    const doneNow = async () =>
      Number((await db.pool.query(`SELECT count(*) AS n FROM rollout_targets WHERE rollout_id = 'crash-1' AND wave = 1 AND status NOT IN ('planned', 'running')`)).rows[0].n);
    const untilDone = async (n: number) => {
      while ((await doneNow()) < n) await new Promise((r) => setTimeout(r, 50));
    };
    // Kill each worker while its batch has hosts in flight; start a fresh one a second later.
    await untilDone(20);
    workers[0]!.kill('SIGKILL');
    await new Promise((r) => setTimeout(r, 1000));
    workers.push(await spawnWorker(workerEnv));
    await untilDone(80);
    workers[1]!.kill('SIGKILL');
    const atKill = await doneNow();
    await new Promise((r) => setTimeout(r, 1000));
    workers.push(await spawnWorker(workerEnv));

    const result = await started.handle.result();
    expect(result.status).toBe('succeeded');
    expect(result.waves.map((w) => w.patched)).toEqual([2, 198]);
    await saveHistory(client, 'rollout-crash-1', 'rollout-worker-killed', { firstRun: true });
    // Both kills landed while hosts were still to do.
    expect(atKill).toBeLessThan(198);

    const fleetClient = await FleetClient.open(fleet.fleetFile);
    const journal = await new EmulatorAdmin(fleetClient.fleet).journal();
    for (const id of fleetClient.hostIds) {
      const list = await fleetClient.host(id).listAll();
      // Never reverted and applied again: each host's payload was applied exactly once.
      expect(list.entries.map((e) => [e.state, e.reverted]), id).toEqual([['APPLIED', false]]);
      // The hypervisor's own journal says so too.
      expect(journal[id]!.filter((e) => e.kind === 'applied'), id).toHaveLength(1);
      const events = (await hostEvents(db.pool, id)).map((e) => e.event);
      const count = (type: string) => events.filter((e) => e.type === type).length;
      expect(count('PayloadUploaded'), id).toBe(1);
      expect(count('PayloadApplied'), id).toBe(1);
      expect(count('PayloadReverted'), id).toBe(0);
      expect(count('HealthChecked'), id).toBeGreaterThanOrEqual(1);
      expect(count('DriftDetected'), id).toBe(0);
      // preflight, fleetpatch's check of the APPLY (made before the UPLOAD), the hypervisor's at UPLOAD (xen_depends) and at APPLY
      expect(events.filter((e) => e.type === 'DependencyChecked').map((e) => (e as { phase: string }).phase), id).toEqual(expect.arrayContaining(['preflight', 'upload', 'apply', 'apply']));
    }
    const rollout = (await new EventStore(db.pool).readStream(rolloutStream('crash-1'))).map((e) => e.event);
    const finished = rollout.filter((e) => e.type === 'HostPatchFinished').map((e) => (e as { hostId: string }).hostId);
    expect(finished).toHaveLength(200);
    expect(new Set(finished).size).toBe(200);
    expect(rollout.filter((e) => e.type === 'RolloutStarted')).toHaveLength(1);
    expect(rollout.filter((e) => e.type === 'RolloutFinished')).toHaveLength(1);
    expect(await replayDifferences(db.pool, fleet.fleetFile)).toEqual([]);
    const chains = await verifyChains(new EventStore(db.pool));
    expect(chains.ok, JSON.stringify(chains).slice(0, 500)).toBe(true);
  });
});
