/**
 * An agent killed in the middle of an apply (SIGKILL of its `fleetpatch agent` process while the
 * hypervisor is still working on the action) and started again on the same address: the rollout
 * reconciles the host like any other fault: its step is tried again on the restarted agent, and
 * the hypervisor ends with the payload applied exactly once, as the event store says.
 */
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../support/database.ts';
import { agentJournalText, startAgentFleet, type AgentFleet } from '../support/agent-fleet.ts';
import { hostEvents, IMAGE_A, replayDifferences, startPlan, tempDir, writePayload } from '../support/rollout.ts';

vi.setConfig({ testTimeout: 900_000, hookTimeout: 600_000 });

const ops = { kind: 'user' as const, id: 'ops' };
const VICTIM = 'host-0000';

describe('an agent restarted mid-action', () => {
  let db: TestDatabase;
  let af: AgentFleet;

  beforeAll(async () => {
    db = await createTestDatabase();
    af = await startAgentFleet({ db, hosts: 3, seed: 13, processHosts: (id) => id === VICTIM });
  });

  afterAll(async () => {
    await af?.close();
    await db?.drop();
  });

  it('is reconciled like any other fault: the payload ends applied once, on the hypervisor and in the records', async () => {
    const dir = await tempDir('agent-restart');
    const fix = await writePayload(dir, 'fix', { funcs: [{ target: 'xen_extra_version', returns: '-fix' }] }, IMAGE_A);
    // The victim's hypervisor takes 20 s over each action: time to kill its agent during the apply.
    af.fleet.setFaults({ rules: [{ kind: 'actionDuration', ms: 20_000, hosts: [VICTIM] }] });
    const s = await startPlan(
      { client: af.temporal.client, taskQueue: af.temporal.taskQueue, pool: db.pool, dir, actor: ops },
      { name: 'fix', payloads: [{ file: fix.file }], waves: [{ name: 'all', hosts: '100%' }], concurrency: 3, verify: { call: 'xen_extra_version', expect: '-fix' } },
      'agents-restart-1',
    );

    // The apply reached the victim's agent (its journal records the request before any tool runs)
    // and its xen-livepatch has started the action on the hypervisor, which is still at it.
    const deadline = Date.now() + 600_000;
    while (!((await agentJournalText(af, VICTIM)).includes('/livepatch/fix/action') && af.fleet.host(VICTIM)!.pending !== null)) {
      if (Date.now() > deadline) throw new Error('the apply never reached the hypervisor through the agent');
      await new Promise((r) => setTimeout(r, 100));
    }
    const agent = af.agents.get(VICTIM)!;
    const killed = new Promise((r) => agent.child!.once('exit', (_code, signal) => r(signal)));
    agent.child!.kill('SIGKILL');
    expect(await killed).toBe('SIGKILL');
    // The hypervisor is still working on it: the action was the hypervisor's, not the agent's.
    expect(af.fleet.host(VICTIM)!.pending).not.toBeNull();
    // Started again at once, on the same directory and address: in this process, because loading
    // a `fleetpatch agent` takes longer than the worker's retries of one step (0.5 + 1 + 2 s) on a
    // loaded machine, and the test is about the agent's restart, not about an outage (the rollout
    // tests cover unreachable hosts).
    await af.startInProcessAgent(VICTIM);

    const result = await s.handle.result();
    af.fleet.setFaults({ rules: [] });
    // The worker's step met a dead connection, tried again on the restarted agent, found the
    // hypervisor still at (or done with) the apply and went on from what the host lists.
    expect(result.status, JSON.stringify(result.failures)).toBe('succeeded');
    expect(result.failures).toEqual([]);

    // The hypervisors: every host runs fix, applied exactly once on the victim.
    const stacks = await af.hypervisorStacks();
    for (const id of af.hostIds) expect(stacks.get(id), id).toEqual(['fix']);
    const journal = (await af.hypervisorJournal(VICTIM)).filter((e) => e.name === 'fix').map((e) => e.kind);
    expect(journal.filter((k) => k === 'applied')).toHaveLength(1);
    expect(journal.filter((k) => k === 'uploaded')).toHaveLength(1);
    // The records agree with the hypervisors, and say it was applied once.
    expect(await replayDifferences(db.pool, af.fleet.fleetFile)).toEqual([]);
    expect((await hostEvents(db.pool, VICTIM)).map((e) => e.event.type).filter((t) => t === 'PayloadApplied')).toHaveLength(1);
    // The restarted agent answered the worker again (its journal goes on across the restart).
    const text = await agentJournalText(af, VICTIM);
    expect(text.split('\n').filter((l) => l.includes('"kind":"request"')).length).toBeGreaterThan(3);
  });
});
