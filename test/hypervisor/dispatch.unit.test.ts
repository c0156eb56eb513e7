/**
 * The emulator's request handling without HTTP: a request's route and parameters (requests.ts)
 * and its run against one host (dispatch.ts) are pure, so the same request on the same host gives
 * the same answer, a refusal leaves the host as it was, and every dependency check comes back for
 * the journal. The HTTP shell around them: server-*.unit.test.ts.
 */
import { describe, expect, it } from 'vitest';
import { FleetpatchError, XenError } from '../../src/errors.ts';
import { dispatch, type DispatchContext } from '../../src/emulator/dispatch.ts';
import { matchRoute, parseRequest, type Body } from '../../src/agent/requests.ts';
import * as sm from '../../src/emulator/state-machine.ts';
import { bytesOf, fakeChecker, id, IMAGE, type FakeSpec } from './model-payloads.ts';

const LIB: Record<string, FakeSpec> = {
  hello: { buildId: id(1), returns: { xen_extra_version: 'Hello World' } },
  bye: { buildId: id(2), depends: id(1), returns: { xen_extra_version: 'Bye World!' } },
};
const ctx = (now: number): DispatchContext => ({ now, check: fakeChecker(LIB), effects: () => ({ durationMs: 10 }), wallOffsetMs: 0 });
const json = (doc: unknown): Body => {
  const bytes = new TextEncoder().encode(JSON.stringify(doc));
  return { bytes, truncated: false, size: bytes.length };
};
const none = new URLSearchParams();
const caught = (fn: () => unknown): unknown => {
  try {
    fn();
  } catch (e) {
    return e;
  }
  throw new Error('expected a refusal');
};

describe('routes and parameters', () => {
  it('names the route and the method a path takes', () => {
    expect(matchRoute('GET', ['livepatch'])).toEqual({ kind: 'list' });
    expect(matchRoute('POST', ['livepatch', 'hello'])).toEqual({ kind: 'upload', name: 'hello' });
    expect(matchRoute('POST', ['livepatch', 'hello', 'action'])).toEqual({ kind: 'action', name: 'hello' });
    expect(caught(() => matchRoute('GET', ['livepatch', 'hello', 'action']))).toMatchObject({ code: 'METHOD_NOT_ALLOWED', message: 'GET is not allowed here; use POST' });
    expect(caught(() => matchRoute('GET', ['nope']))).toMatchObject({ code: 'ROUTE_NOT_FOUND' });
  });

  it.each([
    [{}, /needs "cmd"/],
    [{ cmd: 3 }, /needs "cmd"/],
    [{ cmd: 'apply', timeoutNs: '5' }, /"timeoutNs" must be a finite number/],
    [{ cmd: 'apply', nodeps: 'yes' }, /"nodeps" must be true or false/],
  ])('an action body %j is REQUEST_INVALID, saying what is wrong', (body, message) => {
    const e = caught(() => parseRequest({ kind: 'action', name: 'hello' }, none, json(body)));
    expect(e).toBeInstanceOf(FleetpatchError);
    expect(e).toMatchObject({ code: 'REQUEST_INVALID', message: expect.stringMatching(message) });
  });

  it('LIST idx and nr are Xen uint32s: anything else is EINVAL, as the sysctl would say', () => {
    expect(parseRequest({ kind: 'list' }, new URLSearchParams('idx=2&nr=5'), null)).toEqual({ kind: 'list', idx: 2, nr: 5 });
    expect(parseRequest({ kind: 'list' }, none, null)).toEqual({ kind: 'list', idx: 0, nr: sm.LIVEPATCH_LIST_MAX });
    const e = caught(() => parseRequest({ kind: 'list' }, new URLSearchParams('idx=4294967296'), null));
    expect(e).toBeInstanceOf(XenError);
    expect((e as XenError).errnoName).toBe('EINVAL');
  });

  it('a reboot longer than a day, or not a number, is refused', () => {
    expect(parseRequest({ kind: 'reboot' }, none, json({}))).toEqual({ kind: 'reboot', downMs: 0 });
    expect(caught(() => parseRequest({ kind: 'reboot' }, none, json({ downMs: 86_400_001 })))).toMatchObject({ code: 'REQUEST_INVALID' });
    expect(caught(() => parseRequest({ kind: 'reboot' }, none, json({ downMs: '5' })))).toMatchObject({ code: 'REQUEST_INVALID' });
  });
});

describe('dispatch', () => {
  const start = sm.createHost('host-0000', IMAGE);

  it('upload then apply: 201, then 202 with the dependency check; the host after is what comes back', () => {
    const up = dispatch('host-0000', start, { kind: 'upload', name: 'hello', bytes: bytesOf('hello') }, ctx(0));
    expect(up.answer?.status).toBe(201);
    expect(up.check).toMatchObject({ kind: 'xen_depends', operation: 'upload', outcome: 'satisfied' });
    const apply = dispatch('host-0000', up.host, { kind: 'action', name: 'hello', cmd: 'apply' }, ctx(1));
    expect(apply.answer).toMatchObject({ status: 202, json: { rc: 0, scheduled: true } });
    expect(apply.check).toMatchObject({ kind: 'depends', operation: 'apply', against: 'hypervisor', outcome: 'satisfied' });
    // The same request on the same host: the same answer (no hidden state).
    expect(dispatch('host-0000', up.host, { kind: 'action', name: 'hello', cmd: 'apply' }, ctx(1))).toEqual(apply);
    const later = dispatch('host-0000', apply.host, { kind: 'list', idx: 0, nr: 10 }, ctx(100));
    expect((later.answer?.json as { appliedStack: { name: string }[] }).appliedStack.map((e) => e.name)).toEqual(['hello']);
  });

  it('a refusal leaves the host as it was and still reports the check the hypervisor made', () => {
    const up = dispatch('host-0000', start, { kind: 'upload', name: 'bye', bytes: bytesOf('bye') }, ctx(0));
    const apply = dispatch('host-0000', up.host, { kind: 'action', name: 'bye', cmd: 'apply' }, ctx(1));
    expect(apply.answer).toBeUndefined();
    expect(apply.refusal).toBeInstanceOf(XenError);
    expect((apply.refusal as XenError).errnoName).toBe('EINVAL');
    expect(apply.check).toMatchObject({ kind: 'depends', against: 'hypervisor', expected: id(1), outcome: 'mismatch' });
    expect(apply.host.stack).toEqual(up.host.stack);
    expect(apply.host.pending).toBeNull();
  });

  it('dump is text, a reboot empties the host', () => {
    const up = dispatch('host-0000', start, { kind: 'upload', name: 'hello', bytes: bytesOf('hello') }, ctx(0));
    expect(dispatch('host-0000', up.host, { kind: 'dump' }, ctx(1)).answer?.text).toContain('hello');
    const rebooted = dispatch('host-0000', up.host, { kind: 'reboot', downMs: 0 }, ctx(2));
    expect(rebooted.answer).toMatchObject({ status: 200, json: { rebooted: true, boots: up.host.boots + 1 } });
    expect(rebooted.host.payloads).toEqual([]);
  });
});
