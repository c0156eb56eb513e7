import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { hostImage, startFleetServer, type RunningFleet } from '../../src/emulator/index.ts';
import { createTestDatabase, type TestDatabase } from '../support/database.ts';
import { IMAGE_A, IMAGE_B, liveStacks, tempDir, writePayload, writePlan } from '../support/rollout.ts';

const BIN = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'bin', 'fleetpatch.js');

// The operator's path through the CLI, each command its own process: start a gated rollout with
// an in-process worker, find it held at the gate with `status`, approve it from another terminal,
// and see it finish.
describe('fleetpatch rollout, as an operator types it', () => {
  let db: TestDatabase;
  let fleet: RunningFleet;
  let env: Record<string, string>;

  function fleetpatch(args: string[]): { done: Promise<{ code: number; stdout: string; stderr: string }> } {
    const child = spawn(process.execPath, [BIN, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    return { done: new Promise((resolve) => child.on('exit', (code) => resolve({ code: code ?? 1, stdout, stderr }))) };
  }

  beforeAll(async () => {
    db = await createTestDatabase();
    fleet = await startFleetServer({ hosts: 6, images: [hostImage(IMAGE_A), hostImage(IMAGE_B)], seed: 4 });
    env = {
      TEMPORAL_ADDRESS: inject('temporalAddress'),
      TEMPORAL_NAMESPACE: inject('temporalNamespace'),
      TEMPORAL_TASK_QUEUE: `cli-${randomBytes(4).toString('hex')}`,
      DATABASE_URL: db.url,
      FLEETPATCH_FLEET_FILE: fleet.fleetFile,
      FLEETPATCH_DATA_DIR: await tempDir('cli-data'),
      LOG_LEVEL: 'error',
    };
  });

  afterAll(async () => {
    await fleet?.close();
    await db?.drop();
  });

  it('plans, starts, reports, approves and finishes a rollout', { timeout: 420_000 }, async () => {
    const dir = await tempDir('cli');
    const a = await writePayload(dir, 'fix-a', { funcs: [{ target: 'xen_extra_version', returns: '-fix' }] }, IMAGE_A);
    const b = await writePayload(dir, 'fix-b', { funcs: [{ target: 'xen_extra_version', returns: '-fix' }] }, IMAGE_B);
    const planFile = await writePlan(dir, {
      name: 'cli-fix',
      payloads: [{ file: path.basename(a.file) }, { file: path.basename(b.file) }],
      waves: [{ name: 'canary', hosts: 1 }, { name: 'rest', hosts: '100%' }],
      gates: [{ after: 'canary', approval: true }],
      verify: { call: 'xen_extra_version', expect: '-fix' },
    });

    const plan = await fleetpatch(['rollout', 'plan', planFile]).done;
    expect(plan.code).toBe(0);
    expect(plan.stdout).toContain('(dry run: nothing was changed)');
    expect(plan.stdout).toContain('hosts: 6 selected, 6 to patch, 0 already patched, 0 incompatible, 0 unreachable');
    const rolloutId = /^rollout (\S+) \(dry run/m.exec(plan.stdout)![1]!;

    const started = fleetpatch(['rollout', 'start', planFile, '--with-worker', '--by', 'carol', '--reason', 'XSA-999', '--interval-ms', '200']);
    // Wait until the rollout holds at the gate.
    let status = { code: 1, stdout: '', stderr: '' };
    for (let i = 0; i < 120 && !status.stdout.includes('awaiting-approval'); i++) {
      await new Promise((r) => setTimeout(r, 500));
      status = await fleetpatch(['rollout', 'status', rolloutId]).done;
    }
    expect(status.stdout).toContain(`rollout ${rolloutId} (cli-fix): awaiting-approval`);
    expect(status.stdout).toContain(`waiting for approval after wave "canary": fleetpatch rollout approve ${rolloutId}`);

    const noReason = await fleetpatch(['rollout', 'approve', rolloutId]).done;
    expect(noReason.code).toBe(2);
    expect(noReason.stderr).toContain('say why with --reason');
    const wrongWave = await fleetpatch(['rollout', 'approve', rolloutId, '--reason', 'ok', '--wave', 'rest']).done;
    expect(wrongWave.code).toBe(1);
    expect(wrongWave.stderr).toContain('the pending gate is after wave "canary", not "rest"');
    const approve = await fleetpatch(['rollout', 'approve', rolloutId, '--by', 'dave', '--reason', 'canary is healthy']).done;
    expect(approve.code, approve.stderr).toBe(0);

    const finished = await started.done;
    expect(finished.code, finished.stderr).toBe(0);
    expect(finished.stdout).toContain(`started rollout ${rolloutId}`);
    expect(finished.stdout).toContain(`rollout ${rolloutId} (cli-fix): succeeded`);
    expect(finished.stdout).toMatch(/approved by dave \(wave canary\): canary is healthy/);

    const json = await fleetpatch(['rollout', 'status', rolloutId, '--json']).done;
    const progress = JSON.parse(json.stdout) as { status: string; waves: { patched: number }[] };
    expect(progress.status).toBe('succeeded');
    expect(progress.waves.map((w) => w.patched)).toEqual([1, 5]);
    for (const [id, stack] of await liveStacks(fleet.fleetFile)) expect(stack.length, id).toBe(1);

    // The same plan again does not run again.
    const again = await fleetpatch(['rollout', 'start', planFile]).done;
    expect(again.stdout).toContain(`rollout ${rolloutId} already exists`);

    const unknown = await fleetpatch(['rollout', 'status', 'no-such-rollout']).done;
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toContain('ROLLOUT_NOT_FOUND');
  });
});
