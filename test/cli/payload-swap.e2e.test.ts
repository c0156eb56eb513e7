/**
 * The payload a rollout ships is the one that was recorded, end to end. A stored payload's bytes,
 * sha256 and size are swapped in SQL (the append-only trigger disabled, as a database superuser
 * could); `fleetpatch audit verify` fails naming the payload; a rollout naming it, by file or by
 * build-id, is refused before any workflow starts; a rollout started with it anyway (its plan
 * resolved before the swap) is refused by the worker's preflight before it touches a host; every
 * refusal is recorded. And payloads must be signed by a trusted key unless the plan says otherwise.
 */
import { execFile } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { hostImage, startFleetServer, type RunningFleet } from '../../src/emulator/index.ts';
import { readPlanFile, resolvePlanPayloads, startRollout } from '../../src/control/rollouts.ts';
import { EventStore } from '../../src/events/store.ts';
import { generateSigningKey } from '../../src/payload/index.ts';
import type { PlanInput } from '../../src/rollout/plan.ts';
import { createTestDatabase, type TestDatabase } from '../support/database.ts';
import { signFile } from '../support/signing.ts';
import { startTestWorker, type TestTemporal } from '../support/temporal.ts';
import { IMAGE_A, liveStacks, startPlan, tempDir, writePayload, writePlan, type BuiltPayload } from '../support/rollout.ts';
import { readFile } from 'node:fs/promises';

const BIN = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'bin', 'fleetpatch.js');
const ops = { kind: 'user' as const, id: 'ops' };

describe('a payload swapped in the database', () => {
  let db: TestDatabase;
  let fleet: RunningFleet;
  let temporal: TestTemporal;
  let dir: string;
  let fix: BuiltPayload;
  let evil: BuiltPayload;
  let env: Record<string, string>;

  function fleetpatch(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
    return new Promise((resolve) => {
      execFile(process.execPath, [BIN, ...args], { env: { ...process.env, ...env }, timeout: 180_000 }, (error, stdout, stderr) => {
        resolve({ code: error ? (typeof error.code === 'number' ? error.code : 1) : 0, stdout, stderr });
      });
    });
  }

  const plan = (name: string, payload: PlanInput['payloads'][number], extra: Partial<PlanInput> = {}): PlanInput => ({
    name,
    payloads: [payload],
    hosts: { ids: ['host-0001', 'host-0002', 'host-0003'] },
    waves: [{ name: 'all', hosts: '100%' }],
    ...extra,
  });

  /** Nothing loaded, nothing applied on the hosts a refused rollout named. */
  async function untouched(): Promise<void> {
    const stacks = await liveStacks(fleet.fleetFile);
    for (const id of ['host-0001', 'host-0002', 'host-0003']) {
      expect(stacks.get(id), id).toEqual([]);
      expect((await fleet.host(id))!.payloads, id).toHaveLength(0);
    }
  }

  const refusals = async (buildId: string) =>
    (await new EventStore(db.pool).readStream(`payload-${buildId}`)).map((e) => e.event).filter((e) => e.type === 'PayloadRefused');

  beforeAll(async () => {
    db = await createTestDatabase();
    fleet = await startFleetServer({ hosts: 4, images: [hostImage(IMAGE_A)], seed: 13 });
    temporal = await startTestWorker({ pool: db.pool, fleetFile: fleet.fleetFile });
    dir = await tempDir('swap');
    fix = await writePayload(dir, 'fix', { funcs: [{ target: 'xen_extra_version', returns: '-fix' }] }, IMAGE_A);
    evil = await writePayload(dir, 'evil', { funcs: [{ target: 'xen_extra_version', returns: '-owned' }] }, IMAGE_A);
    env = {
      TEMPORAL_ADDRESS: inject('temporalAddress'),
      TEMPORAL_NAMESPACE: inject('temporalNamespace'),
      TEMPORAL_TASK_QUEUE: temporal.taskQueue,
      DATABASE_URL: db.url,
      FLEETPATCH_FLEET_FILE: fleet.fleetFile,
      FLEETPATCH_DATA_DIR: await tempDir('swap-data'),
      LOG_LEVEL: 'error',
    };
  });

  afterAll(async () => {
    await temporal?.close();
    await fleet?.close();
    await db?.drop();
  });

  it('is named by audit verify and refused by every rollout before it touches a host', { timeout: 420_000 }, async () => {
    // Stored the ordinary way: a rollout that patched host-0000 with it.
    const first = await startPlan({ client: temporal.client, taskQueue: temporal.taskQueue, pool: db.pool, dir, actor: ops }, { ...plan('first', { file: fix.file }), hosts: { ids: ['host-0000'] } }, 'swap-first');
    expect((await first.handle.result()).status).toBe('succeeded');
    // A plan for the other hosts, resolved now, as a `rollout start` racing the swap would have.
    const { plan: later, dir: d, file } = await readPlanFile(await writePlan(dir, plan('later', { file: fix.file })));
    const resolvedBefore = await resolvePlanPayloads(later, d, { pool: db.pool, actor: ops, store: true, planFile: file });
    expect((await fleetpatch(['audit', 'verify'])).code).toBe(0);

    // The swap: bytes, sha256 and size all consistent with each other, none with the record.
    const evilBytes = await readFile(evil.file);
    await db.pool.query('ALTER TABLE payloads DISABLE TRIGGER payloads_append_only');
    await db.pool.query(`UPDATE payloads SET bytes = $2, sha256 = sha256($2::bytea), size = $3 WHERE build_id = $1`, [fix.buildId, evilBytes, evilBytes.length]);
    await db.pool.query('ALTER TABLE payloads ENABLE TRIGGER payloads_append_only');

    const verify = await fleetpatch(['audit', 'verify']);
    expect(verify.code, verify.stderr).toBe(1);
    expect(verify.stdout).toMatch(/^BROKEN: every hash chain of \d+ stream\(s\) holds/m);
    expect(verify.stdout).toMatch(new RegExp(`PAYLOADS: 1 of \\d+ stored payload\\(s\\) are not what was recorded`));
    expect(verify.stdout).toMatch(new RegExp(`fix\\s+${fix.buildId}\\s+altered\\s+payload fix \\(build-id ${fix.buildId}\\): the stored bytes hash to`));
    const asJson = JSON.parse((await fleetpatch(['audit', 'verify', '--json'])).stdout);
    expect(asJson.payloadBreaks).toEqual([expect.objectContaining({ kind: 'altered', name: 'fix', buildId: fix.buildId })]);

    // `rollout start` naming it by file, and by build-id: refused before any workflow starts.
    for (const [name, ref] of [['by-file', { file: path.basename(fix.file) }], ['by-build-id', { buildId: fix.buildId }]] as const) {
      const planFile = await writePlan(dir, plan(name, ref));
      const r = await fleetpatch(['rollout', 'start', planFile, '--id', `swap-${name}`, '--by', 'mallory']);
      expect(r.code, r.stderr).toBe(1);
      const lines = r.stderr.trim().split('\n');
      expect(lines).toHaveLength(1);
      expect(lines[0]).toMatch(new RegExp(`^fleetpatch: PAYLOAD_TAMPERED: .*payload fix \\(build-id ${fix.buildId}\\): the stored bytes hash to .*the bytes were swapped after they were stored`));
      await expect(temporal.client.workflow.getHandle(`rollout-swap-${name}`).describe()).rejects.toThrow(/not found/i);
    }
    await untouched();

    // A rollout started anyway (the plan resolved before the swap): the worker's preflight refuses
    // it before it reads, let alone changes, any host.
    const s = await startRollout(temporal.client, temporal.taskQueue, resolvedBefore, { requestedBy: ops, rolloutId: 'swap-raced' });
    // The preflight activity's refusal, non-retryable: PAYLOAD_TAMPERED, naming the payload.
    const outcome = await s.handle.result().then(
      (p) => `${p.status}: ${p.stopReason}`,
      (e: Error) => {
        let cause: unknown = e;
        while (cause instanceof Error && cause.cause) cause = cause.cause;
        return `${(cause as { type?: string }).type}: ${(cause as Error).message}`;
      },
    );
    expect(outcome).toMatch(new RegExp(`PAYLOAD_TAMPERED: payload fix \\(build-id ${fix.buildId}\\)`));
    await untouched();

    const refused = await refusals(fix.buildId);
    expect(refused.length).toBeGreaterThanOrEqual(3);
    expect(refused).toContainEqual(expect.objectContaining({ check: 'digest', code: 'PAYLOAD_TAMPERED', actor: { kind: 'user', id: 'mallory' } }));
    expect(refused).toContainEqual(expect.objectContaining({ correlation: expect.objectContaining({ rolloutId: 'swap-raced' }) }));
  });
});

describe('signed payloads by default', () => {
  let db: TestDatabase;
  let fleet: RunningFleet;
  let temporal: TestTemporal;
  let dir: string;

  beforeAll(async () => {
    db = await createTestDatabase();
    fleet = await startFleetServer({ hosts: 2, images: [hostImage(IMAGE_A)], seed: 17 });
    temporal = await startTestWorker({ pool: db.pool, fleetFile: fleet.fleetFile });
    dir = await tempDir('signed');
  });

  afterAll(async () => {
    await temporal?.close();
    await fleet?.close();
    await db?.drop();
  });

  const start = (p: PlanInput, id: string) => startPlan({ client: temporal.client, taskQueue: temporal.taskQueue, pool: db.pool, dir, actor: ops }, p, id);
  const refusals = async (buildId: string) =>
    (await new EventStore(db.pool).readStream(`payload-${buildId}`)).map((e) => e.event).filter((e) => e.type === 'PayloadRefused');

  it('refuses an unsigned payload and one signed by a key nobody trusts, records the refusal and the key; allowUnsigned: true lets one through', { timeout: 300_000 }, async () => {
    const plain = await writePayload(dir, 'plain', { funcs: [{ target: 'xen_extra_version', returns: '-plain' }] }, IMAGE_A, { signed: false });
    const base: Omit<PlanInput, 'name' | 'payloads'> = { hosts: { ids: ['host-0000'] }, waves: [{ name: 'all', hosts: '100%' }] };
    await expect(start({ name: 'unsigned', payloads: [{ file: plain.file }], ...base }, 'unsigned-1')).rejects.toMatchObject({
      code: 'SIGNATURE_INVALID',
      message: expect.stringMatching(/payload plain \(build-id [0-9a-f]+\) is not signed/),
    });
    expect(await refusals(plain.buildId)).toEqual([expect.objectContaining({ check: 'signature', code: 'SIGNATURE_INVALID', keyId: null, trustedKeys: [expect.any(String)] })]);

    const stranger = generateSigningKey();
    const foreign = await writePayload(dir, 'foreign', { funcs: [{ target: 'xen_extra_version', returns: '-foreign' }] }, IMAGE_A, { signed: false });
    await signFile(foreign.file, await readFile(foreign.file), stranger);
    await expect(start({ name: 'foreign', payloads: [{ file: foreign.file }], ...base }, 'foreign-1')).rejects.toMatchObject({
      code: 'SIGNATURE_INVALID',
      message: expect.stringMatching(new RegExp(`signed by key ${stranger.keyId}, which is not among the 1 trusted key`)),
    });
    expect(await refusals(foreign.buildId)).toEqual([expect.objectContaining({ keyId: stranger.keyId })]);
    expect((await liveStacks(fleet.fleetFile)).get('host-0000')).toEqual([]);

    // Explicitly allowed: it runs (and the worker's preflight agrees).
    const s = await start({ name: 'allowed', payloads: [{ file: plain.file }], allowUnsigned: true, ...base }, 'allowed-1');
    expect((await s.handle.result()).status).toBe('succeeded');
    expect((await liveStacks(fleet.fleetFile)).get('host-0000')).toEqual(['plain']);
  });
});
