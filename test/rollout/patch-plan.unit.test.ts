/**
 * The patch planner driven against the real Xen state machine, from a fresh host and from every
 * half-done state a killed worker can leave: the loop must reach the target stack, and never apply
 * a payload twice (the state machine's own "already applied" answer is what it goes by).
 */
import { describe, expect, it } from 'vitest';
import * as sm from '../../src/emulator/state-machine.ts';
import { nextPatchStep, patchGoal, type PatchGoal, type PatchStep } from '../../src/rollout/patch-plan.ts';
import { lostFacts } from '../../src/rollout/restate.ts';
import type { PayloadMeta } from '../../src/rollout/matching.ts';
import type { LiveHost } from '../../src/rollout/restore.ts';
import { bytesOf, fakeChecker, HV_BUILD_ID, id, IMAGE, type FakeSpec } from '../hypervisor/model-payloads.ts';

const LIB: Record<string, FakeSpec> = {
  base: { buildId: id(1), returns: { xen_extra_version: 'base' } },
  fix: { buildId: id(2), depends: id(1), returns: { xen_extra_version: 'fix' }, safeToReapply: false },
  more: { buildId: id(3), depends: id(2), returns: { xen_extra_version: 'more' } },
  cumulative: { buildId: id(4), returns: { xen_extra_version: 'cumulative' } },
  other: { buildId: id(5), depends: id(1), returns: { xen_extra_version: 'other' } },
};
const check = fakeChecker(LIB);
const meta = (name: string): PayloadMeta => ({ name, buildId: LIB[name]!.buildId, depends: LIB[name]!.depends ?? HV_BUILD_ID, xenDepends: HV_BUILD_ID });

let now = 0;
function must<T>(o: sm.Outcome<T>): sm.Host {
  if (!o.ok) throw new Error(`${o.error.errnoName}: ${o.error.message}`);
  return o.host;
}
const settle = (h: sm.Host) => sm.settle(h, (now += 10));
const upload = (h: sm.Host, name: string) => must(sm.upload(h, { name, bytes: bytesOf(name) }, { now: (now += 1), check }));
const act = (h: sm.Host, name: string, cmd: sm.ActionCmd) => settle(must(sm.action(h, { name, cmd }, { now: (now += 1) })));

function liveOf(h0: sm.Host): LiveHost {
  const h = settle(h0);
  return {
    hypervisorBuildId: h.image.buildId,
    applied: sm.appliedStack(h).map((p) => ({ name: p.name, buildId: p.facts.buildId })),
    loaded: h.payloads.map((p) => ({ name: p.name, buildId: p.facts.buildId, state: p.state, rc: p.rc, reverted: p.reverted, safeToReapply: p.facts.safeToReapply, depends: p.facts.depends })),
  };
}

/** The engine's loop with the state machine as the host; counts APPLY/REPLACE actions per payload. */
function patch(h0: sm.Host, goal: PatchGoal): { host: sm.Host; steps: string[]; end: PatchStep; applies: Map<string, number> } {
  let h = h0;
  const steps: string[] = [];
  const applies = new Map<string, number>();
  for (let i = 0; i < 50; i++) {
    const step = nextPatchStep(liveOf(h), goal);
    if (step.kind === 'applied' || step.kind === 'changed') return { host: h, steps, end: step, applies };
    steps.push(`${step.kind} ${step.payload.name}`);
    if (step.kind === 'wait') h = settle(h);
    else if (step.kind === 'upload') h = upload(h, step.payload.name);
    else {
      if (step.kind === 'apply' || step.kind === 'replace') applies.set(step.payload.name, (applies.get(step.payload.name) ?? 0) + 1);
      h = act(h, step.payload.name, step.kind);
    }
  }
  throw new Error(`no progress: ${steps.join(', ')}`);
}

const stack = (h: sm.Host) => liveOf(h).applied.map((p) => p.name);

describe('patching a host, from any state it was left in', () => {
  const stackGoal = (former: string[]) => patchGoal('stack', { kind: 'apply', payloads: [meta('fix'), meta('more')], checks: [] }, former.map((n) => ({ name: n, buildId: LIB[n]!.buildId })));

  it('uploads and applies each payload in order on a fresh host, and says against what it checks', () => {
    const h = act(upload(sm.createHost('h', IMAGE), 'base'), 'base', 'apply');
    const first = nextPatchStep(liveOf(h), stackGoal(['base']));
    // The upload says what follows it, so the APPLY's check is made (and recorded) before the upload.
    expect(first).toMatchObject({ kind: 'upload', payload: { name: 'fix' }, then: { kind: 'apply', payload: { name: 'fix' }, against: { name: 'base' } } });
    const r = patch(h, stackGoal(['base']));
    expect(r.end).toEqual({ kind: 'applied' });
    expect(r.steps).toEqual(['upload fix', 'apply fix', 'upload more', 'apply more']);
    expect(stack(r.host)).toEqual(['base', 'fix', 'more']);
    expect(nextPatchStep(liveOf(upload(h, 'fix')), stackGoal(['base']))).toEqual((first as Extract<PatchStep, { kind: 'upload' }>).then);
  });

  it.each([
    ['uploaded, not applied', (h: sm.Host) => upload(h, 'fix'), ['apply fix', 'upload more', 'apply more']],
    ['first applied', (h: sm.Host) => act(upload(h, 'fix'), 'fix', 'apply'), ['upload more', 'apply more']],
    ['both uploaded, first applied', (h: sm.Host) => upload(act(upload(h, 'fix'), 'fix', 'apply'), 'more'), ['apply more']],
    ['everything applied', (h: sm.Host) => act(upload(act(upload(h, 'fix'), 'fix', 'apply'), 'more'), 'more', 'apply'), []],
  ])('carries on from a host a killed worker left %s, applying nothing twice', (_what, leave, expected) => {
    const h = leave(act(upload(sm.createHost('h', IMAGE), 'base'), 'base', 'apply'));
    const r = patch(h, stackGoal(['base']));
    expect(r.end.kind).toBe('applied');
    expect(r.steps).toEqual(expected);
    expect([...r.applies.values()].every((n) => n === 1)).toBe(true);
    expect(stack(r.host)).toEqual(['base', 'fix', 'more']);
  });

  it('waits for an action a dead worker left pending instead of sending another', () => {
    let h = upload(act(upload(sm.createHost('h', IMAGE), 'base'), 'base', 'apply'), 'fix');
    h = must(sm.action(h, { name: 'fix', cmd: 'apply' }, { now: (now += 1), effects: () => ({ durationMs: 1_000 }) }));
    expect(nextPatchStep(liveOf(h), stackGoal(['base']))).toEqual({ kind: 'wait', payload: { name: 'fix', buildId: id(2) } });
  });

  it('reloads its own payload that was reverted with writable data before applying it again', () => {
    let h = act(upload(sm.createHost('h', IMAGE), 'base'), 'base', 'apply');
    h = act(act(upload(h, 'fix'), 'fix', 'apply'), 'fix', 'revert');
    const r = patch(h, stackGoal(['base']));
    expect(r.steps.slice(0, 3)).toEqual(['unload fix', 'upload fix', 'apply fix']);
    expect(stack(r.host)).toEqual(['base', 'fix', 'more']);
  });

  it('stops when the host changed under the rollout, naming what it found', () => {
    const h = act(upload(act(upload(sm.createHost('h', IMAGE), 'base'), 'base', 'apply'), 'other'), 'other', 'apply');
    expect(nextPatchStep(liveOf(h), stackGoal(['base']))).toEqual({
      kind: 'changed',
      reason: "the host's stack changed under the rollout: other (050505050505…) is applied at position 1, where fix (020202020202…) belongs",
    });
    const bare = sm.createHost('h', IMAGE);
    expect(nextPatchStep(liveOf(bare), stackGoal(['base']))).toMatchObject({ kind: 'changed', reason: expect.stringContaining('base (010101010101…), which the rollout builds on, is no longer applied') });
  });

  it('REPLACE: uploads, replaces the whole stack once, and is done when the payload stands alone', () => {
    const h = act(upload(act(upload(sm.createHost('h', IMAGE), 'base'), 'base', 'apply'), 'fix'), 'fix', 'apply');
    const goal = patchGoal('replace', { kind: 'replace', payload: meta('cumulative'), checks: [] }, []);
    const r = patch(h, goal);
    expect(r.steps).toEqual(['upload cumulative', 'replace cumulative']);
    expect(stack(r.host)).toEqual(['cumulative']);
    expect(patch(r.host, goal).steps).toEqual([]);
  });
});

describe('restating what a holder did but never recorded', () => {
  const ours = new Set([id(2), id(3)]);
  const rec = (loaded: [string, 'CHECKED' | 'APPLIED'][]) => ({
    loaded: loaded.map(([n, state]) => ({ name: n, buildId: LIB[n]!.buildId, state })),
    applied: loaded.filter(([, s]) => s === 'APPLIED').map(([n]) => ({ name: n, buildId: LIB[n]!.buildId })),
  });

  it('an upload and an apply the record lacks, in an order Xen could have produced', () => {
    const h = act(upload(act(upload(sm.createHost('h', IMAGE), 'base'), 'base', 'apply'), 'fix'), 'fix', 'apply');
    expect(lostFacts(rec([['base', 'APPLIED']]), liveOf(h), ours).map((f) => `${f.kind} ${f.payload.name}`)).toEqual(['uploaded fix', 'applied fix']);
  });

  it('a revert and an unload the record lacks', () => {
    const h = act(upload(sm.createHost('h', IMAGE), 'base'), 'base', 'apply');
    const withFix = act(upload(h, 'fix'), 'fix', 'apply');
    const reverted = act(withFix, 'fix', 'revert');
    expect(lostFacts(rec([['base', 'APPLIED'], ['fix', 'APPLIED']]), liveOf(reverted), ours).map((f) => `${f.kind} ${f.payload.name}`)).toEqual(['reverted fix']);
    const unloaded = act(reverted, 'fix', 'unload');
    expect(lostFacts(rec([['base', 'APPLIED'], ['fix', 'APPLIED']]), liveOf(unloaded), ours).map((f) => `${f.kind} ${f.payload.name}`)).toEqual(['reverted fix', 'unloaded fix']);
  });

  it('a REPLACE the record lacks, with the stack it replaced', () => {
    const mine = new Set([id(4)]);
    const h = act(upload(act(upload(sm.createHost('h', IMAGE), 'base'), 'base', 'apply'), 'cumulative'), 'cumulative', 'replace');
    expect(lostFacts(rec([['base', 'APPLIED']]), liveOf(h), mine)).toEqual([
      { kind: 'uploaded', payload: { name: 'cumulative', buildId: id(4) } },
      { kind: 'replaced', payload: { name: 'cumulative', buildId: id(4) }, replaced: [{ name: 'base', buildId: id(1) }] },
    ]);
  });

  it('nothing about payloads that are not the rollout\'s to explain', () => {
    const h = act(upload(sm.createHost('h', IMAGE), 'base'), 'base', 'apply');
    expect(lostFacts(rec([]), liveOf(h), ours)).toEqual([]);
  });
});
