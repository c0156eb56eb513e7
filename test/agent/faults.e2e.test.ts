/**
 * Faults through agents over mutual TLS, on one enrolled fleet of six agent hosts
 * (test/support/agent-fleet.ts):
 *  - a REPLACE that fails on a host of wave 2 is rolled back and every host restored to its stack;
 *  - a host whose agent trusts another key refuses the payload itself (the control plane trusts
 *    it): that host fails with the agent's reason in the audit, and its hypervisor never saw it.
 * Verdicts are read from the emulated hypervisors (LIST, journal), not from fleetpatch's records.
 */
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { generateSigningKey } from '../../src/payload/index.ts';
import { approveUpdate } from '../../workflows/messages.ts';
import type { Started } from '../../src/control/rollouts.ts';
import type { RolloutProgress } from '../../src/rollout/progress.ts';
import type { PlanInput } from '../../src/rollout/plan.ts';
import { createTestDatabase, type TestDatabase } from '../support/database.ts';
import { agentJournalLines, startAgentFleet, type AgentFleet } from '../support/agent-fleet.ts';
import { hostEvents, IMAGE_A, startPlan, tempDir, writePayload, type BuiltPayload, untilProgress } from '../support/rollout.ts';
import { TEST_SIGNING_KEY } from '../support/signing.ts';

vi.setConfig({ testTimeout: 900_000, hookTimeout: 600_000 });

const ops = { kind: 'user' as const, id: 'ops' };
const REPLACE_HOSTS = ['host-0000', 'host-0001', 'host-0002', 'host-0003'];
/** Its agent trusts only a key of its own, not the one the payloads are signed with. */
const DISTRUSTING = 'host-0005';
const OTHER_KEY = generateSigningKey();

describe('faults through agents over mutual TLS', () => {
  let db: TestDatabase;
  let af: AgentFleet;
  let dir: string;
  let hello: BuiltPayload;
  let bye: BuiltPayload;

  beforeAll(async () => {
    db = await createTestDatabase();
    af = await startAgentFleet({ db, hosts: 6, seed: 7, processHosts: (id) => id === 'host-0001', trustedKeys: (id) => (id === DISTRUSTING ? [OTHER_KEY] : [TEST_SIGNING_KEY]) });
    dir = await tempDir('agent-faults');
    hello = await writePayload(dir, 'hello', { funcs: [{ target: 'xen_extra_version', returns: 'Hello World' }] }, IMAGE_A);
    bye = await writePayload(dir, 'bye', { depends: hello.buildId, funcs: [{ target: 'xen_extra_version', returns: 'Bye World!' }] }, IMAGE_A);
  });

  afterAll(async () => {
    await af?.close();
    await db?.drop();
  });

  const start = (plan: PlanInput, rolloutId: string) => startPlan({ client: af.temporal.client, taskQueue: af.temporal.taskQueue, pool: db.pool, dir, actor: ops }, plan, rolloutId);

  const until = (s: Started, ok: (p: RolloutProgress) => boolean, timeoutMs?: number) => untilProgress(s, ok, timeoutMs === undefined ? { timeoutMs: 600_000, pollMs: 500 } : { ...{ timeoutMs: 600_000, pollMs: 500 }, timeoutMs });

  it('a REPLACE that fails on a host of wave 2 is rolled back: every host back on [hello, bye], nothing of it loaded', async () => {
    const base = await start({ name: 'base', mode: 'stack', payloads: [{ file: hello.file }, { file: bye.file }], hosts: { ids: REPLACE_HOSTS }, waves: [{ name: 'all', hosts: '100%' }], concurrency: 4 }, 'agents-base-1');
    const baseResult = await base.handle.result();
    expect(baseResult.failures).toEqual([]);
    const before = await af.hypervisorLists();
    for (const id of REPLACE_HOSTS) expect(before.get(id), id).toEqual([{ name: 'hello', state: 'APPLIED' }, { name: 'bye', state: 'APPLIED' }]);

    const cumulative = await writePayload(dir, 'cumulative', { funcs: [{ target: 'xen_extra_version', returns: 'Hello Again World!' }, { target: 'xen_changeset', oldAddress: 'name', returns: 'cumulative' }] }, IMAGE_A);
    const s = await start(
      {
        name: 'replace',
        mode: 'replace',
        payloads: [{ file: cumulative.file }],
        hosts: { ids: REPLACE_HOSTS },
        waves: [
          { name: 'canary', hosts: 1 },
          { name: 'rest', hosts: '100%' },
        ],
        gates: [{ after: 'canary', approval: true }],
        concurrency: 1,
        verify: { call: 'xen_extra_version', expect: 'Hello Again World!' },
        onFailure: 'rollback',
      },
      'agents-replace-1',
    );
    await until(s, (p) => p.status === 'awaiting-approval');
    const patched = await af.hypervisorStacks();
    const canary = REPLACE_HOSTS.filter((id) => patched.get(id)!.join() === 'cumulative');
    expect(canary).toHaveLength(1);
    // The REPLACE fails on the first host of wave 2, after Xen has reverted that host's stack.
    const failing = REPLACE_HOSTS.filter((id) => !canary.includes(id)).slice(0, 1);
    af.fleet.setFaults({ rules: [{ kind: 'applyFailure', hosts: failing, payload: 'cumulative', errno: 'EINVAL', reason: 'injected: patching failed' }] });
    await s.handle.executeUpdate(approveUpdate, { args: [{ by: ops, reason: 'canary healthy' }] });
    const result = await s.handle.result();
    af.fleet.setFaults({ rules: [] });

    expect(result.status).toBe('rolled-back');
    expect(result.failures).toHaveLength(1);
    expect(result.failures[0]).toMatchObject({ hostId: failing[0], stage: 'replace', code: 'EINVAL' });
    expect(result.rollback).toMatchObject({ status: 'finished', stackGrew: 0, unrecoverable: 0, failed: 0 });

    // The hypervisors: every host runs [hello, bye] again, and cumulative is nowhere loaded.
    const after = await af.hypervisorLists();
    for (const id of REPLACE_HOSTS) expect(after.get(id), id).toEqual(before.get(id));
    for (const id of [...canary, ...failing]) {
      const journal = await af.hypervisorJournal(id);
      expect(journal.some((e) => e.kind === (canary.includes(id) ? 'replaced' : 'failed') && e.name === 'cumulative'), id).toBe(true);
      expect(journal.at(-1)?.kind === 'unloaded' || journal.some((e) => e.kind === 'unloaded' && e.name === 'cumulative'), id).toBe(true);
    }
  });

  it("a host whose agent does not trust the payload's key refuses it: the reason is recorded and its hypervisor never saw it", async () => {
    const solo = await writePayload(dir, 'solo', { funcs: [{ target: 'xen_changeset', returns: 'solo' }] }, IMAGE_A);
    const s = await start({ name: 'solo', mode: 'stack', payloads: [{ file: solo.file }], hosts: { ids: ['host-0004', DISTRUSTING] }, waves: [{ name: 'all', hosts: '100%' }], concurrency: 2, budget: { perWave: 1, total: 1 } }, 'agents-solo-1');
    const result = await s.handle.result();

    // The other host took it; the distrusting one failed at upload, with the agent's reason.
    expect((await af.hypervisorStacks()).get('host-0004')).toEqual(['solo']);
    expect(result.failures).toHaveLength(1);
    const failure = result.failures[0]!;
    expect(failure).toMatchObject({ hostId: DISTRUSTING, stage: 'upload' });
    expect(failure.code).toBe('PAYLOAD_UNTRUSTED');
    expect(failure.reason).toContain("this host's own trusted keys");

    // The hypervisor itself: nothing loaded, nothing in its journal, ever.
    expect((await af.hypervisorLists()).get(DISTRUSTING)).toEqual([]);
    expect(await af.hypervisorJournal(DISTRUSTING)).toEqual([]);
    // The audit records the refusal on the host's stream; nothing was uploaded or applied there.
    const events = (await hostEvents(db.pool, DISTRUSTING)).map((e) => e.event);
    expect(events.some((e) => e.type === 'PayloadUploaded' || e.type === 'PayloadApplied')).toBe(false);
    const timeline = await af.cli(['audit', 'timeline', '--host', DISTRUSTING]);
    expect(timeline.code).toBe(0);
    expect(timeline.out.join('\n')).toContain('PAYLOAD_UNTRUSTED');
    // The agent's own journal: the request came, and no tool ever ran an upload.
    const lines = await agentJournalLines(af, DISTRUSTING);
    expect(lines.some((l) => /POST \/hosts\/[^ ]+\/livepatch\/solo by worker:e2e/.test(l))).toBe(true);
    expect(lines.some((l) => /xen-livepatch upload/.test(l))).toBe(false);
  });
});
