/**
 * Rollouts through a dom0 agent: the worker's FleetClient reaches a `fleetpatch agent` (plain
 * HTTP on loopback with a bearer token: this test is about the rollout, agent.int.test.ts about
 * TLS) that drives a stateful double of xen-livepatch and xl (fixtures/fake-xen.mjs). A signed
 * payload is applied and verified; when the host no longer trusts the key that signed the next
 * one, the host refuses it itself, the rollout records that refusal as the host's failure, and
 * nothing is applied there, even though the control plane trusted the payload.
 */
import { chmod, mkdir, writeFile, readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import { readPlanFile, resolvePlanPayloads, startRollout } from '../../src/control/rollouts.ts';
import { startAgent, type RunningAgent } from '../../src/host/agent-server.ts';
import { readJournal } from '../../src/host/host-journal.ts';
import { generateSigningKey, parsePayload, publicKeyToFile } from '../../src/payload/index.ts';
import { createTestDatabase, type TestDatabase } from '../support/database.ts';
import { startTestWorker, type TestTemporal } from '../support/temporal.ts';
import { hostEvents, IMAGE_A, tempDir, writePayload, writePlan } from '../support/rollout.ts';
import { TEST_SIGNING_KEY } from '../support/signing.ts';

const FAKE = path.join(path.dirname(fileURLToPath(import.meta.url)), 'fixtures', 'fake-xen.mjs');
const HV = IMAGE_A.buildIdHex;
const TOKEN = 'agent-token-'.padEnd(40, 'x');
const operator = { kind: 'user' as const, id: 'test-operator' };

describe('rollouts through a dom0 agent', () => {
  let db: TestDatabase;
  let temporal: TestTemporal;
  let agent: RunningAgent;
  let dir: string;
  let agentDir: string;
  let stateFile: string;

  const tellFake = async (file: string, extra: string) => {
    const bytes = await readFile(file);
    const p = parsePayload(bytes);
    const st = JSON.parse(await readFile(stateFile, 'utf8'));
    st.facts[createHash('sha256').update(bytes).digest('hex')] = { buildId: p.buildIdHex, depends: p.dependsHex, xenDepends: p.xenDependsHex, functions: ['xen_extra_version'], metadata: [], extra };
    await writeFile(stateFile, JSON.stringify(st));
  };
  const run = async (planFile: string, rolloutId: string) => {
    const { plan, dir: planDir } = await readPlanFile(planFile);
    const resolved = await resolvePlanPayloads(plan, planDir, { pool: db.pool, actor: operator, store: true });
    return (await startRollout(temporal.client, temporal.taskQueue, resolved, { requestedBy: operator, rolloutId })).handle.result();
  };

  beforeAll(async () => {
    db = await createTestDatabase();
    dir = await tempDir('agent-rollout');
    agentDir = path.join(dir, 'agent');
    await mkdir(agentDir);
    await writeFile(path.join(agentDir, 'trusted-keys.json'), JSON.stringify([publicKeyToFile(TEST_SIGNING_KEY)]));
    await writeFile(path.join(dir, 'boot_id'), '7d3c2b1a-0000-4000-8000-000000000001\n');
    await writeFile(path.join(dir, 'stat'), 'btime 1765150000\n');
    stateFile = path.join(dir, 'fake.json');
    await writeFile(stateFile, JSON.stringify({ hypervisor: HV, extra: '-unstable', payloads: [], stack: [], facts: {}, dmesg: [] }));
    for (const t of ['xen-livepatch', 'xl']) {
      await writeFile(path.join(dir, t), `#!/bin/sh\nexec '${process.execPath}' '${FAKE}' '${stateFile}' ${t} "$@"\n`);
      await chmod(path.join(dir, t), 0o755);
    }
    agent = await startAgent({
      dir: agentDir, hostId: 'host-a', host: '127.0.0.1', port: 0, tls: null, token: TOKEN,
      tools: { xenLivepatch: path.join(dir, 'xen-livepatch'), xl: path.join(dir, 'xl'), uploadDir: dir, timeoutMs: 30_000 },
      bootIdFile: path.join(dir, 'boot_id'), statFile: path.join(dir, 'stat'),
    });
    const fleetFile = path.join(dir, 'fleet.json');
    await writeFile(
      fleetFile,
      JSON.stringify({
        url: agent.url, adminToken: 'no-admin-on-a-real-host', createdAt: new Date().toISOString(), seed: 1, images: [{ name: 'xen', buildId: HV }],
        hosts: [{ id: 'host-a', token: TOKEN, labels: { region: 'eu-west', rack: 'rack-000' }, buildId: HV, image: 'xen' }],
      }),
      { mode: 0o600 },
    );
    temporal = await startTestWorker({ pool: db.pool, fleetFile });
  }, 300_000);

  afterAll(async () => {
    await temporal?.close();
    await agent?.close();
    await db?.drop();
  });

  it('applies and verifies a signed payload on the host, which journals the upload and the apply', async () => {
    const fix = await writePayload(dir, 'fix', { funcs: [{ target: 'xen_extra_version', returns: '-fix' }] }, IMAGE_A);
    await tellFake(fix.file, '-fix');
    const plan = await writePlan(dir, { name: 'fix', payloads: [{ file: fix.file }], waves: [{ name: 'all', hosts: '100%' }], verify: { call: 'xen_extra_version', expect: '-fix' } });
    const result = await run(plan, 'agent-fix-1');
    expect(result.status).toBe('succeeded');
    const st = JSON.parse(await readFile(stateFile, 'utf8'));
    expect(st.stack).toEqual(['fix']);
    const events = (await hostEvents(db.pool, 'host-a')).map((e) => e.event.type);
    expect(events).toContain('PayloadApplied');
    expect(events).toContain('HealthChecked');
    const journal = await readJournal(agent.journalFile);
    expect(journal.some((e) => e.kind === 'tool' && e.argv[1] === 'upload' && e.argv[2] === 'fix' && e.exitCode === 0)).toBe(true);
    expect(journal.some((e) => e.kind === 'tool' && e.argv[1] === 'apply' && e.argv[2] === 'fix' && e.exitCode === 0)).toBe(true);
  }, 300_000);

  it('fails the host with the agent\'s own refusal when the host does not trust the signer, and applies nothing', async () => {
    // The control plane still trusts the test key; the host's owner has replaced it.
    await writeFile(path.join(agentDir, 'trusted-keys.json'), JSON.stringify([publicKeyToFile(generateSigningKey())]));
    // It sits on fix, the top of the host's stack.
    const onFix = await writePayload(dir, 'on-fix', { funcs: [{ target: 'xen_changeset', returns: 'next' }], depends: JSON.parse(await readFile(stateFile, 'utf8')).payloads[0].facts.buildId }, IMAGE_A);
    await tellFake(onFix.file, '-fix');
    const plan = await writePlan(dir, { name: 'next', payloads: [{ file: onFix.file }], waves: [{ name: 'all', hosts: '100%' }], budget: { perWave: '100%', total: '100%' } });
    const result = await run(plan, 'agent-next-1');
    // Within its budget, the rollout ends; its one host failed, for the host's own reason.
    expect(result.waves.map((w) => [w.name, w.patched, w.failed])).toEqual([['all', 0, 1]]);
    const failed = (await hostEvents(db.pool, 'host-a')).map((e) => e.event as { type: string; code?: string; reason?: string }).filter((e) => e.type === 'PayloadActionFailed');
    expect(failed.at(-1)).toMatchObject({ code: 'PAYLOAD_UNTRUSTED' });
    expect(failed.at(-1)!.reason).toMatch(/this host's own trusted keys/);
    const st = JSON.parse(await readFile(stateFile, 'utf8'));
    expect(st.payloads.map((p: { name: string }) => p.name)).toEqual(['fix']);
    expect(st.stack).toEqual(['fix']);
  }, 300_000);
});
