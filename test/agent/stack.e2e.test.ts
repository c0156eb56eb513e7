/**
 * A stack of two payloads (hello, then bye on hello) rolled out over a fleet whose every host is a
 * dom0 agent over mutual TLS (test/support/agent-fleet.ts): two of them `fleetpatch agent`
 * processes, the rest in this process. What the hosts run is read from the emulated hypervisor
 * (its LIST and its journal), and what the host did from the agent's own journal.
 */
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { EventStore } from '../../src/events/store.ts';
import { createTestDatabase, type TestDatabase } from '../support/database.ts';
import { agentJournalLines, startAgentFleet, type AgentFleet } from '../support/agent-fleet.ts';
import { hostEvents, IMAGE_A, startPlan, tempDir, writePayload, type BuiltPayload } from '../support/rollout.ts';

// Every tool call is a double's Node process: a rollout through agents takes minutes on 2 cores.
vi.setConfig({ testTimeout: 900_000, hookTimeout: 600_000 });

const operator = { kind: 'user' as const, id: 'test-operator' };
const HOSTS = 6;

describe('a stack of two payloads rolled out through agents over mutual TLS', () => {
  let db: TestDatabase;
  let af: AgentFleet;
  let dir: string;
  let hello: BuiltPayload;
  let bye: BuiltPayload;

  beforeAll(async () => {
    db = await createTestDatabase();
    af = await startAgentFleet({ db, hosts: HOSTS, seed: 3, processHosts: (_id, i) => i < 2 });
    dir = await tempDir('agent-stack');
    hello = await writePayload(dir, 'hello', { funcs: [{ target: 'xen_extra_version', returns: '-hello' }] }, IMAGE_A);
    bye = await writePayload(dir, 'bye', { depends: hello.buildId, funcs: [{ target: 'xen_changeset', returns: 'bye' }] }, IMAGE_A);
  });

  afterAll(async () => {
    await af?.close();
    await db?.drop();
  });

  it('enrolled every host through the real path: the inventory lists them at their https address', async () => {
    const listed = await af.cli(['hosts', 'list', '--json']);
    expect(listed.code).toBe(0);
    const hosts = JSON.parse(listed.out.join('\n')) as { id: string; address: string; hypervisorBuildId: string }[];
    expect(hosts.map((h) => h.id)).toEqual(af.hostIds);
    for (const h of hosts) {
      expect(h.address).toBe(`https://127.0.0.1:${af.agents.get(h.id)!.port}`);
      expect(h.hypervisorBuildId).toBe(IMAGE_A.buildIdHex);
    }
  });

  it('applies hello then bye on every host, in that order, as the hypervisor itself lists and journals it', async () => {
    const s = await startPlan(
      { client: af.temporal.client, taskQueue: af.temporal.taskQueue, pool: db.pool, dir, actor: operator },
      {
        name: 'hello-bye',
        payloads: [{ file: hello.file }, { file: bye.file }],
        mode: 'stack',
        waves: [
          { name: 'canary', hosts: 1 },
          { name: 'rest', hosts: '100%' },
        ],
        concurrency: 3,
        verify: { call: 'xen_extra_version', expect: '-hello' },
      },
      'agents-stack-1',
    );
    const result = await s.handle.result();
    expect(result.failures).toEqual([]);
    expect(result.status).toBe('succeeded');
    expect(result.waves.map((w) => [w.name, w.status, w.patched, w.failed])).toEqual([
      ['canary', 'succeeded', 1, 0],
      ['rest', 'succeeded', HOSTS - 1, 0],
    ]);

    const lists = await af.hypervisorLists();
    const stacks = await af.hypervisorStacks();
    for (const id of af.hostIds) {
      expect(stacks.get(id), id).toEqual(['hello', 'bye']);
      expect(lists.get(id), id).toEqual([
        { name: 'hello', state: 'APPLIED' },
        { name: 'bye', state: 'APPLIED' },
      ]);
      // The hypervisor's own journal: uploads, its dependency checks, hello applied before bye.
      const journal = await af.hypervisorJournal(id);
      const applied = journal.filter((e) => e.kind === 'applied').map((e) => e.name);
      expect(applied, id).toEqual(['hello', 'bye']);
      expect(journal.filter((e) => e.kind === 'uploaded').map((e) => e.name).sort(), id).toEqual(['bye', 'hello']);
      expect(journal.filter((e) => e.kind === 'checked').length, id).toBeGreaterThan(0);
      expect(journal.findIndex((e) => e.kind === 'applied' && e.name === 'hello')).toBeLessThan(journal.findIndex((e) => e.kind === 'applied' && e.name === 'bye'));
    }
  });

  it('records the checks in the audit: both dependency checks matched on every host, and the health check', async () => {
    const audit = await af.cli(['audit', 'checks', '--rollout', 'agents-stack-1', '--json']);
    expect(audit.code).toBe(0);
    const checks = JSON.parse(audit.out.join('\n')) as { event: { hostId: string; payload: { name: string }; outcome: string; phase: string; expected: string } }[];
    for (const id of af.hostIds) {
      const mine = checks.filter((c) => c.event.hostId === id);
      expect(mine.every((c) => c.event.outcome === 'match'), id).toBe(true);
      // bye was checked against hello (what it depends on) before it was applied.
      expect(mine.some((c) => c.event.payload.name === 'bye' && c.event.expected === hello.buildId), id).toBe(true);
      expect(mine.some((c) => c.event.payload.name === 'hello'), id).toBe(true);
      const events = (await hostEvents(db.pool, id)).map((e) => e.event);
      expect(events.filter((e) => e.type === 'PayloadApplied').map((e) => (e as { payload: { name: string } }).payload.name), id).toEqual(['hello', 'bye']);
      expect(events.some((e) => e.type === 'HealthChecked' && e.outcome === 'healthy'), id).toBe(true);
    }
    expect(await new EventStore(db.pool).readAll(0, 10)).not.toHaveLength(0);
  });

  it("keeps each host's own journal of the upload and the apply, with the tool's argv and exit code", async () => {
    for (const id of [af.hostIds[0]!, af.hostIds[HOSTS - 1]!]) {
      const lines = await agentJournalLines(af, id);
      expect(lines.some((l) => /POST \/hosts\/[^ ]+\/livepatch\/hello by worker:e2e/.test(l)), id).toBe(true);
      expect(lines.some((l) => /xen-livepatch upload hello \S+ -> exit 0/.test(l)), id).toBe(true);
      expect(lines.some((l) => /xen-livepatch apply hello\b.* -> exit 0/.test(l)), id).toBe(true);
      expect(lines.some((l) => /xen-livepatch apply bye\b.* -> exit 0/.test(l)), id).toBe(true);
    }
  });
});
