/**
 * `fleetpatch audit ...` end to end in-process: real PostgreSQL (the test database, through the
 * same withServices every command uses) and, for replay, a real emulated fleet whose host gets a
 * real payload uploaded and applied over HTTP.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { auditCommand } from '../../src/cli/audit.ts';
import { memoryIO } from '../../src/cli/io.ts';
import { reportError } from '../../src/cli/main.ts';
import { EventStore } from '../../src/events/store.ts';
import { startFleetServer, type RunningFleet } from '../../src/emulator/index.ts';
import { FleetClient, type HostAgent } from '../../src/agent/index.ts';
import { buildPayload } from '../../src/payload/builder.ts';
import { DEFAULT_IMAGE } from '../../src/payload/image.ts';
import { createTestDatabase, type TestDatabase } from '../support/database.ts';
import { BYE, HELLO, REPLACE, hostEvents, rolloutStory, withIds, xenTestRun } from './support/events.ts';

let db: TestDatabase;
let store: EventStore;
let dataDir: string;
let fleet: RunningFleet;
let agent: HostAgent;
const saved = { DATABASE_URL: process.env.DATABASE_URL, FLEETPATCH_DATA_DIR: process.env.FLEETPATCH_DATA_DIR, LOG_LEVEL: process.env.LOG_LEVEL };

beforeAll(async () => {
  db = await createTestDatabase();
  store = new EventStore(db.pool);
  dataDir = await mkdtemp(path.join(os.tmpdir(), 'fleetpatch-audit-'));
  await store.append('host-c1', withIds('c1', xenTestRun('c1')));
  await store.append('rollout-r1', withIds('r1', rolloutStory('r1')));
  // The default fleet file place, so replay finds it without --fleet-file.
  fleet = await startFleetServer({ hosts: 2, fleetFile: path.join(dataDir, 'fleet.json') });
  agent = new FleetClient(fleet.fleet).host('host-0000');
  Object.assign(process.env, { DATABASE_URL: db.url, FLEETPATCH_DATA_DIR: dataDir, LOG_LEVEL: 'silent' });
});
afterAll(async () => {
  for (const [k, v] of Object.entries(saved)) {
    if (v === undefined) delete process.env[k];
    else process.env[k] = v;
  }
  await fleet?.close();
  await rm(dataDir, { recursive: true, force: true });
  await db?.drop();
});

async function audit(...args: string[]): Promise<{ code: number; out: string; err: string }> {
  const io = memoryIO();
  let code: number;
  try {
    code = await auditCommand(args, io);
  } catch (e) {
    code = reportError(e, io);
  }
  return { code, out: io.stdout.join('\n'), err: io.stderr.join('\n') };
}

describe('fleetpatch audit', () => {
  it('prints a host timeline as a table and as JSON', async () => {
    const t = await audit('timeline', '--host', 'c1');
    expect(t.code).toBe(0);
    expect(t.out).toMatch(/^Timeline of host c1: 13 event\(s\)/);
    expect(t.out).toMatch(/WHEN\s+WHERE\s+ACTOR\s+EVENT\s+WHAT/);
    expect(t.out).toMatch(/#12\s+workflow:host-patch\/r1\/h1\s+PayloadReplaced\s+replaced \[xen_hello_world \(111111111111…\), xen_bye_world \(222222222222…\)\] with xen_replace_world/);
    const j = await audit('timeline', '--host', 'c1', '--json', '--limit', '2');
    expect(JSON.parse(j.out).map((e: { event: { type: string } }) => e.event.type)).toEqual(['DependencyChecked', 'PayloadUploaded']);
  });

  it('prints a stack now, as of a position and as of a time', async () => {
    const now = await audit('stack', '--host', 'c1');
    expect(now.out).toMatch(/Applied stack \(bottom first\):\n#\s+NAME\s+BUILD-ID\n[- ]+\n1 top\s+xen_replace_world\s+3333/);
    expect(now.out).toMatch(/xen_hello_world\s+1{40}\s+CHECKED/);
    const pos = await audit('stack', '--host', 'c1', '--position', '10', '--json');
    expect(JSON.parse(pos.out).state.applied).toEqual([HELLO, BYE]);
    const early = await audit('stack', '--host', 'c1', '--at', '2001-01-01T00:00:00Z');
    expect(early.out).toMatch(/0 event\(s\) replayed/);
    expect(early.out).toMatch(/Applied stack: empty/);
    const both = await audit('stack', '--host', 'c1', '--at', 'x', '--position', '1');
    expect(both).toMatchObject({ code: 2, err: expect.stringMatching(/--at or --position, not both/) });
  });

  it('lists dependency checks with filters', async () => {
    const all = await audit('checks');
    expect(all.out).toMatch(/^3 dependency check\(s\), 1 not matching/);
    const mismatch = await audit('checks', '--outcome', 'mismatch', '--host', 'c1');
    expect(mismatch.out).toMatch(/c1\s+apply\s+xen_bye_world \(222222222222…\)\s+depends\s+111111111111…\s+333333333333…\s+xen_replace_world\s+MISMATCH\s+-\s+EINVAL: check against xen_replace_world build-id failed/);
    expect(JSON.parse((await audit('checks', '--payload', BYE.buildId, '--json')).out)).toHaveLength(2);
    expect((await audit('checks', '--rollout', 'nope')).out).toBe('No dependency checks recorded that match.');
    expect((await audit('checks', '--outcome', 'perhaps')).code).toBe(2);
  });

  it('tells where a payload is, now and then', async () => {
    const now = await audit('where', '--payload', REPLACE.buildId);
    expect(now.out).toMatch(/applied on 1 host\(s\), loaded only on 0/);
    expect(now.out).toMatch(/c1\s+xen_replace_world\s+APPLIED\s+1 of 1 \(top\)/);
    const then = await audit('where', '--payload', REPLACE.buildId, '--at', '2001-01-01T00:00:00Z', '--json');
    expect(JSON.parse(then.out)).toEqual([]);
    expect((await audit('where', '--payload', 'XYZ')).code).toBe(2);
  });

  it('reports a rollout with its decisions', async () => {
    const r = await audit('rollout', 'r1');
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/Rollout r1: "hello-everywhere" \(apply\), ROLLBACK-INCOMPLETE/);
    expect(r.out).toMatch(/approved\s+alice\s+canary\s+canary healthy for 10 minutes/);
    expect(r.out).toMatch(/h3\s+rest\s+failed\s+-\s+check EINVAL: /);
    expect(r.out).toMatch(/Rollback finished \(ROLLBACK-INCOMPLETE\).*1 rolled back, 0 nothing to do, 1 not back \(1 stack grew, 0 unrecoverable, 0 failed\) of 2/);
    expect(r.out).toMatch(/h2\s+stack-grew\s+-\s+-\s+\?\s+\?\s+xen_bye_world was applied above it since/);
    expect(JSON.parse((await audit('rollout', 'r1', '--json')).out).summary.status).toBe('rollback-incomplete');
    expect(await audit('rollout', 'r404')).toMatchObject({ code: 1, err: expect.stringMatching(/ROLLOUT_NOT_FOUND/) });
  });

  it('lists rollouts from the rollout-summaries projection', async () => {
    const r = await audit('rollouts');
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/ROLLOUT\s+PLAN\s+STATUS/);
    expect(r.out).toMatch(/r1\s+hello-everywhere\s+rollback-incomplete\s+2025-03-01 10:00:01.000Z\s+alice\s+2025-03-01 10:00:16.000Z\s+2\s+0\s+1\s+wave rest exceeded its failure budget/);
    expect(JSON.parse((await audit('rollouts', '--json')).out)).toEqual([expect.objectContaining({ rolloutId: 'r1', status: 'rollback-incomplete' })]);
  });

  it('replays a host against the live emulated host and records drift', async () => {
    // A real payload on host-0000, and the facts that say so.
    const bytes = buildPayload({ name: 'hello', funcs: [{ target: 'xen_extra_version', returns: 'Hello' }] }, { image: DEFAULT_IMAGE });
    const uploaded = await agent.upload('hello', bytes);
    await agent.action('hello', 'apply');
    expect(await agent.waitForAction('hello')).toMatchObject({ state: 'APPLIED', rc: 0 });
    const hv = fleet.fleet.hosts[0]!.buildId;
    const hello = { name: 'hello', buildId: uploaded.buildId };
    const h = hostEvents('host-0000');
    await store.append('host-host-0000', withIds('h0', [h.checked(hello, hv, hv, { kind: 'hypervisor' }), h.uploaded(hello), h.applied(hello)]));

    const same = await audit('replay', '--host', 'host-0000');
    expect(same).toMatchObject({ code: 0, out: expect.stringMatching(/3 event\(s\) replayed.*\nThe live host runs exactly what its events say/) });
    // A host with no events and nothing loaded agrees too.
    expect((await audit('replay', '--host', 'host-0001', '--fleet-file', fleet.fleetFile)).code).toBe(0);

    // Someone reverts the payload by hand, outside any rollout.
    await agent.action('hello', 'revert');
    expect(await agent.waitForAction('hello')).toMatchObject({ state: 'CHECKED', rc: 0 });
    const dry = await audit('replay', '--host', 'host-0000', '--no-record');
    expect(dry).toMatchObject({ code: 1, out: expect.stringMatching(/Not recorded/) });
    const drift = await audit('replay', '--host', 'host-0000');
    expect(drift.code).toBe(1);
    expect(drift.out).toMatch(/DRIFT: 2 difference\(s\)/);
    expect(drift.out).toMatch(new RegExp(`applied 0\\s+hello \\(${uploaded.buildId}\\)\\s+-\\s+applied stack position 0`));
    expect(drift.out).toMatch(/Recorded as DriftDetected at host-host-0000#4/);
    // Recorded once: the stack now follows what the host was seen running.
    expect((await audit('replay', '--host', 'host-0000')).code).toBe(0);
    expect((await audit('timeline', '--host', 'host-0000')).out).toMatch(/DriftDetected\s+DRIFT: 2 difference/);
    const json = JSON.parse((await audit('stack', '--host', 'host-0000', '--json')).out);
    expect(json.state).toMatchObject({ applied: [], loaded: [{ ...hello, state: 'CHECKED' }], hypervisorBuildId: hv });

    expect(await audit('replay', '--host', 'host-0099')).toMatchObject({ code: 1, err: expect.stringMatching(/HOST_NOT_FOUND/) });
    expect(await audit('replay', '--host', 'host-0000', '--fleet-file', path.join(dataDir, 'none.json'))).toMatchObject({ code: 1, err: expect.stringMatching(/FLEET_FILE_INVALID/) });
  });

  it('verifies the chains, and exits 1 with the first broken link after tampering', async () => {
    const ok = await audit('verify');
    expect(ok).toMatchObject({ code: 0, out: expect.stringMatching(/^OK: 33 event\(s\) in 3 stream\(s\)/) });
    await db.pool.query('ALTER TABLE events DISABLE TRIGGER events_append_only');
    await db.pool.query(`UPDATE events SET actor = '{"kind":"user","id":"mallory"}' WHERE stream_id = 'rollout-r1' AND stream_position = 6`);
    await db.pool.query('ALTER TABLE events ENABLE TRIGGER events_append_only');
    const broken = await audit('verify');
    expect(broken.code).toBe(1);
    expect(broken.out).toMatch(/BROKEN: 1 of 3 stream\(s\)/);
    expect(broken.out).toMatch(/rollout-r1\s+6\s+altered\s+the event at position 6 \(ApprovalGiven\)/);
    const asJson = await audit('verify', '--json');
    expect(asJson.code).toBe(1);
    expect(JSON.parse(asJson.out).breaks[0]).toMatchObject({ streamId: 'rollout-r1', position: 6, kind: 'altered' });
  });

  it('verify --stream: a stream that does not exist is an error, not "OK: 0 events"', async () => {
    const r = await audit('verify', '--stream', 'host-nobody');
    expect(r).toMatchObject({ code: 1, out: '', err: 'fleetpatch: STREAM_NOT_FOUND: no stream host-nobody: no event and no stream head has that name' });
    expect(await audit('verify', '--stream', 'nobody')).toMatchObject({ code: 2, err: expect.stringMatching(/--stream must be a stream name/) });
  });

  it('explains its usage', async () => {
    expect((await audit()).code).toBe(2);
    expect((await audit('--help')).out).toMatch(/fleetpatch audit <subcommand>/);
    expect(await audit('frobnicate')).toMatchObject({ code: 2, err: expect.stringMatching(/unknown subcommand/) });
    expect(await audit('timeline')).toMatchObject({ code: 2, err: expect.stringMatching(/--host is required/) });
    expect(await audit('timeline', '--host', 'c1', '--bogus')).toMatchObject({ code: 2 });
  });
});
