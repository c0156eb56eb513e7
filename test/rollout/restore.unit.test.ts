/**
 * The restore planner driven against the real Xen state machine: every scenario runs the loop the
 * restore activity runs (read the host, take the next step, repeat) and then checks what the
 * HYPERVISOR says, not what the planner believed.
 */
import { describe, expect, it } from 'vitest';
import * as sm from '../../src/emulator/state-machine.ts';
import { callFunction } from '../../src/emulator/functions.ts';
import { nextRestoreStep, looseOurs, unrestorablePayloads, type LiveHost, type RestoreGoal, type RestoreStep } from '../../src/rollout/restore.ts';
import type { StackEntry } from '../../src/rollout/matching.ts';
import { bytesOf, fakeChecker, id, IMAGE, type FakeSpec } from '../hypervisor/model-payloads.ts';

const LIB: Record<string, FakeSpec> = {
  // hello has .bss: once reverted, Xen refuses to apply it again until it is unloaded and uploaded.
  hello: { buildId: id(1), returns: { xen_extra_version: 'Hello World' }, safeToReapply: false },
  bye: { buildId: id(2), depends: id(1), returns: { xen_extra_version: 'Bye World!' } },
  cumulative: { buildId: id(3), returns: { xen_extra_version: 'Hello Again World!' } },
  third: { buildId: id(4), depends: id(2), returns: { xen_extra_version: 'third' }, safeToReapply: false },
  foreign: { buildId: id(5), depends: id(3), returns: { xen_extra_version: 'foreign' } },
  fix: { buildId: id(6), depends: id(2), returns: { xen_extra_version: 'fixed' } },
};
const check = fakeChecker(LIB);
const byBuildId = new Map(Object.entries(LIB).map(([k, v]) => [v.buildId, k]));
const ref = (name: string): StackEntry => ({ name, buildId: LIB[name]!.buildId });

let now = 0;
function must<T>(o: sm.Outcome<T>): sm.Host {
  if (!o.ok) throw new Error(`${o.error.errnoName}: ${o.error.message}`);
  return o.host;
}
const settle = (h: sm.Host) => sm.settle(h, (now += 10));
const upload = (h: sm.Host, name: string) => must(sm.upload(h, { name, bytes: bytesOf(name) }, { now: (now += 1), check }));
const act = (h: sm.Host, name: string, cmd: sm.ActionCmd) => settle(must(sm.action(h, { name, cmd }, { now: (now += 1) })));
const load = (h: sm.Host, name: string) => act(upload(h, name), name, 'apply');

function liveOf(h0: sm.Host): LiveHost {
  const h = settle(h0);
  return {
    hypervisorBuildId: h.image.buildId,
    applied: sm.appliedStack(h).map((p) => ({ name: p.name, buildId: p.facts.buildId })),
    loaded: h.payloads.map((p) => ({ name: p.name, buildId: p.facts.buildId, state: p.state, rc: p.rc, reverted: p.reverted, safeToReapply: p.facts.safeToReapply, depends: p.facts.depends })),
  };
}

/** The restore activity's loop, with the state machine as the host. */
function restore(h0: sm.Host, goal: RestoreGoal): { host: sm.Host; steps: string[]; end: RestoreStep } {
  let h = h0;
  const steps: string[] = [];
  for (let i = 0; i < 50; i++) {
    const step = nextRestoreStep(liveOf(h), goal);
    if (step.kind === 'done' || step.kind === 'blocked') return { host: h, steps, end: step };
    steps.push(`${step.kind} ${step.payload.name}`);
    if (step.kind === 'wait') h = settle(h);
    else if (step.kind === 'upload') h = upload(h, byBuildId.get(step.payload.buildId)!);
    else h = act(h, step.payload.name, step.kind);
  }
  throw new Error(`no progress after 50 steps: ${steps.join(', ')}`);
}

const stackOf = (h: sm.Host) => liveOf(h).applied.map((p) => p.name);
const loadedOf = (h: sm.Host) => liveOf(h).loaded.map((p) => `${p.name}:${p.state}`);
const extraVersion = (h: sm.Host) => {
  const r = callFunction(h, 'xen_extra_version', now);
  return r.ok && r.value.result.kind === 'string' ? r.value.result.value : null;
};

function goal(formerStack: string[], ours: string[], opts: { stored?: string[]; formerLoaded?: string[] } = {}): RestoreGoal {
  return {
    formerStack: formerStack.map(ref),
    formerLoaded: (opts.formerLoaded ?? formerStack).map(ref),
    ours: new Set(ours.map((n) => LIB[n]!.buildId)),
    storedBytes: new Set((opts.stored ?? Object.keys(LIB)).map((n) => LIB[n]!.buildId)),
  };
}

describe('restoring a host to its former stack', () => {
  it('undoes a REPLACE: reverts the replacement, reloads the payload with .bss from the store, re-applies the stack, unloads ours', () => {
    let h = load(load(sm.createHost('h', IMAGE), 'hello'), 'bye');
    h = act(upload(h, 'cumulative'), 'cumulative', 'replace');
    expect(stackOf(h)).toEqual(['cumulative']);
    const r = restore(h, goal(['hello', 'bye'], ['cumulative']));
    expect(r.end).toEqual({ kind: 'done' });
    expect(r.steps).toEqual(['revert cumulative', 'unload hello', 'upload hello', 'apply hello', 'apply bye', 'unload cumulative']);
    expect(stackOf(r.host)).toEqual(['hello', 'bye']);
    expect(loadedOf(r.host)).toEqual(['bye:APPLIED', 'hello:APPLIED']);
    expect(extraVersion(r.host)).toBe('Bye World!');
  });

  it('restores a host whose REPLACE failed at apply after Xen had already reverted its stack', () => {
    let h = load(load(sm.createHost('h', IMAGE), 'hello'), 'bye');
    h = upload(h, 'cumulative');
    h = settle(must(sm.action(h, { name: 'cumulative', cmd: 'replace' }, { now: (now += 1), effects: () => ({ applyFailure: { errno: 'EINVAL', reason: 'injected' } }) })));
    expect(stackOf(h)).toEqual([]);
    const r = restore(h, goal(['hello', 'bye'], ['cumulative']));
    expect(r.end.kind).toBe('done');
    expect(stackOf(r.host)).toEqual(['hello', 'bye']);
    expect(loadedOf(r.host)).not.toContain('cumulative:CHECKED');
  });

  it('reverts a stack-mode rollout top first and leaves a payload the host had before alone', () => {
    let h = load(sm.createHost('h', IMAGE), 'hello');
    h = load(load(h, 'bye'), 'third');
    const r = restore(h, goal(['hello'], ['hello', 'bye', 'third']));
    expect(r.end.kind).toBe('done');
    expect(r.steps).toEqual(['revert third', 'revert bye', 'unload bye', 'unload third']);
    expect(stackOf(r.host)).toEqual(['hello']);
    expect(extraVersion(r.host)).toBe('Hello World');
  });

  it('does not revert someone else\'s payload applied above ours: stack-grew, named', () => {
    let h = load(sm.createHost('h', IMAGE), 'cumulative');
    h = load(h, 'foreign');
    const r = restore(h, goal([], ['cumulative']));
    expect(r.end).toMatchObject({ kind: 'blocked', cause: 'stack-grew' });
    expect((r.end as { reason: string }).reason).toMatch(/^foreign \(0505.*\) is on top of the stack, above this rollout's cumulative/);
    expect(stackOf(r.host)).toEqual(['cumulative', 'foreign']);
  });

  it('names a payload it cannot bring back because fleetpatch never had its bytes', () => {
    let h = load(load(sm.createHost('h', IMAGE), 'hello'), 'bye');
    h = act(upload(h, 'cumulative'), 'cumulative', 'replace');
    const g = goal(['hello', 'bye'], ['cumulative'], { stored: ['bye', 'cumulative'] });
    const r = restore(h, g);
    expect(r.end).toMatchObject({ kind: 'blocked', cause: 'unrecoverable' });
    expect((r.end as { reason: string }).reason).toContain('hello (010101010101…) of the former stack cannot be restored: it has writable data and was reverted');
    // Nothing of ours is applied any more; the replacement can be unloaded although the host is not restored.
    expect(r.steps).toEqual(['revert cumulative']);
    expect(looseOurs(liveOf(r.host), g)).toEqual([ref('cumulative')]);
    expect(unrestorablePayloads(liveOf(h).loaded, g.storedBytes)).toEqual([ref('hello')]);
  });

  it('finds nothing to do on a host that is already as it was', () => {
    const h = load(sm.createHost('h', IMAGE), 'hello');
    expect(restore(h, goal(['hello'], ['bye'])).steps).toEqual([]);
  });

  it('waits for a pending action before it decides', () => {
    let h = upload(load(sm.createHost('h', IMAGE), 'hello'), 'bye');
    h = must(sm.action(h, { name: 'bye', cmd: 'apply' }, { now: (now += 1), effects: () => ({ durationMs: 1_000 }) }));
    expect(nextRestoreStep(liveOf(h), goal(['hello'], ['bye']))).toEqual({ kind: 'wait', payload: ref('bye') });
  });

  it('frees the name a former payload must be uploaded under when our payload holds it', () => {
    // A rollout built its payload under the name of one the host had (a user's naming clash).
    const g: RestoreGoal = { formerStack: [ref('hello')], formerLoaded: [ref('hello')], ours: new Set([id(9)]), storedBytes: new Set([id(1)]) };
    const live: LiveHost = {
      hypervisorBuildId: IMAGE.buildId,
      applied: [],
      loaded: [{ name: 'hello', buildId: id(9), state: 'CHECKED', rc: 0, reverted: true, safeToReapply: true, depends: IMAGE.buildId }],
    };
    expect(nextRestoreStep(live, g)).toMatchObject({ kind: 'unload', payload: { name: 'hello', buildId: id(9) } });
  });
});
