import { describe, expect, it } from 'vitest';
import { emptyHostStack, foldHostStack, hostSnapshot, type HostStackState } from '../../src/events/projections/host-stack.ts';
import { placementsOf } from '../../src/events/projections/payload-placement.ts';
import { BYE, HELLO, NOP, REPLACE, XEN, XEN_OTHER, asRecorded, hostEvents, xenTestRun } from './support/events.ts';

const fold = (hostId: string, events: Parameters<typeof asRecorded>[1]): HostStackState => foldHostStack(hostId, asRecorded(`host-${hostId}`, events));

describe('host stack reducer (Xen semantics)', () => {
  it("replays Xen's order-of-application run to the stack Xen ends with", () => {
    const s = fold('h1', xenTestRun('h1'));
    expect(s.applied).toEqual([REPLACE]);
    expect(s.loaded).toEqual([
      { ...HELLO, state: 'CHECKED' },
      { ...BYE, state: 'CHECKED' },
      { ...REPLACE, state: 'APPLIED' },
    ]);
    expect(s.hypervisorBuildId).toBe(XEN);
    expect(s.anomalies).toEqual([]);
    expect(s.streamPosition).toBe(13);
  });

  it('pushes on apply and pops the top on revert, bottom of the stack first', () => {
    const h = hostEvents('h1');
    const s = fold('h1', [h.uploaded(HELLO), h.applied(HELLO), h.uploaded(BYE), h.applied(BYE), h.applied(BYE), h.reverted(BYE)]);
    expect(s.applied).toEqual([HELLO]);
    expect(s.loaded.map((p) => p.state)).toEqual(['APPLIED', 'CHECKED']);
    expect(s.anomalies).toEqual([]);
  });

  it('refuses to revert anything but the top, as Xen does (EBUSY), and says so', () => {
    const h = hostEvents('h1');
    const s = fold('h1', [h.uploaded(HELLO), h.applied(HELLO), h.uploaded(BYE), h.applied(BYE), h.reverted(HELLO)]);
    expect(s.applied).toEqual([HELLO, BYE]);
    expect(s.anomalies).toHaveLength(1);
    expect(s.anomalies[0]).toMatchObject({ streamPosition: 5, type: 'PayloadReverted' });
    expect(s.anomalies[0]!.description).toMatch(/not the top.*xen_bye_world.*EBUSY/);
  });

  it('treats revert of a CHECKED payload as a no-op and unload of an applied one as a refusal', () => {
    const h = hostEvents('h1');
    const s = fold('h1', [h.uploaded(NOP), h.reverted(NOP), h.applied(NOP), h.unloaded(NOP)]);
    expect(s.applied).toEqual([NOP]);
    expect(s.loaded).toEqual([{ ...NOP, state: 'APPLIED' }]);
    expect(s.anomalies.map((a) => a.description)).toEqual([expect.stringMatching(/unloaded .* while it is applied \(Xen refuses: EINVAL\)/)]);
  });

  it('REPLACE leaves one payload applied and the replaced ones loaded as CHECKED', () => {
    const h = hostEvents('h1');
    const s = fold('h1', [h.uploaded(HELLO), h.applied(HELLO), h.uploaded(BYE), h.applied(BYE), h.uploaded(REPLACE), h.replaced(REPLACE, [HELLO, BYE])]);
    expect(s.applied).toEqual([REPLACE]);
    expect(s.loaded).toEqual([
      { ...HELLO, state: 'CHECKED' },
      { ...BYE, state: 'CHECKED' },
      { ...REPLACE, state: 'APPLIED' },
    ]);
    // A REPLACE whose record of the old stack disagrees is still applied, and noted.
    const odd = fold('h1', [h.uploaded(HELLO), h.applied(HELLO), h.uploaded(REPLACE), h.replaced(REPLACE, [])]);
    expect(odd.applied).toEqual([REPLACE]);
    expect(odd.anomalies[0]!.description).toMatch(/REPLACE says it reverted \[\]/);
  });

  it('unloads CHECKED payloads in any order; a reboot clears everything', () => {
    const h = hostEvents('h1');
    const s = fold('h1', [h.uploaded(HELLO), h.uploaded(BYE), h.uploaded(NOP), h.unloaded(BYE), h.applied(HELLO)]);
    expect(s.loaded.map((p) => p.name)).toEqual([HELLO.name, NOP.name]);
    const rebooted = foldHostStack('h1', asRecorded('host-h1', [h.rebooted(XEN_OTHER)], 6), s);
    expect(rebooted).toMatchObject({ applied: [], loaded: [], hypervisorBuildId: XEN_OTHER, streamPosition: 6 });
  });

  it('notes facts Xen could not have produced without stopping', () => {
    const h = hostEvents('h1');
    const s = fold('h1', [h.applied(HELLO), h.uploaded(HELLO), h.unloaded(BYE), h.reverted(NOP)]);
    expect(s.applied).toEqual([HELLO]);
    expect(s.anomalies.map((a) => a.streamPosition)).toEqual([1, 2, 3, 4]);
  });

  it('notes a gap in the stream', () => {
    const h = hostEvents('h1');
    const events = asRecorded('host-h1', [h.uploaded(HELLO), h.applied(HELLO)]);
    const s = foldHostStack('h1', [events[0]!, { ...events[1]!, streamPosition: 3 }]);
    expect(s.anomalies[0]!.description).toMatch(/expected position 2, got 3/);
  });

  it('adopts what a drift observation saw', () => {
    const h = hostEvents('h1');
    const base = fold('h1', [h.uploaded(HELLO), h.applied(HELLO)]);
    const live = { hypervisorBuildId: XEN, appliedStack: [HELLO, BYE], loaded: [{ ...HELLO, state: 'APPLIED' as const }, { ...BYE, state: 'APPLIED' as const }] };
    const drift = {
      type: 'DriftDetected' as const,
      schemaVersion: 1 as const,
      occurredAt: '2025-03-01T11:00:00.000Z',
      actor: { kind: 'system' as const, id: 'audit-replay' },
      hostId: 'h1',
      replayed: hostSnapshot(base),
      live,
      differences: [{ where: 'applied' as const, index: 1, replayed: null, live: 'xen_bye_world', description: 'bye applied by hand' }],
    };
    const s = foldHostStack('h1', asRecorded('host-h1', [drift], 3), base);
    expect(hostSnapshot(s)).toEqual(live);
  });

  it('refuses events of another stream', () => {
    const h = hostEvents('h2');
    expect(() => foldHostStack('h1', asRecorded('host-h2', [h.uploaded(HELLO)]))).toThrow(/not in the stream of host h1/);
  });
});

describe('payload placement', () => {
  it('lists every loaded payload with its place in the stack', () => {
    const s = fold('h1', xenTestRun('h1'));
    expect(placementsOf(s)).toEqual([
      { buildId: HELLO.buildId, hostId: 'h1', name: HELLO.name, state: 'CHECKED', stackIndex: null, stackHeight: 1 },
      { buildId: BYE.buildId, hostId: 'h1', name: BYE.name, state: 'CHECKED', stackIndex: null, stackHeight: 1 },
      { buildId: REPLACE.buildId, hostId: 'h1', name: REPLACE.name, state: 'APPLIED', stackIndex: 0, stackHeight: 1 },
    ]);
    expect(placementsOf(emptyHostStack('h9'))).toEqual([]);
  });
});
