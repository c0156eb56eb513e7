/**
 * The emulator with code as gcc writes it (test/fixtures/codegen.ts): payloads whose replacement
 * increments a counter or sets up a frame (-O0) are uploaded, applied and called; hosts running
 * non-PIE images answer `call xen_extra_version` with the string, in process, over HTTP and through
 * `fleetpatch hv call` (in this process, test/cli/support/run-cli.ts); what cannot be told reads as
 * a sentence. In the int tier: gcc builds the fixtures.
 */
import { readFile } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { callFunction } from '../../src/emulator/functions.ts';
import { loadImageFile, payloadLibraryChecker } from '../../src/emulator/payload-adapter.ts';
import * as sm from '../../src/emulator/state-machine.ts';
import { buildCodegenFixtures, VARIANTS, variant, type CodegenFixtures } from '../fixtures/codegen.ts';
import { firstInstruction } from '../payload/binutils.ts';
import { startTestFleet, type TestFleet } from './fleet-helpers.ts';
import { runCli } from '../cli/support/run-cli.ts';


let fx: CodegenFixtures;
let host: sm.HostImage;
let t: TestFleet;
/** host-0000: the -O0 PIE host at Xen's address; host-0001..0003: non-PIE and kernel-model images. */
const IMAGE_IDS = ['O2-nopie', 'O0-nopie-counter', 'O2-kernel'];

beforeAll(async () => {
  fx = await buildCodegenFixtures();
  host = await loadImageFile(fx.host.path);
  t = await startTestFleet({ hosts: 4, images: [fx.host.path, ...IMAGE_IDS.map((id) => variant(fx, id).image.path)] });
}, 300_000);
afterAll(() => t?.close());

function called(h: sm.Host, fn: string, now = 0) {
  const r = callFunction(h, fn, now);
  if (!r.ok) throw r.error;
  return r.value;
}

/** `fleetpatch hv` in this process (test/cli/support/run-cli.ts), against the fleet's HTTP server. */
function hv(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return runCli(['hv', '--fleet-file', t.fleet.fleetFile, ...args], { LOG_LEVEL: 'warn' });
}

describe('payloads compiled by gcc at every -O, applied on an emulated host', () => {
  const pic = VARIANTS.filter((v) => v.model === 'pie').map((v) => v.id);

  it.each(pic)('%s: call xen_extra_version gives "-unstable", then "Hello World" once applied, then "-unstable" after the revert', async (id) => {
    const p = variant(fx, id).payload!;
    let h = sm.createHost('host-0000', host);
    expect(called(h, 'xen_extra_version')).toEqual({ function: 'xen_extra_version', result: { kind: 'string', value: '-unstable' }, providedBy: null });
    const up = sm.upload(h, { name: p.name, bytes: new Uint8Array(await readFile(p.path)) }, { now: 0, check: payloadLibraryChecker });
    if (!up.ok) throw up.error;
    const applied = sm.action(up.host, { name: p.name, cmd: 'apply' }, { now: 0 });
    if (!applied.ok) throw applied.error;
    h = sm.settle(applied.host, 1);
    expect(sm.getStatus(h, p.name, 1)).toMatchObject({ ok: true, value: { state: 'APPLIED', rc: 0 } });
    expect(called(h, 'xen_extra_version', 1)).toEqual({
      function: 'xen_extra_version',
      result: { kind: 'string', value: 'Hello World' },
      providedBy: { name: p.name, buildId: p.buildId },
    });
    const reverted = sm.action(h, { name: p.name, cmd: 'revert' }, { now: 1 });
    if (!reverted.ok) throw reverted.error;
    expect(called(sm.settle(reverted.host, 2), 'xen_extra_version', 2).result).toEqual({ kind: 'string', value: '-unstable' });
  });

  it('the -O0 payload with a counter, over HTTP: upload, apply, call', async () => {
    const p = variant(fx, 'O0-pie-counter').payload!;
    const agent = t.client.host('host-0000');
    expect(await agent.call('xen_extra_version')).toEqual({ function: 'xen_extra_version', result: '-unstable', kind: 'string', providedBy: null });
    await agent.upload(p.name, await readFile(p.path));
    await agent.action(p.name, 'apply');
    expect(await agent.waitForAction(p.name)).toMatchObject({ state: 'APPLIED', rc: 0 });
    expect(await agent.call('xen_extra_version')).toEqual({ function: 'xen_extra_version', result: 'Hello World', kind: 'string', providedBy: { name: p.name, buildId: p.buildId } });
    expect(await hv('--host', 'host-0000', 'call', 'xen_extra_version')).toEqual({ code: 0, stdout: 'Hello World\n', stderr: '' });
  });

  it('a payload of -fno-pie code is refused at upload: EOPNOTSUPP (R_X86_64_32), nothing loaded', async () => {
    const p = variant(fx, 'O0-nopie-counter').payload!;
    const h = sm.createHost('h', host);
    const r = sm.upload(h, { name: p.name, bytes: new Uint8Array(await readFile(p.path)) }, { now: 0, check: payloadLibraryChecker });
    expect(r.ok).toBe(false);
    if (r.ok) return;
    expect(r.error.errnoName).toBe('EOPNOTSUPP');
    expect(r.error.message).toMatch(/R_X86_64_32/);
    expect(r.host.payloads).toEqual([]);
  });
});

describe('hosts running non-PIE images', () => {
  it.each(IMAGE_IDS.map((id, i) => [id, `host-000${i + 1}`] as const))('%s (%s): call xen_extra_version is the string, not its address', async (id, hostId) => {
    expect(t.fleet.fleet.hosts.find((h) => h.id === hostId)!.buildId).toBe(variant(fx, id).image.buildId);
    const agent = t.client.host(hostId);
    expect(await agent.call('xen_extra_version')).toEqual({ function: 'xen_extra_version', result: '-unstable', kind: 'string', providedBy: null });
    expect(await agent.call('xen_minor_version')).toEqual({ function: 'xen_minor_version', result: 19, kind: 'integer', providedBy: null });
    expect(await agent.call('xen_banner')).toMatchObject({ result: 'Xen', kind: 'string' });
  });

  it('fleetpatch hv call prints the string, the number, or a sentence saying why not', async () => {
    expect(await hv('--host', 'host-0001', 'call', 'xen_extra_version')).toEqual({ code: 0, stdout: '-unstable\n', stderr: '' });
    expect(await hv('--host', 'host-0001', 'call', 'xen_minor_version')).toEqual({ code: 0, stdout: '19\n', stderr: '' });
    const image = variant(fx, 'O2-nopie').image.path;
    const jump = await firstInstruction(image, 'xen_branchy', /^j(?!mp)/);
    const r = await hv('--host', 'host-0001', 'call', 'xen_branchy');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(new RegExp(`^cannot tell what xen_branchy returns: it branches at \\+0x${jump.offset.toString(16)} \\(${jump.mnemonic} 0x[0-9a-f]+\\)\\n$`));
    expect(r.stdout).not.toMatch(/undefined/);
    const call = await firstInstruction(image, 'xen_caller', /^call/);
    expect((await hv('--host', 'host-0001', 'call', 'xen_caller')).stdout).toMatch(new RegExp(`^cannot tell what xen_caller returns: it calls xen_hook at \\+0x${call.offset.toString(16)} `));
  });

  it('the JSON keeps its shape: kind "undefined", result null, and why', async () => {
    const r = await t.client.host('host-0001').call('xen_hits');
    expect(r).toEqual({ function: 'xen_hits', result: null, kind: 'undefined', why: expect.stringMatching(/^it reads writable memory \(\.bss\+0x0\) at \+0x0: /), providedBy: null });
  });
});
