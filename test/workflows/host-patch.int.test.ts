import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildPayload, DEFAULT_IMAGE, parsePayload } from '../../src/payload/index.ts';
import { EventStore } from '../../src/events/store.ts';
import { PayloadStore } from '../../src/events/payload-store.ts';
import { hostStream } from '../../src/events/streams.ts';
import { startFleetServer, type RunningFleet } from '../../src/hypervisor/index.ts';
import { hostPatchWorkflow } from '../../workflows/index.ts';
import type { PayloadMeta } from '../../src/rollout/types.ts';
import { createTestDatabase, type TestDatabase } from '../support/database.ts';
import { startTestWorker, type TestTemporal } from '../support/temporal.ts';

// The foundation's end-to-end slice: a real workflow on the real Temporal dev server runs
// activities against an emulated host and records events that we read back from PostgreSQL.
describe('hostPatchWorkflow on a real Temporal server and PostgreSQL', () => {
  let db: TestDatabase;
  let fleet: RunningFleet;
  let temporal: TestTemporal;
  let hello: PayloadMeta;

  beforeAll(async () => {
    db = await createTestDatabase();
    fleet = await startFleetServer({ hosts: 2 });
    temporal = await startTestWorker({ pool: db.pool, fleetFile: fleet.fleetFile });
    const bytes = buildPayload({ name: 'xen_hello_world', funcs: [{ target: 'xen_extra_version', returns: 'Hello World' }], writableData: 8 }, { image: DEFAULT_IMAGE });
    const parsed = parsePayload(bytes);
    hello = { name: 'xen_hello_world', buildId: parsed.buildIdHex, depends: parsed.dependsHex, xenDepends: parsed.xenDependsHex };
    await new PayloadStore(new EventStore(db.pool)).put(
      { name: hello.name, buildId: hello.buildId, bytes, depends: hello.depends, xenDepends: hello.xenDepends },
      { actor: { kind: 'user', id: 'test' } },
    );
  });

  afterAll(async () => {
    await temporal?.close();
    await fleet?.close();
    await db?.drop();
  });

  it('patches the host, verifies the function result, and records every step and check', async () => {
    const result = await temporal.client.workflow.execute(hostPatchWorkflow, {
      taskQueue: temporal.taskQueue,
      workflowId: `test-host-patch-${Date.now()}`,
      args: [{ rolloutId: 'slice', hostId: 'host-0000', mode: 'apply', payloads: [hello], wave: 0, waveName: 'slice', verify: { call: 'xen_extra_version', expect: 'Hello World' } }],
    });
    expect(result).toEqual({ hostId: 'host-0000', outcome: 'patched', applied: [{ name: 'xen_hello_world', buildId: hello.buildId }] });

    // The live host runs it...
    const live = await (await import('../../src/hypervisor/agent-client.ts')).FleetClient.open(fleet.fleetFile);
    expect((await live.host('host-0000').call('xen_extra_version')).result).toBe('Hello World');
    expect((await live.host('host-0001').call('xen_extra_version')).result).toBe('-unstable');

    // ...and PostgreSQL holds the facts, in order, with the dependency checks spelled out.
    const events = await new EventStore(db.pool).readStream(hostStream('host-0000'));
    const types = events.map((e) => e.event.type);
    expect(types).toEqual(['DependencyChecked', 'PayloadUploaded', 'DependencyChecked', 'DependencyChecked', 'PayloadApplied', 'HealthChecked']);
    const checks = events.filter((e) => e.event.type === 'DependencyChecked').map((e) => e.event);
    expect(checks[0]).toMatchObject({ phase: 'upload', on: 'xen_depends', expected: DEFAULT_IMAGE.buildIdHex, outcome: 'match' });
    expect(checks[1]).toMatchObject({ phase: 'apply', on: 'depends', expected: hello.depends, found: hello.depends, against: { kind: 'hypervisor' }, outcome: 'match' });
    expect(checks[2]).toMatchObject({ phase: 'apply', against: { kind: 'hypervisor' }, outcome: 'match' });
    expect(events.at(-1)!.event).toMatchObject({ type: 'HealthChecked', outcome: 'healthy', observed: 'Hello World' });
    expect(events.every((e) => e.event.correlation.rolloutId === 'slice')).toBe(true);
  });
});
