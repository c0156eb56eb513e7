/**
 * `rollout status` tells the latest truth, from whichever source can give it: after a rollback
 * asked for later, and after a repair (Temporal's side, and the command's words); from the event
 * store when Temporal is down, saying so; from Temporal when PostgreSQL is down, with the
 * rollout's own "waiting: PostgreSQL unreachable" line.
 */
import { execFile } from 'node:child_process';
import net, { type AddressInfo } from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { FleetClient } from '../../src/agent/index.ts';
import { liveProgress, startRepair, startRollback } from '../../src/control/steer.ts';
import type { Started } from '../../src/control/rollouts.ts';
import { hostImage, startFleetServer, type RunningFleet } from '../../src/emulator/index.ts';
import { EventStore } from '../../src/events/store.ts';
import type { RolloutProgress } from '../../src/rollout/progress.ts';
import { createPool } from '../../src/runtime/database.ts';
import { progressQuery } from '../../workflows/messages.ts';
import { createTestDatabase, type TestDatabase } from '../support/database.ts';
import { startTestWorker, type TestTemporal } from '../support/temporal.ts';
import { IMAGE_A, startPlan, tempDir, writePayload, type BuiltPayload } from '../support/rollout.ts';

const BIN = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'bin', 'fleetpatch.js');
const ops = { kind: 'user' as const, id: 'ops' };

/** A TCP proxy in front of PostgreSQL that can be cut (every connection dropped, new ones refused) and restored. */
async function tcpProxy(target: { host: string; port: number }) {
  const sockets = new Set<net.Socket>();
  let server: net.Server | undefined;
  const listen = (port: number) =>
    new Promise<number>((resolve) => {
      server = net.createServer((client) => {
        const upstream = net.connect(target.port, target.host);
        const end = () => {
          client.destroy();
          upstream.destroy();
          sockets.delete(client);
          sockets.delete(upstream);
        };
        for (const s of [client, upstream]) {
          sockets.add(s);
          s.on('error', end);
          s.on('close', end);
        }
        client.pipe(upstream);
        upstream.pipe(client);
      });
      server.listen(port, '127.0.0.1', () => resolve((server!.address() as AddressInfo).port));
    });
  const port = await listen(0);
  return {
    port,
    cut: () => {
      server?.close();
      for (const s of sockets) s.destroy();
    },
    restore: () => listen(port),
    close: () => {
      server?.close();
      for (const s of sockets) s.destroy();
    },
  };
}

describe('rollout status: the latest truth, from whichever source can give it', () => {
  let db: TestDatabase;
  let fleet: RunningFleet;
  let temporal: TestTemporal;
  let dir: string;
  let fix: BuiltPayload;
  let env: Record<string, string>;

  function fleetpatch(args: string[], extraEnv: Record<string, string> = {}): Promise<{ code: number; stdout: string; stderr: string }> {
    return new Promise((resolve) => {
      execFile(process.execPath, [BIN, ...args], { env: { ...process.env, ...env, ...extraEnv }, timeout: 120_000 }, (error, stdout, stderr) => {
        resolve({ code: error ? (typeof error.code === 'number' ? error.code : 1) : 0, stdout, stderr });
      });
    });
  }
  const stderrLines = (r: { stderr: string }) => r.stderr.split('\n').filter((l) => l.trim());

  beforeAll(async () => {
    db = await createTestDatabase();
    fleet = await startFleetServer({ hosts: 12, images: [hostImage(IMAGE_A)], seed: 31, actionDurationMs: 300 });
    temporal = await startTestWorker({ pool: db.pool, fleetFile: fleet.fleetFile });
    dir = await tempDir('status');
    fix = await writePayload(dir, 'fix', { funcs: [{ target: 'xen_extra_version', returns: '-fix' }] }, IMAGE_A);
    env = {
      TEMPORAL_ADDRESS: inject('temporalAddress'),
      TEMPORAL_NAMESPACE: inject('temporalNamespace'),
      TEMPORAL_TASK_QUEUE: temporal.taskQueue,
      DATABASE_URL: db.url,
      FLEETPATCH_FLEET_FILE: fleet.fleetFile,
      FLEETPATCH_DATA_DIR: await tempDir('status-data'),
      LOG_LEVEL: 'error',
    };
  });

  afterAll(async () => {
    await temporal?.close();
    await fleet?.close();
    await db?.drop();
  });

  const start = (name: string, ids: string[], rolloutId: string, concurrency = 4): Promise<Started> =>
    startPlan({ client: temporal.client, taskQueue: temporal.taskQueue, pool: db.pool, dir, actor: ops }, { name, payloads: [{ file: fix.file }], hosts: { ids }, waves: [{ name: 'all', hosts: '100%' }], concurrency }, rolloutId);
  const live = async (id: string): Promise<RolloutProgress> => {
    const l = await liveProgress(temporal.client, id);
    if (!('progress' in l)) throw new Error(l.unavailable);
    return l.progress;
  };

  it('after a rollback asked for later: rolled-back, with who asked and why, in Temporal and on the command line', { timeout: 240_000 }, async () => {
    const s = await start('later', ['host-0000', 'host-0001'], 'later-1');
    expect((await s.handle.result()).status).toBe('succeeded');
    const rb = await startRollback(temporal.client, temporal.taskQueue, 'later-1', ops, 'the fix broke monitoring');
    expect((await rb.result()).outcome).toBe('rolled-back');
    // Temporal's list of workflows catches up within moments.
    let p = await live('later-1');
    for (let i = 0; p.status !== 'rolled-back' && i < 50; i++) {
      await new Promise((r) => setTimeout(r, 200));
      p = await live('later-1');
    }
    expect(p.status).toBe('rolled-back');
    expect(p.rollback).toMatchObject({ status: 'finished', requestedBy: ops, reason: 'the fix broke monitoring', hosts: 2, rolledBack: 2 });
    expect(p.waves[0]).toMatchObject({ name: 'all', patched: 2 });

    const r = await fleetpatch(['rollout', 'status', 'later-1']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^rollout later-1 \(later\): rolled-back — rolled back after it ended, asked by ops: the fix broke monitoring/);
    expect(r.stdout).toMatch(/rollback finished \(every host is back to its former stack\), requested by ops at \d{4}-[^:]+:\d\d:[\d.]+Z: the fix broke monitoring/);
    expect(r.stdout).toContain('2 of 2 touched host(s) back (2 restored, 0 had nothing to undo)');
  });

  it('after a repair: the repair is a wave of its own, with what it found and patched again', { timeout: 240_000 }, async () => {
    const hosts = ['host-0002', 'host-0003', 'host-0004'];
    const s = await start('repaired', hosts, 'repaired-1');
    expect((await s.handle.result()).status).toBe('succeeded');
    const client = await FleetClient.open(fleet.fleetFile);
    await client.host('host-0003').reboot({ downMs: 0 });
    const repair = await startRepair(temporal.client, temporal.taskQueue, new EventStore(db.pool), 'repaired-1', ops, 'host-0003 rebooted');
    expect(await repair.result()).toMatchObject({ lost: 1, patched: 1, failed: 0 });
    let p = await live('repaired-1');
    for (let i = 0; !p.repairs && i < 50; i++) {
      await new Promise((r) => setTimeout(r, 200));
      p = await live('repaired-1');
    }
    expect(p.status).toBe('succeeded');
    expect(p.repairs).toEqual([expect.objectContaining({ name: 'repair-1', status: 'finished', requestedBy: ops, reason: 'host-0003 rebooted', checked: 3, lost: 1, patched: 1, failed: 0 })]);

    const r = await fleetpatch(['rollout', 'status', 'repaired-1']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/\brepair-1\s+finished\s+1\s+1\s+1\s+0\s+0\s+0\b/);
    expect(r.stdout).toMatch(/repair-1 finished, requested by ops at \S+: host-0003 rebooted: 3 host\(s\) read, 1 had lost the payload; 1 patched again, 0 failed/);
  });

  it('with Temporal down: what the event store recorded, saying why; with both down: one line naming both', { timeout: 240_000 }, async () => {
    // Nothing listens on port 1.
    const down = { TEMPORAL_ADDRESS: '127.0.0.1:1' };
    const r = await fleetpatch(['rollout', 'status', 'later-1'], down);
    expect(r.code).toBe(1);
    expect(stderrLines(r)).toHaveLength(1);
    expect(stderrLines(r)[0]).toMatch(/^fleetpatch: TEMPORAL_UNAVAILABLE: Temporal cannot be reached \(TEMPORAL_ADDRESS=127\.0\.0\.1:1 \(plain gRPC \(no TLS\)\): .*\); what the event store recorded is shown instead$/);
    expect(r.stdout).toMatch(/^\(from the event store: Temporal cannot be reached/);
    expect(r.stdout).toMatch(/Rollout later-1: "later" \(apply\), ROLLED-BACK/);

    const json = await fleetpatch(['rollout', 'status', 'later-1', '--json'], down);
    expect(json.code).toBe(1);
    expect(JSON.parse(json.stdout)).toMatchObject({ ok: false, source: 'event store', error: { code: 'TEMPORAL_UNAVAILABLE' }, recorded: { rolloutId: 'later-1', status: 'rolled-back' } });

    const both = await fleetpatch(['rollout', 'status', 'later-1'], { ...down, DATABASE_URL: 'postgres://postgres@127.0.0.1:1/none' });
    expect(both.code).toBe(1);
    expect(stderrLines(both)).toHaveLength(1);
    expect(stderrLines(both)[0]).toMatch(/^fleetpatch: TEMPORAL_UNAVAILABLE: .*; the event store cannot be read instead: cannot reach PostgreSQL at /);
  });

  it('with PostgreSQL down: the live progress from Temporal, with the rollout saying it waits for PostgreSQL', { timeout: 300_000 }, async () => {
    // A second worker whose database connections go through a proxy that this test cuts.
    const u = new URL(db.url);
    const proxy = await tcpProxy({ host: u.hostname, port: Number(u.port || 5432) });
    const proxied = new URL(db.url);
    proxied.hostname = '127.0.0.1';
    proxied.port = String(proxy.port);
    const pool = createPool(proxied.toString());
    const outage = await startTestWorker({ pool, fleetFile: fleet.fleetFile });
    try {
      const ids = ['host-0006', 'host-0007', 'host-0008', 'host-0009', 'host-0010', 'host-0011'];
      const s = await startPlan({ client: outage.client, taskQueue: outage.taskQueue, pool: db.pool, dir, actor: ops }, { name: 'pg-outage', payloads: [{ file: fix.file }], hosts: { ids }, waves: [{ name: 'all', hosts: '100%' }], concurrency: 1 }, 'pg-outage-1');
      const until = async (predicate: (p: RolloutProgress) => boolean) => {
        for (let i = 0; i < 600; i++) {
          const p = await s.handle.query(progressQuery);
          if (predicate(p)) return p;
          await new Promise((r) => setTimeout(r, 100));
        }
        throw new Error('timed out');
      };
      await until((p) => p.waves[0]!.done >= 1);
      proxy.cut();
      await until((p) => /PostgreSQL unreachable since/.test(p.waiting ?? ''));

      const r = await fleetpatch(['rollout', 'status', 'pg-outage-1'], { DATABASE_URL: proxied.toString(), TEMPORAL_TASK_QUEUE: outage.taskQueue });
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toMatch(/^rollout pg-outage-1 \(pg-outage\): running/);
      expect(r.stdout).toMatch(/\nwaiting: PostgreSQL unreachable since \d{4}-/);

      await proxy.restore();
      expect((await s.handle.result()).status).toBe('succeeded');
    } finally {
      proxy.close();
      await outage.close();
      await pool.end();
    }
  });
});
