import { spawn, type ChildProcess } from 'node:child_process';
import { chmod, readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { isAlive } from '../../src/runtime/process-utils.ts';
import { tempDir } from '../support/rollout.ts';

const BIN = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'bin', 'fleetpatch.js');

interface Run {
  child: ChildProcess;
  stdout: () => string;
  stderr: () => string;
  exited: Promise<number | null>;
}

function run(args: string[], dataDir: string): Run {
  const env: NodeJS.ProcessEnv = { ...process.env, FLEETPATCH_DATA_DIR: dataDir, TEMPORAL_PORT: '0', TEMPORAL_UI_PORT: '0', FLEETPATCH_PG_PORT: '0', LOG_LEVEL: 'info' };
  delete env.TEMPORAL_ADDRESS;
  delete env.DATABASE_URL;
  const child = spawn(process.execPath, [BIN, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  return { child, stdout: () => out, stderr: () => err, exited: new Promise((r) => child.on('exit', (code) => r(code))) };
}

async function waitForText(r: Run, text: string, timeoutMs = 120_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!r.stdout().includes(text)) {
    if (Date.now() > deadline) throw new Error(`no "${text}" in: ${r.stdout()} ${r.stderr().slice(-2000)}`);
    await new Promise((res) => setTimeout(res, 100));
  }
}

async function serverPids(dataDir: string): Promise<{ temporal: number; postgres: number }> {
  const temporal = (JSON.parse(await readFile(path.join(dataDir, 'temporal', 'server.json'), 'utf8')) as { pid: number }).pid;
  const postgres = Number((await readFile(path.join(dataDir, 'postgres', 'data', 'postmaster.pid'), 'utf8')).split('\n')[0]);
  return { temporal, postgres };
}

async function gone(pid: number, timeoutMs = 20_000): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (isAlive(pid)) {
    if (Date.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, 100));
  }
  return true;
}

// The embedded defaults: fleetpatch starts a Temporal dev server and PostgreSQL in its data dir,
// shares them with other fleetpatch processes, reuses the data dir, and Ctrl-C leaves nothing behind.
describe('local services in the data dir', () => {
  it('starts both, shares them, stops both on Ctrl-C, and reuses the data dir next time', { timeout: 300_000 }, async () => {
    const dataDir = await tempDir('services');
    await chmod(dataDir, 0o755);

    const first = run(['services'], dataDir);
    await waitForText(first, 'DATABASE_URL=');
    expect(first.stdout()).toMatch(/^TEMPORAL_ADDRESS=127\.0\.0\.1:\d+$/m);
    expect(first.stderr()).toContain('creating the embedded PostgreSQL cluster');
    const pids = await serverPids(dataDir);
    expect(isAlive(pids.temporal)).toBe(true);
    expect(isAlive(pids.postgres)).toBe(true);

    // Another command on the same data dir uses them and leaves them running.
    const other = run(['rollout', 'status', 'nothing-here'], dataDir);
    expect(await other.exited).toBe(1);
    expect(other.stderr()).toContain('ROLLOUT_NOT_FOUND');
    expect(other.stderr()).toContain('another fleetpatch process runs');
    expect(isAlive(pids.temporal) && isAlive(pids.postgres)).toBe(true);

    first.child.kill('SIGINT');
    expect(await first.exited).toBe(130);
    expect(await gone(pids.temporal)).toBe(true);
    expect(await gone(pids.postgres)).toBe(true);

    // Second run: the cluster and the Temporal database are reused, not created again.
    const second = run(['services'], dataDir);
    await waitForText(second, 'DATABASE_URL=');
    expect(second.stderr()).not.toContain('creating the embedded PostgreSQL cluster');
    const again = await serverPids(dataDir);
    second.child.kill('SIGTERM');
    expect(await second.exited).toBe(143);
    expect(await gone(again.temporal)).toBe(true);
    expect(await gone(again.postgres)).toBe(true);
  });
});
