/**
 * `fleetpatch payload ...` as a user runs it, on payloads and images the real toolchain built
 * (test/fixtures/toolchain.ts). The commands run in this process (test/cli/support/run-cli.ts:
 * main() with all of stdout and stderr captured); bin/fleetpatch.js as a process is tried in
 * test/cli/hostile-args.int.test.ts. In the int tier: the fixtures are built by gcc, ld and
 * objcopy, and readelf reads build-ids back.
 */
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildFixtures, type Fixtures } from '../fixtures/toolchain.ts';
import { runCli } from '../cli/support/run-cli.ts';
import { readelfBuildId } from './binutils.ts';

function fleetpatch(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return runCli(args, { NO_COLOR: '1' });
}

let fx: Fixtures;
let dir: string;
beforeAll(async () => {
  fx = await buildFixtures();
  dir = await mkdtemp(path.join(tmpdir(), 'fleetpatch-cli-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('fleetpatch payload inspect', () => {
  it('--json prints the payload as one object', async () => {
    const r = await fleetpatch('payload', 'inspect', fx.payloads.helloWorld.path, '--json');
    expect(r.code).toBe(0);
    const j = JSON.parse(r.stdout);
    expect(j).toMatchObject({
      format: 'livepatch',
      buildId: await readelfBuildId(fx.payloads.helloWorld.path),
      depends: fx.images.xen.buildId,
      xenDepends: fx.images.xen.buildId,
      modinfo: { LIVEPATCH_RULEZ: null },
      canReapply: false,
      hasWritableData: true,
    });
    expect(j.funcs).toEqual([expect.objectContaining({ name: 'xen_extra_version', version: 2, newSize: 8, oldSize: 8, nop: false, returns: { kind: 'string', value: 'Hello World' } })]);
  });

  it('--json shows null xenDepends, NOP entries and the legacy format', async () => {
    const [a, b] = await Promise.all([
      fleetpatch('payload', 'inspect', fx.payloads.noXenBuildId.path, '--json'),
      fleetpatch('payload', 'inspect', fx.payloads.xspliceHelloWorld.path, '--json'),
    ]);
    const nobuild = JSON.parse(a.stdout);
    expect(nobuild.xenDepends).toBeNull();
    expect(nobuild.funcs[0]).toMatchObject({ nop: true, newSize: 5, oldSize: 6 });
    const legacy = JSON.parse(b.stdout);
    expect(legacy).toMatchObject({ format: 'xsplice', xenDepends: null });
    expect(legacy.funcs[0]).toMatchObject({ version: 1, name: 'xen_extra_version' });
  });

  it('prints a readable summary', async () => {
    const r = await fleetpatch('payload', 'inspect', fx.payloads.byeWorld.path);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(`depends      ${fx.payloads.helloWorld.buildId}`);
    expect(r.stdout).toContain('returns "Bye World!"');
  });

  it('an invalid payload: exit 1, the errno name and the reason', async () => {
    const bad = path.join(dir, 'truncated.livepatch');
    await writeFile(bad, (await readFile(fx.payloads.helloWorld.path)).subarray(0, 200));
    const r = await fleetpatch('payload', 'inspect', bad, '--json');
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^EINVAL \(22\): truncated: e_shoff \d+ is beyond the 200-byte file/m);
    expect(JSON.parse(r.stdout)).toMatchObject({ ok: false, error: { errnoName: 'EINVAL', errno: 22 } });
  });
});

describe('fleetpatch payload check', () => {
  it('passes hello on its image, bye with hello loaded; refuses the others with the reason', async () => {
    const image = fx.images.xen.path;
    const [ok, bye, missing, other, twice] = await Promise.all([
      fleetpatch('payload', 'check', fx.payloads.helloWorld.path, '--image', image),
      fleetpatch('payload', 'check', fx.payloads.byeWorld.path, '--image', image, '--loaded', fx.payloads.helloWorld.path),
      fleetpatch('payload', 'check', fx.payloads.noXenBuildId.path, '--image', image),
      fleetpatch('payload', 'check', fx.payloads.helloWorldOther.path, '--image', image),
      fleetpatch('payload', 'check', fx.payloads.helloWorld.path, '--image', image, '--loaded', fx.payloads.helloWorld.path),
    ]);
    expect(ok.code).toBe(0);
    expect(ok.stdout).toContain("xen_hello_world: passes Xen's upload checks");
    expect(bye.code).toBe(0);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/^EINVAL \(22\): xen_no_xen_buildid: \.livepatch\.xen_depends is missing/m);
    expect(other.code).toBe(1);
    expect(other.stderr).toContain('build-id mismatch');
    expect(twice.code).toBe(1);
    expect(twice.stderr).toMatch(/^EEXIST \(17\): a payload named xen_hello_world is already loaded/m);
  });

  it('without --image: a usage error (exit 2)', async () => {
    const r = await fleetpatch('payload', 'check', fx.payloads.helloWorld.path);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('--image');
  });
});

describe('fleetpatch payload build, keygen, sign, verify', () => {
  it('builds from a YAML spec, then signs and verifies it', async () => {
    const spec = path.join(dir, 'hello.yaml');
    await writeFile(spec, ['name: cli_hello', 'funcs:', '  - target: xen_extra_version', '    returns: Hello from the CLI', 'modinfo:', '  ticket: XSA-1', ''].join('\n'));
    const out = path.join(dir, 'cli_hello.livepatch');
    const built = await fleetpatch('payload', 'build', '--spec', spec, '--image', 'default', '--out', out);
    expect(built.code).toBe(0);
    const buildId = await readelfBuildId(out);
    expect(built.stdout).toContain(`build-id ${buildId}`);
    const stacked = path.join(dir, 'cli_bye.livepatch');
    const prefix = path.join(dir, 'release');
    await writeFile(path.join(dir, 'bye.json'), JSON.stringify({ name: 'cli_bye', funcs: [{ target: 'xen_extra_version', returns: 'Bye' }] }));
    const [inspected, checked, stackedBuild, keygen] = await Promise.all([
      fleetpatch('payload', 'inspect', out, '--json'),
      fleetpatch('payload', 'check', out, '--image', 'default'),
      fleetpatch('payload', 'build', '--spec', path.join(dir, 'bye.json'), '--image', 'default', '--on', out, '--out', stacked),
      fleetpatch('payload', 'keygen', '--out', prefix),
    ]);
    const j = JSON.parse(inspected.stdout);
    expect(j.funcs[0].returns).toEqual({ kind: 'string', value: 'Hello from the CLI' });
    expect(j.modinfo).toEqual({ ticket: 'XSA-1' });
    expect(checked.code).toBe(0);
    expect(stackedBuild.code).toBe(0);
    expect(JSON.parse((await fleetpatch('payload', 'inspect', stacked, '--json')).stdout).depends).toBe(buildId);
    expect(keygen.code).toBe(0);
    expect((await stat(`${prefix}.key`)).mode & 0o777).toBe(0o600);
    expect((await fleetpatch('payload', 'sign', out, '--key', `${prefix}.key`)).code).toBe(0);
    const verified = await fleetpatch('payload', 'verify', out, '--trust', `${prefix}.pub`);
    expect(verified.code).toBe(0);
    expect(verified.stdout).toContain('good signature');

    // The same signature over other bytes fails.
    const wrong = await fleetpatch('payload', 'verify', stacked, '--trust', `${prefix}.pub`, '--sig', `${out}.sig`);
    expect(wrong.code).toBe(1);
    expect(wrong.stderr).toContain('SIGNATURE_INVALID');
  });

  it('an invalid spec says what is wrong', async () => {
    const spec = path.join(dir, 'bad.yaml');
    await writeFile(spec, 'name: bad\nfuncs:\n  - target: xen_extra_version\n    returns: -5\n');
    const r = await fleetpatch('payload', 'build', '--spec', spec, '--image', 'default', '--out', path.join(dir, 'bad.livepatch'));
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/PAYLOAD_SPEC_INVALID: .*funcs\.0\.returns/);
  });
});
