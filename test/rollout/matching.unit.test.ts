import { describe, expect, it } from 'vitest';
import { assignPayload, type HostState, type PayloadMeta } from '../../src/rollout/matching.ts';

const XEN_A = 'aa'.repeat(20);
const XEN_B = 'bb'.repeat(20);
const hello: PayloadMeta = { name: 'hello', buildId: '11'.repeat(20), depends: XEN_A, xenDepends: XEN_A };
const helloB: PayloadMeta = { name: 'hello-b', buildId: '12'.repeat(20), depends: XEN_B, xenDepends: XEN_B };
const bye: PayloadMeta = { name: 'bye', buildId: '22'.repeat(20), depends: hello.buildId, xenDepends: XEN_A };
const replace: PayloadMeta = { name: 'replace', buildId: '33'.repeat(20), depends: XEN_A, xenDepends: XEN_A };

function host(hypervisorBuildId: string, applied: PayloadMeta[] = []): HostState {
  const entries = applied.map((p) => ({ name: p.name, buildId: p.buildId }));
  return { hostId: 'h', hypervisorBuildId, applied: entries, loaded: entries.map((e) => ({ ...e, state: 'APPLIED' as const })) };
}

describe('choosing the payload build for a host', () => {
  it('gives each hypervisor the build made for it, and records the dependency check', () => {
    const a = assignPayload('apply', [hello, helloB], host(XEN_A));
    expect(a.kind).toBe('apply');
    if (a.kind !== 'apply') return;
    expect(a.payloads).toEqual([hello]);
    expect(a.checks).toEqual([{ payload: { name: 'hello', buildId: hello.buildId }, expected: XEN_A, found: XEN_A, against: { kind: 'hypervisor' }, on: 'depends', outcome: 'match' }]);
    const b = assignPayload('apply', [hello, helloB], host(XEN_B));
    expect(b.kind === 'apply' && b.payloads).toEqual([helloB]);
  });

  it('applies on top of the live stack, comparing with the top payload', () => {
    const a = assignPayload('apply', [bye], host(XEN_A, [hello]));
    expect(a.kind).toBe('apply');
    expect(a.checks[0]).toMatchObject({ against: { kind: 'payload', name: 'hello' }, found: hello.buildId, outcome: 'match' });
  });

  it('reports a host whose top of stack no build depends on, with what was expected and found', () => {
    const a = assignPayload('apply', [bye], host(XEN_A));
    expect(a.kind).toBe('incompatible');
    expect(a.checks[0]).toMatchObject({ expected: hello.buildId, found: XEN_A, outcome: 'mismatch', against: { kind: 'hypervisor' } });
    if (a.kind === 'incompatible') expect(a.reason).toContain('bye depends on 111111111111');
  });

  it('reports a hypervisor no build was made for', () => {
    const a = assignPayload('apply', [hello], host('cc'.repeat(20)));
    expect(a.kind).toBe('incompatible');
    expect(a.checks[0]).toMatchObject({ on: 'xen_depends', outcome: 'mismatch' });
  });

  it('does nothing on a host that already runs the payload', () => {
    expect(assignPayload('apply', [hello], host(XEN_A, [hello])).kind).toBe('already');
  });

  it('stack mode applies the missing rest of the chain in order', () => {
    const fresh = assignPayload('stack', [hello, bye], host(XEN_A));
    expect(fresh.kind === 'apply' && fresh.payloads.map((p) => p.name)).toEqual(['hello', 'bye']);
    const half = assignPayload('stack', [hello, bye], host(XEN_A, [hello]));
    expect(half.kind === 'apply' && half.payloads.map((p) => p.name)).toEqual(['bye']);
    expect(assignPayload('stack', [hello, bye], host(XEN_A, [hello, bye])).kind).toBe('already');
  });

  it('replace mode swaps any stack for the cumulative payload, which must depend on the hypervisor', () => {
    const r = assignPayload('replace', [replace], host(XEN_A, [hello, bye]));
    expect(r.kind === 'replace' && r.payload.name).toBe('replace');
    expect(assignPayload('replace', [replace], host(XEN_A, [replace])).kind).toBe('already');
    expect(assignPayload('replace', [bye], host(XEN_A)).kind).toBe('incompatible');
  });
});
