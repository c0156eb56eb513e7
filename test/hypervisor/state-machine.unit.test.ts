/**
 * The state machine against every row of xen-livepatch.md sections 2-4, with payloads given as
 * facts (model-payloads.ts). The same rules with real gcc-built payloads: xen-fixtures.int.test.ts.
 */
import { describe, expect, it } from 'vitest';
import { XEN_ERRNO, XenError } from '../../src/errors.ts';
import { callFunction, functionTable } from '../../src/emulator/functions.ts';
import * as sm from '../../src/emulator/state-machine.ts';
import { HV_BUILD_ID, IMAGE, OTHER_HV_BUILD_ID, bytesOf, facts, fakeChecker, id, type FakeSpec } from './model-payloads.ts';

const LIB: Record<string, FakeSpec> = {
  hello: { buildId: id(1), returns: { xen_extra_version: 'Hello World' }, safeToReapply: false, metadata: ['LIVEPATCH_RULEZ'] },
  bye: { buildId: id(2), depends: id(1), returns: { xen_extra_version: 'Bye World!' } },
  replace: { buildId: id(3), returns: { xen_extra_version: 'Hello Again World!' } },
  nop: { buildId: id(4), returns: { xen_minor_version: 'nop' } },
  hooks: { buildId: id(5), vetoingHooks: true },
  other: { buildId: id(6), xenDepends: OTHER_HV_BUILD_ID },
  noxen: { buildId: id(7), xenDepends: null },
  hello2: { buildId: id(1) },
  stacked: { buildId: id(8), depends: id(2), returns: { xen_extra_version: 'third' } },
};
const check = fakeChecker(LIB);
const { EAGAIN, EBUSY, EINVAL } = XEN_ERRNO;

function ok<T>(o: sm.Outcome<T>): sm.Host & { value: T } {
  if (!o.ok) throw new Error(`expected success, got ${o.error.errnoName}: ${o.error.message}`);
  return { ...o.host, value: o.value };
}

function refused<T>(o: sm.Outcome<T>, errno: keyof typeof XEN_ERRNO, message?: RegExp): XenError {
  if (o.ok) throw new Error(`expected ${errno}, got success`);
  expect(o.error).toBeInstanceOf(XenError);
  expect(o.error.errnoName).toBe(errno);
  if (message) expect(o.error.message).toMatch(message);
  return o.error;
}

function fresh(): sm.Host {
  return sm.createHost('host-0000', IMAGE);
}

function upload(h: sm.Host, name: string, key = name, now = 0): sm.Host {
  return ok(sm.upload(h, { name, bytes: bytesOf(key) }, { now, check }));
}

/** Schedules and completes an action; returns the settled host. */
function run(h: sm.Host, name: string, cmd: sm.ActionCmd, opts: { nodeps?: boolean; effects?: sm.ActionEffects; now?: number } = {}): sm.Host {
  const now = opts.now ?? 0;
  const r = ok(sm.action(h, { name, cmd, nodeps: opts.nodeps }, { now, effects: () => opts.effects ?? {} }));
  return sm.settle(r, now + 1000);
}

function status(h: sm.Host, name: string): sm.PayloadStatus {
  return ok(sm.getStatus(h, name, 0)).value;
}

function stack(h: sm.Host): string[] {
  return [...h.stack];
}

function extra(h: sm.Host): unknown {
  const r = callFunction(h, 'xen_extra_version', 0);
  if (!r.ok) throw r.error;
  return r.value.result.kind === 'string' ? r.value.result.value : r.value.result;
}

describe('UPLOAD (section 2)', () => {
  it('adds the payload CHECKED with rc 0 at the end of the list and bumps the version', () => {
    let h = fresh();
    expect(h.version).toBe(1);
    h = upload(h, 'xen_hello_world', 'hello');
    h = upload(h, 'xen_nop', 'nop');
    expect(h.payloads.map((p) => [p.name, p.state, p.rc])).toEqual([
      ['xen_hello_world', 'CHECKED', 0],
      ['xen_nop', 'CHECKED', 0],
    ]);
    expect(h.version).toBe(3);
  });

  it('reports the .livepatch.xen_depends check it made', () => {
    const r = ok(sm.upload(fresh(), { name: 'a', bytes: bytesOf('hello') }, { now: 0, check }));
    expect(r.value.dependencyCheck).toEqual({
      payload: 'a',
      payloadBuildId: id(1),
      kind: 'xen_depends',
      operation: 'upload',
      against: 'hypervisor',
      againstName: null,
      expected: HV_BUILD_ID,
      found: HV_BUILD_ID,
      outcome: 'satisfied',
    });
  });

  it('passes the checker\'s refusal through unchanged and changes nothing', () => {
    const h = upload(fresh(), 'xen_hello_world', 'hello');
    refused(sm.upload(h, { name: 'xen_hello_world', bytes: bytesOf('nop') }, { now: 0, check }), 'EEXIST');
    refused(sm.upload(h, { name: 'again', bytes: bytesOf('hello2') }, { now: 0, check }), 'EEXIST', /already loaded as xen_hello_world/);
    refused(sm.upload(h, { name: 'x', bytes: bytesOf('other') }, { now: 0, check }), 'EINVAL', /build-id mismatch/);
    refused(sm.upload(h, { name: 'x', bytes: bytesOf('noxen') }, { now: 0, check }), 'EINVAL', /xen_depends is missing/);
    refused(sm.upload(h, { name: 'x', bytes: new Uint8Array() }, { now: 0, check }), 'EINVAL');
    const r = sm.upload(h, { name: 'x', bytes: bytesOf('garbage') }, { now: 0, check });
    expect(r.host).toEqual(h);
  });

  it('lets any non-XenError from the checker escape (a bug, not a refusal)', () => {
    const broken: sm.UploadChecker = () => {
      throw new TypeError('boom');
    };
    expect(() => sm.upload(fresh(), { name: 'x', bytes: bytesOf('hello') }, { now: 0, check: broken })).toThrow(TypeError);
  });
});

describe('GET and LIST (section 4)', () => {
  it('GET: state and rc; ENOENT for an unknown name; EINVAL for a name Xen cannot take', () => {
    const h = upload(fresh(), 'xen_hello_world', 'hello');
    expect(status(h, 'xen_hello_world')).toEqual({ name: 'xen_hello_world', state: 'CHECKED', rc: 0, reason: null });
    refused(sm.getStatus(h, 'nope', 0), 'ENOENT');
    refused(sm.getStatus(h, '', 0), 'EINVAL');
    refused(sm.getStatus(h, 'x'.repeat(128), 0), 'EINVAL');
    expect(sm.getStatus(h, 'x'.repeat(127), 0).ok).toBe(false);
  });

  it('LIST pages in upload order, counts what is left, and refuses E2BIG / idx past the end', () => {
    let h = fresh();
    for (const k of ['hello', 'nop', 'replace']) h = upload(h, k, k);
    const all = ok(sm.list(h, { idx: 0, nr: 1024 }, 0)).value;
    expect(all.entries.map((p) => p.name)).toEqual(['hello', 'nop', 'replace']);
    expect(all.remaining).toBe(0);
    expect(all.version).toBe(4);
    const first = ok(sm.list(h, { idx: 0, nr: 2 }, 0)).value;
    expect(first.entries.map((p) => p.name)).toEqual(['hello', 'nop']);
    expect(first.remaining).toBe(1);
    const second = ok(sm.list(h, { idx: 2, nr: 2 }, 0)).value;
    expect(second.entries.map((p) => p.name)).toEqual(['replace']);
    expect(second.remaining).toBe(0);
    expect(ok(sm.list(h, { idx: 0, nr: 0 }, 0)).value).toMatchObject({ entries: [], remaining: 3, total: 3 });
    refused(sm.list(h, { idx: 0, nr: 1025 }, 0), 'E2BIG');
    refused(sm.list(h, { idx: 3, nr: 1 }, 0), 'EINVAL');
    // An empty list accepts any idx (Xen checks idx only when there are payloads).
    expect(ok(sm.list(fresh(), { idx: 5, nr: 1 }, 0)).value.entries).toEqual([]);
  });

  it('the version counts uploads and unloads only', () => {
    let h = upload(fresh(), 'a', 'replace');
    expect(h.version).toBe(2);
    h = run(h, 'a', 'apply');
    h = run(h, 'a', 'revert');
    expect(h.version).toBe(2);
    h = ok(sm.action(h, { name: 'a', cmd: 'unload' }, { now: 0 }));
    expect(h.version).toBe(3);
  });
});

describe('APPLY (section 3)', () => {
  it('schedules (rc -EAGAIN), then APPLIED and pushed on the stack', () => {
    let h = upload(fresh(), 'xen_hello_world', 'hello');
    const r = ok(sm.action(h, { name: 'xen_hello_world', cmd: 'apply' }, { now: 0, effects: () => ({ durationMs: 50 }) }));
    expect(r.value).toEqual({ rc: 0, scheduled: true, dependencyCheck: expect.objectContaining({ against: 'hypervisor', outcome: 'satisfied' }) });
    h = r;
    expect(status(h, 'xen_hello_world').rc).toBe(-EAGAIN);
    expect(ok(sm.getStatus(h, 'xen_hello_world', 49)).value.rc).toBe(-EAGAIN);
    const done = ok(sm.getStatus(h, 'xen_hello_world', 50));
    expect(done.value).toEqual({ name: 'xen_hello_world', state: 'APPLIED', rc: 0, reason: null });
    expect(stack(done)).toEqual(['xen_hello_world']);
    expect(extra(done)).toBe('Hello World');
  });

  it('on an APPLIED payload returns 0 and does nothing', () => {
    const h = run(upload(fresh(), 'a', 'replace'), 'a', 'apply');
    const r = ok(sm.action(h, { name: 'a', cmd: 'apply' }, { now: 0 }));
    expect(r.value).toEqual({ rc: 0, scheduled: false, dependencyCheck: null });
    expect(r.pending).toBeNull();
  });

  it('checks depends against the hypervisor when the stack is empty', () => {
    const h = upload(fresh(), 'xen_bye_world', 'bye');
    const e = refused(sm.action(h, { name: 'xen_bye_world', cmd: 'apply' }, { now: 0 }), 'EINVAL', /check against hypervisor build-id failed/);
    expect(e.details.dependencyCheck).toEqual({
      payload: 'xen_bye_world',
      payloadBuildId: id(2),
      kind: 'depends',
      operation: 'apply',
      against: 'hypervisor',
      againstName: null,
      expected: id(1),
      found: HV_BUILD_ID,
      outcome: 'mismatch',
    });
    expect(status(h, 'xen_bye_world')).toMatchObject({ state: 'CHECKED', rc: 0 });
  });

  it('checks depends against the top of the stack otherwise', () => {
    let h = upload(upload(upload(fresh(), 'xen_hello_world', 'hello'), 'xen_bye_world', 'bye'), 'xen_replace_world', 'replace');
    h = run(h, 'xen_hello_world', 'apply');
    const wrong = refused(sm.action(h, { name: 'xen_replace_world', cmd: 'apply' }, { now: 0 }), 'EINVAL', /check against xen_hello_world build-id failed/);
    expect(wrong.details.dependencyCheck).toMatchObject({ against: 'payload', againstName: 'xen_hello_world', expected: HV_BUILD_ID, found: id(1), outcome: 'mismatch' });
    const r = ok(sm.action(h, { name: 'xen_bye_world', cmd: 'apply' }, { now: 0 }));
    expect(r.value.dependencyCheck).toMatchObject({ against: 'payload', againstName: 'xen_hello_world', expected: id(1), found: id(1), outcome: 'satisfied' });
    h = sm.settle(r, 1);
    expect(stack(h)).toEqual(['xen_hello_world', 'xen_bye_world']);
    expect(extra(h)).toBe('Bye World!');
  });

  it('APPLY_NODEPS skips the check but still reports the comparison', () => {
    const h = upload(fresh(), 'xen_bye_world', 'bye');
    const r = ok(sm.action(h, { name: 'xen_bye_world', cmd: 'apply', nodeps: true }, { now: 0 }));
    expect(r.value.dependencyCheck).toMatchObject({ expected: id(1), found: HV_BUILD_ID, outcome: 'skipped' });
    expect(stack(sm.settle(r, 0))).toEqual(['xen_bye_world']);
  });

  it('refuses to re-apply a reverted payload with writable data: rc EINVAL, call returns 0', () => {
    let h = run(upload(fresh(), 'xen_hello_world', 'hello'), 'xen_hello_world', 'apply');
    h = run(h, 'xen_hello_world', 'revert');
    const r = ok(sm.action(h, { name: 'xen_hello_world', cmd: 'apply' }, { now: 0 }));
    expect(r.value).toEqual({ rc: 0, scheduled: false, dependencyCheck: null });
    expect(status(r, 'xen_hello_world')).toEqual({ name: 'xen_hello_world', state: 'CHECKED', rc: -EINVAL, reason: "xen_hello_world: can't revert as payload has .data. Please unload" });
    expect(r.stack).toEqual([]);
  });

  it('re-applies a reverted payload whose only writable section is .livepatch.funcs', () => {
    let h = run(upload(fresh(), 'xen_nop', 'nop'), 'xen_nop', 'apply');
    h = run(h, 'xen_nop', 'revert');
    h = run(h, 'xen_nop', 'apply');
    expect(status(h, 'xen_nop')).toMatchObject({ state: 'APPLIED', rc: 0 });
  });

  it('a failed apply leaves CHECKED with rc = the error and the reason', () => {
    const h = run(upload(fresh(), 'a', 'replace'), 'a', 'apply', { effects: { applyFailure: { errno: 'ENOMEM', reason: 'a: out of memory' } } });
    expect(status(h, 'a')).toEqual({ name: 'a', state: 'CHECKED', rc: -XEN_ERRNO.ENOMEM, reason: 'a: out of memory' });
    expect(h.stack).toEqual([]);
  });
});

describe('REVERT (section 3)', () => {
  it('on a CHECKED payload returns 0 and does nothing', () => {
    const h = upload(fresh(), 'a', 'replace');
    expect(ok(sm.action(h, { name: 'a', cmd: 'revert' }, { now: 0 })).value).toEqual({ rc: 0, scheduled: false, dependencyCheck: null });
  });

  it('refuses anything but the top of the stack with EBUSY', () => {
    let h = upload(upload(fresh(), 'xen_hello_world', 'hello'), 'xen_bye_world', 'bye');
    h = run(run(h, 'xen_hello_world', 'apply'), 'xen_bye_world', 'apply');
    refused(sm.action(h, { name: 'xen_hello_world', cmd: 'revert' }, { now: 0 }), 'EBUSY', /xen_hello_world: can't unload\. Top is xen_bye_world/);
    h = run(h, 'xen_bye_world', 'revert');
    expect(stack(h)).toEqual(['xen_hello_world']);
    expect(status(h, 'xen_bye_world')).toMatchObject({ state: 'CHECKED', rc: 0 });
    expect(h.payloads.find((p) => p.name === 'xen_bye_world')!.reverted).toBe(true);
    expect(extra(h)).toBe('Hello World');
    h = run(h, 'xen_hello_world', 'revert');
    expect(extra(h)).toBe('-unstable');
  });

  it('a failed revert leaves APPLIED with rc = the error', () => {
    let h = run(upload(fresh(), 'a', 'replace'), 'a', 'apply');
    h = run(h, 'a', 'revert', { effects: { revertFailures: { a: { errno: 'EINVAL', reason: 'a: revert hook failed' } } } });
    expect(status(h, 'a')).toMatchObject({ state: 'APPLIED', rc: -EINVAL, reason: 'a: revert hook failed' });
    expect(stack(h)).toEqual(['a']);
  });
});

describe('REPLACE (section 3)', () => {
  function helloBye(): sm.Host {
    let h = upload(upload(upload(fresh(), 'xen_hello_world', 'hello'), 'xen_bye_world', 'bye'), 'xen_replace_world', 'replace');
    h = run(run(h, 'xen_hello_world', 'apply'), 'xen_bye_world', 'apply');
    return h;
  }

  it('reverts the whole stack top-down (all stay loaded), then applies alone', () => {
    const r = ok(sm.action(helloBye(), { name: 'xen_replace_world', cmd: 'replace' }, { now: 0 }));
    expect(r.value.dependencyCheck).toMatchObject({ operation: 'replace', against: 'hypervisor', outcome: 'satisfied' });
    const h = sm.settle(r, 0);
    expect(stack(h)).toEqual(['xen_replace_world']);
    expect(h.payloads.map((p) => [p.name, p.state, p.rc, p.reverted])).toEqual([
      ['xen_hello_world', 'CHECKED', 0, true],
      ['xen_bye_world', 'CHECKED', 0, true],
      ['xen_replace_world', 'APPLIED', 0, false],
    ]);
    expect(extra(h)).toBe('Hello Again World!');
    // Xen section 5: hello cannot come back (.data), bye no longer fits the stack.
    expect(status(ok(sm.action(h, { name: 'xen_hello_world', cmd: 'apply' }, { now: 0 })), 'xen_hello_world').rc).toBe(-EINVAL);
    refused(sm.action(h, { name: 'xen_bye_world', cmd: 'apply' }, { now: 0 }), 'EINVAL', /check against xen_replace_world build-id failed/);
  });

  it('checks depends against the hypervisor, not the top of the stack', () => {
    let h = run(upload(fresh(), 'xen_hello_world', 'hello'), 'xen_hello_world', 'apply');
    h = upload(h, 'xen_bye_world', 'bye');
    const e = refused(sm.action(h, { name: 'xen_bye_world', cmd: 'replace' }, { now: 0 }), 'EINVAL', /check against hypervisor build-id failed/);
    expect(e.details.dependencyCheck).toMatchObject({ operation: 'replace', against: 'hypervisor', expected: id(1), found: HV_BUILD_ID });
  });

  it('refuses payloads with vetoing (pre/post) hooks, new or applied: EOPNOTSUPP', () => {
    let h = upload(upload(fresh(), 'hooks', 'hooks'), 'xen_replace_world', 'replace');
    refused(sm.action(h, { name: 'hooks', cmd: 'replace' }, { now: 0 }), 'EOPNOTSUPP', /vetoing hooks/);
    h = run(h, 'hooks', 'apply');
    refused(sm.action(h, { name: 'xen_replace_world', cmd: 'replace' }, { now: 0 }), 'EOPNOTSUPP', /vetoing hooks.*hooks/);
  });

  it('stops with EINVAL when a revert fails midway, leaving the stack partly reverted', () => {
    let h = helloBye();
    h = upload(h, 'third', 'stacked');
    h = run(h, 'third', 'apply');
    h = run(h, 'xen_replace_world', 'replace', { effects: { revertFailures: { xen_bye_world: { errno: 'EINVAL', reason: 'xen_bye_world: revert failed' } } } });
    expect(stack(h)).toEqual(['xen_hello_world', 'xen_bye_world']);
    expect(status(h, 'third')).toMatchObject({ state: 'CHECKED', rc: 0 });
    expect(status(h, 'xen_bye_world')).toMatchObject({ state: 'APPLIED', rc: -EINVAL });
    expect(status(h, 'xen_replace_world')).toMatchObject({ state: 'CHECKED', rc: -EINVAL, reason: expect.stringMatching(/stopped: reverting xen_bye_world failed/) });
  });

  it('leaves the host unpatched when the final apply fails', () => {
    const h = run(helloBye(), 'xen_replace_world', 'replace', { effects: { applyFailure: { errno: 'EINVAL', reason: 'xen_replace_world: expectations not met' } } });
    expect(stack(h)).toEqual([]);
    expect(status(h, 'xen_replace_world')).toMatchObject({ state: 'CHECKED', rc: -EINVAL, reason: expect.stringMatching(/unpatched/) });
    expect(extra(h)).toBe('-unstable');
  });

  it('on an APPLIED payload returns 0 and does nothing', () => {
    const h = run(upload(fresh(), 'xen_replace_world', 'replace'), 'xen_replace_world', 'apply');
    expect(ok(sm.action(h, { name: 'xen_replace_world', cmd: 'replace' }, { now: 0 })).value.scheduled).toBe(false);
  });
});

describe('UNLOAD (section 3)', () => {
  it('removes a CHECKED payload in any order; refuses an APPLIED one with EINVAL', () => {
    let h = upload(upload(upload(fresh(), 'a', 'hello'), 'b', 'nop'), 'c', 'replace');
    h = run(h, 'c', 'apply');
    refused(sm.action(h, { name: 'c', cmd: 'unload' }, { now: 0 }), 'EINVAL', /APPLIED/);
    h = ok(sm.action(h, { name: 'b', cmd: 'unload' }, { now: 0 }));
    h = ok(sm.action(h, { name: 'a', cmd: 'unload' }, { now: 0 }));
    expect(h.payloads.map((p) => p.name)).toEqual(['c']);
    refused(sm.action(h, { name: 'a', cmd: 'unload' }, { now: 0 }), 'ENOENT');
  });
});

describe('every action', () => {
  it.each(sm.ACTION_CMDS)('%s on an unknown name: ENOENT', (cmd) => {
    refused(sm.action(fresh(), { name: 'nope', cmd }, { now: 0 }), 'ENOENT');
  });

  it('refuses an unknown command with EOPNOTSUPP and a bad name or timeout with EINVAL', () => {
    const h = upload(fresh(), 'a', 'replace');
    refused(sm.action(h, { name: 'a', cmd: 'frobnicate' }, { now: 0 }), 'EOPNOTSUPP');
    refused(sm.action(h, { name: '', cmd: 'apply' }, { now: 0 }), 'EINVAL');
    refused(sm.action(h, { name: 'a', cmd: 'apply', timeoutNs: -1 }, { now: 0 }), 'EINVAL');
    refused(sm.action(h, { name: 'a', cmd: 'apply', timeoutNs: 2 ** 32 }, { now: 0 }), 'EINVAL');
    refused(sm.action(h, { name: 'a', cmd: 'apply', timeoutNs: 1.5 }, { now: 0 }), 'EINVAL');
  });

  it('one pending action per hypervisor: EBUSY for the same payload and for any other', () => {
    let h = upload(upload(fresh(), 'a', 'replace'), 'b', 'nop');
    h = ok(sm.action(h, { name: 'a', cmd: 'apply' }, { now: 0, effects: () => ({ durationMs: 100 }) }));
    for (const cmd of sm.ACTION_CMDS) refused(sm.action(h, { name: 'a', cmd }, { now: 10 }), 'EBUSY', /still in progress/);
    const other = refused(sm.action(h, { name: 'b', cmd: 'apply' }, { now: 10 }), 'EBUSY', /another action \(apply a\)/);
    expect(other.details.pending).toBe('a');
    // The refused payload keeps its rc, so the tool can act on it once the other action is done.
    expect(ok(sm.getStatus(h, 'b', 10)).value.rc).toBe(0);
    // UNLOAD is synchronous: it does not need the work slot.
    expect(ok(sm.action(h, { name: 'b', cmd: 'unload' }, { now: 10 })).payloads.map((p) => p.name)).toEqual(['a']);
    // Once done, the next action is accepted.
    h = upload(h, 'c', 'hello', 10);
    expect(sm.action(h, { name: 'c', cmd: 'revert' }, { now: 100 }).ok).toBe(true);
  });

  it('rendezvous beyond the default 30 ms timeout: rc -EBUSY, state unchanged', () => {
    const h = upload(fresh(), 'a', 'replace');
    const r = ok(sm.action(h, { name: 'a', cmd: 'apply', timeoutNs: 0 }, { now: 0, effects: () => ({ rendezvousMs: 31 }) }));
    expect(r.pending).toMatchObject({ timedOut: true, timeoutNs: sm.LIVEPATCH_DEFAULT_TIMEOUT_NS, completesAt: 30 });
    expect(ok(sm.getStatus(r, 'a', 29.9)).value.rc).toBe(-EAGAIN);
    const done = ok(sm.getStatus(r, 'a', 30));
    expect(done.value).toMatchObject({ state: 'CHECKED', rc: -EBUSY, reason: expect.stringMatching(/quiesce/) });
    expect(done.stack).toEqual([]);
    expect(done.pending).toBeNull();
  });

  it('rendezvous within a longer timeout succeeds; the timeout counts from when the work starts', () => {
    const h = upload(fresh(), 'a', 'replace');
    const r = ok(sm.action(h, { name: 'a', cmd: 'apply', timeoutNs: 100_000_000 }, { now: 0, effects: () => ({ durationMs: 40, rendezvousMs: 60 }) }));
    expect(r.pending).toMatchObject({ timedOut: false, completesAt: 100 });
    expect(ok(sm.getStatus(r, 'a', 100)).value).toMatchObject({ state: 'APPLIED', rc: 0 });
  });

  it('a reverted-with-EBUSY payload can be acted on again', () => {
    let h = upload(fresh(), 'a', 'replace');
    h = run(h, 'a', 'apply', { effects: { rendezvousMs: Number.POSITIVE_INFINITY } });
    expect(status(h, 'a').rc).toBe(-EBUSY);
    h = run(h, 'a', 'apply');
    expect(status(h, 'a')).toMatchObject({ state: 'APPLIED', rc: 0 });
  });
});

describe('reboot and crashes', () => {
  it('reboot: loaded and applied payloads vanish, the image stays, the version starts again', () => {
    let h = run(upload(upload(fresh(), 'a', 'hello'), 'b', 'nop'), 'a', 'apply');
    h = ok(sm.action(h, { name: 'b', cmd: 'apply', nodeps: true }, { now: 0, effects: () => ({ durationMs: 100 }) }));
    h = sm.reboot(h, { now: 5, downMs: 50 });
    expect(h.payloads).toEqual([]);
    expect(h.stack).toEqual([]);
    expect(h.pending).toBeNull();
    expect(h.image).toBe(IMAGE);
    expect(h.version).toBe(1);
    expect(h.boots).toBe(1);
    expect(sm.isDown(h, 54)).toBe(true);
    expect(sm.isDown(h, 55)).toBe(false);
    expect(extra(h)).toBe('-unstable');
  });

  it('a crash during apply reboots the host when the work runs', () => {
    let h = upload(fresh(), 'a', 'hello');
    h = ok(sm.action(h, { name: 'a', cmd: 'apply' }, { now: 0, effects: () => ({ durationMs: 10, crash: { downMs: 500 } }) }));
    expect(sm.settle(h, 9).payloads).toHaveLength(1);
    h = sm.settle(h, 10);
    expect(h.payloads).toEqual([]);
    expect(h.lastCrash).toEqual({ at: 10, during: 'apply a' });
    expect(sm.isDown(h, 509)).toBe(true);
    expect(sm.isDown(h, 510)).toBe(false);
  });
});

describe('expectations at APPLY (Xen 4.14+ livepatch_check_expectations)', () => {
  // The image's code: xen_minor_version (mov $19,%eax; ret) at +0x10, xen_extra_version (lea; ret) at +0x20.
  const TEXT = 0xffff82d040200000n;
  const code = new Uint8Array(0x30).fill(0x90);
  code.set([0xb8, 0x13, 0, 0, 0, 0xc3], 0x10);
  code.set([0x48, 0x8d, 0x05, 0xd9, 0x0f, 0, 0, 0xc3], 0x20);
  const CODE_IMAGE: sm.HostImage = {
    ...IMAGE,
    codeAt: (a, n) => (a >= TEXT && a + BigInt(n) <= TEXT + BigInt(code.length) ? code.slice(Number(a - TEXT), Number(a - TEXT) + n) : null),
  };
  const EXTRA = 'xen_extra_version';
  const hexOf = (b: number[]) => Buffer.from(b).toString('hex');
  const expecting = (data: number[], more: Partial<sm.FuncExpectation> = {}): sm.FuncExpectation => ({
    enabled: true, len: data.length, rsv: 0, data: Uint8Array.from([...data, ...new Array(31 - data.length).fill(0)]), ...more,
  });
  /** Facts of a payload patching xen_extra_version (new code at 0xffff82d040400000) with `expect`. */
  const LIB: Record<string, sm.PayloadFacts> = {};
  function define(key: string, spec: FakeSpec, expect: sm.FuncExpectation | null, patch: Partial<sm.PatchedFunction> = {}): void {
    const f = facts(spec);
    LIB[key] = { ...f, funcs: f.funcs.map((x) => ({ ...x, expect, ...patch })) };
  }
  const ORIGINAL = [0x48, 0x8d, 0x05, 0xd9, 0x0f];
  // jmp from xen_extra_version (0x...200020) to 0x...400000: rel32 = 0x400000 - 0x200025.
  const JUMP = [0xe9, 0xdb, 0xff, 0x1f, 0x00];
  define('plain', { buildId: id(20), returns: { [EXTRA]: 'Hello World' } }, null);
  define('ok', { buildId: id(21), returns: { [EXTRA]: 'expected' } }, expecting(ORIGINAL));
  define('whole', { buildId: id(22) }, expecting([0x48, 0x8d, 0x05, 0xd9, 0x0f, 0, 0, 0xc3]));
  define('bad', { buildId: id(23) }, expecting([0xb8, 0x13, 0, 0, 0]));
  define('disabled', { buildId: id(24) }, expecting([1, 2, 3], { enabled: false }));
  define('rsv', { buildId: id(25) }, expecting(ORIGINAL, { rsv: 2 }));
  define('long', { buildId: id(26) }, expecting([...ORIGINAL, 0, 0, 0xc3, 0x90]));
  define('zero', { buildId: id(27) }, expecting(ORIGINAL), { oldAddr: 0n });
  define('onjump', { buildId: id(28), depends: id(20) }, expecting(JUMP));
  define('baddeps', { buildId: id(29), depends: id(9) }, expecting([0xb8, 0x13, 0, 0, 0]));
  define('nop', { buildId: id(30), returns: { xen_minor_version: 'x' } }, null, { newAddr: 0n, nop: true, newSize: 5, oldSize: 6 });
  define('onnop', { buildId: id(31), depends: id(30), returns: { xen_minor_version: 'y' } }, expecting([0x0f, 0x1f, 0x44, 0x00, 0x00, 0xc3]), { oldSize: 6 });
  const checkX: sm.UploadChecker = ({ bytes }) => LIB[new TextDecoder().decode(bytes)]!;
  const load = (h: sm.Host, ...keys: string[]) => keys.reduce((x, k) => ok(sm.upload(x, { name: k, bytes: bytesOf(k) }, { now: 0, check: checkX })), h);
  const host = (...keys: string[]) => load(sm.createHost('host-0000', CODE_IMAGE), ...keys);
  // 'whole' expects all 8 bytes of the 8-byte xen_extra_version; 'long' expects 9.
  LIB.long = { ...LIB.long!, funcs: LIB.long!.funcs.map((f) => ({ ...f, oldSize: 8 })) };

  it('applies when the live code holds the expected bytes (or the expectation is disabled)', () => {
    for (const key of ['ok', 'whole', 'disabled']) {
      const h = run(host(key), key, 'apply');
      expect(status(h, key)).toMatchObject({ state: 'APPLIED', rc: 0 });
    }
  });

  it('refuses synchronously with EINVAL and Xen\'s console line when they differ; the payload stays CHECKED, rc untouched', () => {
    const h = host('bad');
    const e = refused(sm.action(h, { name: 'bad', cmd: 'apply' }, { now: 0, effects: () => { throw new Error('no work may be scheduled'); } }), 'EINVAL');
    expect(e.message).toBe(`bad: ${EXTRA}: expectation failed: expected:b813000000, actual:${hexOf(ORIGINAL)}`);
    expect(e.details).toMatchObject({ payload: 'bad', check: 'expectation', function: EXTRA, expected: 'b813000000', actual: hexOf(ORIGINAL), patchedBy: null });
    expect(e.details.dependencyCheck).toMatchObject({ outcome: 'satisfied' });
    expect(status(h, 'bad')).toEqual({ name: 'bad', state: 'CHECKED', rc: 0, reason: null });
    expect(h.pending).toBeNull();
  });

  it('checks depends first; APPLY_NODEPS still checks expectations', () => {
    const h = host('baddeps');
    refused(sm.action(h, { name: 'baddeps', cmd: 'apply' }, { now: 0 }), 'EINVAL', /check against hypervisor build-id failed/);
    const e = refused(sm.action(h, { name: 'baddeps', cmd: 'apply', nodeps: true }, { now: 0 }), 'EINVAL', /expectation failed/);
    expect(e.details.dependencyCheck).toMatchObject({ outcome: 'skipped' });
  });

  it('old_addr 0: EFAULT; reserved bits: EINVAL; more bytes than the function: ERANGE', () => {
    refused(sm.action(host('zero'), { name: 'zero', cmd: 'apply' }, { now: 0 }), 'EFAULT', /^zero: expectations of xen_extra_version failed \(rc=-14\), aborting: old_addr is 0/);
    refused(sm.action(host('rsv'), { name: 'rsv', cmd: 'apply' }, { now: 0 }), 'EINVAL', /reserved bits .* \(rsv=2\)/);
    refused(sm.action(host('long'), { name: 'long', cmd: 'apply' }, { now: 0 }), 'ERANGE', /\(rc=-34\).*expects 9 bytes of a 8-byte function/);
  });

  it('an image without code cannot satisfy an enabled expectation: EFAULT', () => {
    const h = ok(sm.upload(sm.createHost('h', IMAGE), { name: 'ok', bytes: bytesOf('ok') }, { now: 0, check: checkX }));
    refused(sm.action(h, { name: 'ok', cmd: 'apply' }, { now: 0 }), 'EFAULT', /has no code at 0xffff82d040200020 to compare with/);
  });

  it('on a stack, the live code is the jump the payload below wrote', () => {
    let h = run(host('plain', 'ok', 'onjump'), 'plain', 'apply');
    const e = refused(sm.action(h, { name: 'ok', cmd: 'apply', nodeps: true }, { now: 0 }), 'EINVAL');
    expect(e.message).toBe(`ok: ${EXTRA}: expectation failed: expected:${hexOf(ORIGINAL)}, actual:${hexOf(JUMP)} (the live code there is patched by plain)`);
    h = run(h, 'onjump', 'apply');
    expect(stack(h)).toEqual(['plain', 'onjump']);
    // Reverted: the original bytes are back.
    h = run(run(h, 'onjump', 'revert'), 'plain', 'revert');
    expect(stack(run(h, 'ok', 'apply'))).toEqual(['ok']);
  });

  it('a NOP entry leaves NOPs (Xen\'s P6 NOP) over the start of the function', () => {
    const h = run(run(host('nop', 'onnop'), 'nop', 'apply'), 'onnop', 'apply');
    expect(stack(h)).toEqual(['nop', 'onnop']);
  });

  it('REPLACE checks them after reverting the whole stack: the original bytes, and a failure leaves the host unpatched', () => {
    let h = run(host('plain', 'ok', 'bad'), 'plain', 'apply');
    const replaced = run(h, 'ok', 'replace');
    expect(stack(replaced)).toEqual(['ok']);
    h = run(h, 'bad', 'replace');
    expect(stack(h)).toEqual([]);
    expect(status(h, 'plain')).toMatchObject({ state: 'CHECKED', rc: 0 });
    expect(status(h, 'bad')).toEqual({
      name: 'bad',
      state: 'CHECKED',
      rc: -EINVAL,
      reason: `bad: ${EXTRA}: expectation failed: expected:b813000000, actual:${hexOf(ORIGINAL)}. SYSTEM MIGHT BE INSECURE: Replace action has been aborted after reverting ALL payloads!`,
    });
  });
});

describe('the function table', () => {
  it('names the topmost applied payload providing each function, else the image', () => {
    let h = upload(upload(upload(fresh(), 'xen_hello_world', 'hello'), 'xen_bye_world', 'bye'), 'xen_nop', 'nop');
    expect(functionTable(h, 0).map((f) => [f.function, f.providedBy?.name ?? null])).toEqual([
      ['xen_extra_version', null],
      ['xen_minor_version', null],
    ]);
    h = run(run(h, 'xen_hello_world', 'apply'), 'xen_bye_world', 'apply');
    expect(functionTable(h, 0).find((f) => f.function === 'xen_extra_version')).toEqual({
      function: 'xen_extra_version',
      result: { kind: 'string', value: 'Bye World!' },
      providedBy: { name: 'xen_bye_world', buildId: id(2) },
    });
    expect(ok(callFunction(h, 'xen_minor_version', 0)).value).toEqual({ function: 'xen_minor_version', result: { kind: 'integer', value: 19 }, providedBy: null });
    refused(callFunction(h, 'no_such_function', 0), 'ENOENT');
  });

  it('a verification fault makes the applied payload\'s functions return something else', () => {
    const h = run(upload(fresh(), 'xen_hello_world', 'hello'), 'xen_hello_world', 'apply', { effects: { corruptResult: '<corrupted>' } });
    expect(extra(h)).toBe('<corrupted>');
  });
});

describe('the debug dump', () => {
  it('prints functions, build-id= and depend-on= per payload, as Xen\'s key x does', () => {
    const h = run(upload(fresh(), 'xen_hello_world', 'hello'), 'xen_hello_world', 'apply');
    expect(sm.dump(h, 0).split('\n')).toEqual([
      "'x' pressed - Dumping all livepatch patches",
      `build-id: ${HV_BUILD_ID}`,
      ' name=xen_hello_world state=APPLIED(2) ffff82d040400000 (.data=ffff82d040401000, .rodata=ffff82d040402000) using 3 pages.',
      'livepatch: module metadata:',
      'livepatch:   LIVEPATCH_RULEZ',
      '    xen_extra_version patch ffff82d040200020(8) with ffff82d040400000 (8)',
      `build-id=${id(1)}`,
      `depend-on=${HV_BUILD_ID}`,
      `depend-on-xen=${HV_BUILD_ID}`,
      '',
    ]);
  });
});

describe('purity', () => {
  it('operations never mutate the host they are given', () => {
    const h = upload(fresh(), 'a', 'hello');
    const frozen = structuredClone({ payloads: h.payloads.map((p) => ({ ...p, facts: null })), stack: h.stack, version: h.version });
    ok(sm.action(h, { name: 'a', cmd: 'apply' }, { now: 0 }));
    sm.reboot(h, { now: 0 });
    ok(sm.action(h, { name: 'a', cmd: 'unload' }, { now: 0 }));
    expect({ payloads: h.payloads.map((p) => ({ ...p, facts: null })), stack: h.stack, version: h.version }).toEqual(frozen);
  });
});
