/**
 * The emulator with the gcc-built payloads and images, in process: Xen's upload checks through the
 * payload library, function results decoded from real code, dependency checks as data, and the
 * memoised upload check shared by hosts in the same state.
 */
import { readFile } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { XenError } from '../../src/errors.ts';
import { cachingChecker, loadImageFile, payloadLibraryChecker } from '../../src/emulator/payload-adapter.ts';
import { callFunction } from '../../src/emulator/functions.ts';
import * as sm from '../../src/emulator/state-machine.ts';
import { buildPayload } from '../../src/payload/builder.ts';
import type { HypervisorImage } from '../../src/payload/image.ts';
import { buildCodegenFixtures, type CodegenFixtures } from '../fixtures/codegen.ts';
import { buildFixtures, type Fixtures } from '../fixtures/toolchain.ts';
import { startTestFleet, type TestFleet } from './fleet-helpers.ts';

let fx: Fixtures;
let t: TestFleet;
const bytes: Record<string, Uint8Array> = {};

beforeAll(async () => {
  fx = await buildFixtures();
  for (const [k, p] of Object.entries(fx.payloads)) bytes[k] = await readFile(p.path);
  t = await startTestFleet({ hosts: 4, images: [fx.images.xen.path, fx.images.other.path] });
}, 180_000);
afterAll(() => t?.close());

describe('hosts on gcc-built images', () => {
  it('spread the images over the hosts and report their build-ids', () => {
    expect(t.fleet.fleet.hosts.map((h) => h.buildId)).toEqual([fx.images.xen.buildId, fx.images.other.buildId, fx.images.xen.buildId, fx.images.other.buildId]);
    expect(t.fleet.fleet.hosts.map((h) => h.labels)).toEqual([
      { region: 'eu-west', rack: 'rack-000' },
      { region: 'eu-west', rack: 'rack-000' },
      { region: 'eu-west', rack: 'rack-000' },
      { region: 'eu-west', rack: 'rack-000' },
    ]);
  });

  it('read unpatched results from the image\'s code: -unstable on one, -rc1 on the other', async () => {
    expect((await t.client.host('host-0000').call('xen_extra_version')).result).toBe('-unstable');
    expect((await t.client.host('host-0001').call('xen_extra_version')).result).toBe('-rc1');
    expect((await t.client.host('host-0001').call('xen_minor_version')).result).toBe(20);
    expect(await t.client.host('host-0000').call('xen_changeset')).toEqual({ function: 'xen_changeset', result: 'fleetpatch fixture', kind: 'string', providedBy: null });
  });

  it('record every dependency check a stack of real payloads makes', async () => {
    const a = t.client.host('host-0002');
    const hello = await a.upload('xen_hello_world', bytes.helloWorld!);
    expect(hello.dependencyCheck).toEqual({
      payload: 'xen_hello_world',
      payloadBuildId: fx.payloads.helloWorld.buildId,
      kind: 'xen_depends',
      operation: 'upload',
      against: 'hypervisor',
      againstName: null,
      expected: fx.images.xen.buildId,
      found: fx.images.xen.buildId,
      outcome: 'satisfied',
    });
    expect(hello).toMatchObject({ metadata: ['LIVEPATCH_RULEZ'], safeToReapply: false, functions: ['xen_extra_version'] });
    const applied = await a.action('xen_hello_world', 'apply');
    expect(applied.dependencyCheck).toMatchObject({ against: 'hypervisor', expected: fx.images.xen.buildId, found: fx.images.xen.buildId, outcome: 'satisfied' });
    await a.waitForAction('xen_hello_world');
    await a.upload('xen_bye_world', bytes.byeWorld!);
    const bye = await a.action('xen_bye_world', 'apply');
    expect(bye.dependencyCheck).toMatchObject({ against: 'payload', againstName: 'xen_hello_world', expected: fx.payloads.helloWorld.buildId, found: fx.payloads.helloWorld.buildId, outcome: 'satisfied' });
    await a.waitForAction('xen_bye_world');
    expect(await a.call('xen_extra_version')).toEqual({ function: 'xen_extra_version', result: 'Bye World!', kind: 'string', providedBy: { name: 'xen_bye_world', buildId: fx.payloads.byeWorld.buildId } });
    expect((await a.list()).appliedStack).toEqual([
      { name: 'xen_hello_world', buildId: fx.payloads.helloWorld.buildId },
      { name: 'xen_bye_world', buildId: fx.payloads.byeWorld.buildId },
    ]);
  });

  it('refuse another image\'s payload at upload, with the failed xen_depends check', async () => {
    const e = (await t.client
      .host('host-0000')
      .upload('xen_hello_world_other', bytes.helloWorldOther!)
      .catch((x: unknown) => x)) as XenError;
    expect(e.errnoName).toBe('EINVAL');
    expect(e.details.dependencyCheck).toEqual({
      payload: 'xen_hello_world_other',
      payloadBuildId: fx.payloads.helloWorldOther.buildId,
      kind: 'xen_depends',
      operation: 'upload',
      against: 'hypervisor',
      againstName: null,
      expected: fx.images.other.buildId,
      found: fx.images.xen.buildId,
      outcome: 'mismatch',
    });
  });

  it('refuse the 2016 xSplice form on a 4.14+ hypervisor (no .livepatch.xen_depends): EINVAL', async () => {
    const e = (await t.client
      .host('host-0000')
      .upload('xsplice_hello_world', bytes.xspliceHelloWorld!)
      .catch((x: unknown) => x)) as XenError;
    expect(e.errnoName).toBe('EINVAL');
    expect(e.message).toMatch(/xen_depends is missing/);
  });
});

describe('the memoised upload check', () => {
  it('gives hosts in the same state the same facts object, and still checks per host', async () => {
    const image = await loadImageFile(fx.images.xen.path);
    let calls = 0;
    const check = cachingChecker((input) => {
      calls++;
      return payloadLibraryChecker(input);
    });
    const hosts = [0, 1, 2].map((i) => sm.createHost(`h${i}`, image));
    const up = hosts.map((h) => sm.upload(h, { name: 'xen_hello_world', bytes: bytes.helloWorld! }, { now: 0, check }));
    expect(up.every((o) => o.ok)).toBe(true);
    expect(calls).toBe(1);
    const facts = up.map((o) => (o.ok ? o.value.payload.facts : null));
    expect(facts[1]).toBe(facts[0]);
    // Same bytes, but this host already has it: the memo key differs and Xen's EEXIST comes back.
    const again = sm.upload(up[0]!.host, { name: 'xen_hello_world', bytes: bytes.helloWorld! }, { now: 0, check });
    expect(again.ok ? null : again.error.errnoName).toBe('EEXIST');
    expect(calls).toBe(2);
    // The same refusal is memoised too.
    const bad = [0, 1].map(() => sm.upload(hosts[0]!, { name: 'x', bytes: bytes.noXenBuildId! }, { now: 0, check }));
    expect(bad.map((o) => (o.ok ? null : o.error.errnoName))).toEqual(['EINVAL', 'EINVAL']);
    expect(calls).toBe(3);
  });
});

describe("Xen's expect check at APPLY, with gcc-built payloads (test/fixtures/codegen.ts)", () => {
  let cg: CodegenFixtures;
  let image: sm.HostImage;
  const load = async (h: sm.Host, ...files: { name: string; path: string }[]) => {
    for (const f of files) {
      const r = sm.upload(h, { name: f.name, bytes: await readFile(f.path) }, { now: 0, check: payloadLibraryChecker });
      if (!r.ok) throw r.error;
      h = r.host;
    }
    return h;
  };
  const act = (h: sm.Host, name: string, cmd: sm.ActionCmd, nodeps = false) => sm.action(h, { name, cmd, nodeps }, { now: 0 });
  const done = (o: sm.Outcome<sm.ActionValue>) => {
    if (!o.ok) throw o.error;
    return sm.settle(o.host, 1);
  };
  const extra = (h: sm.Host) => {
    const r = callFunction(h, 'xen_extra_version', 1);
    return r.ok ? r.value.result : r.error;
  };

  beforeAll(async () => {
    cg = await buildCodegenFixtures();
    image = await loadImageFile(cg.host.path);
  }, 180_000);

  it('a payload expecting the bytes objcopy read from the image applies', async () => {
    const h = done(act(await load(sm.createHost('h', image), cg.expect.ok), 'xen_expect_ok', 'apply'));
    expect(sm.getStatus(h, 'xen_expect_ok', 1)).toMatchObject({ ok: true, value: { state: 'APPLIED', rc: 0 } });
    expect(extra(h)).toEqual({ kind: 'string', value: 'Hello World' });
  });

  it('a payload expecting other bytes is refused: EINVAL, with both byte strings; it stays CHECKED with rc 0', async () => {
    const h = await load(sm.createHost('h', image), cg.expect.bad);
    const r = act(h, 'xen_expect_bad', 'apply');
    expect(r.ok).toBe(false);
    if (r.ok) return;
    expect(r.error.errnoName).toBe('EINVAL');
    expect(r.error.message).toBe(`xen_expect_bad: xen_extra_version: expectation failed: expected:${cg.expect.badBytes}, actual:${cg.expect.okBytes}`);
    expect(sm.getStatus(r.host, 'xen_expect_bad', 0)).toMatchObject({ ok: true, value: { state: 'CHECKED', rc: 0, reason: null } });
    expect(extra(r.host)).toEqual({ kind: 'string', value: '-unstable' });
  });

  it('on top of an applied payload the live code is its jump: refused even with APPLY_NODEPS; REPLACE reverts it first and applies', async () => {
    // The payload below is built by fleetpatch (its symbols do not clash with the gcc ones).
    const below = { name: 'below', bytes: buildPayload({ name: 'below', funcs: [{ target: 'xen_extra_version', returns: 'below' }] }, { image: image.source as HypervisorImage }) };
    const withBelow = async (top: { name: string; path: string }) => {
      const up = sm.upload(sm.createHost('h', image), below, { now: 0, check: payloadLibraryChecker });
      if (!up.ok) throw up.error;
      return done(act(await load(up.host, top), 'below', 'apply'));
    };
    let h = await withBelow(cg.expect.ok);
    expect(extra(h)).toEqual({ kind: 'string', value: 'below' });
    const r = act(h, 'xen_expect_ok', 'apply', true);
    expect(r.ok ? null : r.error.message).toMatch(new RegExp(`^xen_expect_ok: xen_extra_version: expectation failed: expected:${cg.expect.okBytes}, actual:e9[0-9a-f]{8}${cg.expect.okBytes.slice(10)} \\(the live code there is patched by below\\)$`));
    const replaced = done(act(h, 'xen_expect_ok', 'replace'));
    expect(replaced.stack).toEqual(['xen_expect_ok']);
    expect(extra(replaced)).toEqual({ kind: 'string', value: 'Hello World' });
    // A failing expectation at REPLACE: every payload already reverted, the host unpatched.
    h = done(act(await withBelow(cg.expect.bad), 'xen_expect_bad', 'replace'));
    expect(h.stack).toEqual([]);
    expect(sm.getStatus(h, 'xen_expect_bad', 1)).toMatchObject({ ok: true, value: { state: 'CHECKED', rc: -22, reason: expect.stringMatching(/expectation failed.*SYSTEM MIGHT BE INSECURE/) } });
    expect(sm.getStatus(h, 'below', 1)).toMatchObject({ ok: true, value: { state: 'CHECKED', rc: 0 } });
    expect(extra(h)).toEqual({ kind: 'string', value: '-unstable' });
  });

  it('the builder fills an expectation from the image (expect: true), and it is checked the same way', async () => {
    const hv = image.source as HypervisorImage;
    const bytes = buildPayload({ name: 'built', funcs: [{ target: 'xen_extra_version', returns: 'built', expect: true }] }, { image: hv });
    let h = sm.createHost('h', image);
    const up = sm.upload(h, { name: 'built', bytes }, { now: 0, check: payloadLibraryChecker });
    if (!up.ok) throw up.error;
    h = done(act(up.host, 'built', 'apply'));
    expect(extra(h)).toEqual({ kind: 'string', value: 'built' });
    const facts = h.payloads[0]!.facts.funcs[0]!;
    expect(Buffer.from(facts.expect!.data.subarray(0, facts.expect!.len)).toString('hex')).toBe(cg.expect.okBytes);
  });
});
