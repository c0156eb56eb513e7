/**
 * Xen's own order-of-application run (xen-livepatch.md section 5) end to end: a real
 * `fleetpatch emulate` process serving the gcc-built hypervisor images, driven by `fleetpatch hv`
 * exactly as an operator would drive xen-livepatch, checking messages, exit codes and what
 * xen_extra_version returns after each step. The hv commands run in this process
 * (test/cli/support/run-cli.ts: main() with all of stdout and stderr captured), over HTTP to the
 * emulator's process: forty hv processes cost a minute of CPU on a loaded machine. In the int
 * tier: gcc builds the images, and the emulator is a process.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildFixtures, type Fixtures } from '../fixtures/toolchain.ts';
import { runCli } from '../cli/support/run-cli.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const BIN = path.join(ROOT, 'bin', 'fleetpatch.js');

let fx: Fixtures;
let dir: string;
let fleetFile: string;
let emulator: ChildProcess;
let emulatorOut = '';

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function fleetpatch(args: string[]): Promise<Run> {
  return runCli(args, { LOG_LEVEL: 'warn' });
}

function hv(host: string, ...args: string[]): Promise<Run> {
  return fleetpatch(['hv', '--fleet-file', fleetFile, '--host', host, ...args]);
}

const P = (name: keyof Fixtures['payloads']) => fx.payloads[name].path;

beforeAll(async () => {
  fx = await buildFixtures();
  dir = await mkdtemp(path.join(os.tmpdir(), 'xen-run-'));
  fleetFile = path.join(dir, 'fleet.json');
  const faults = path.join(dir, 'faults.yaml');
  // host-0002 is slow: its actions stay at -EAGAIN for 2 s (longer than xen-livepatch waits).
  await writeFile(faults, 'rules:\n  - kind: actionDuration\n    ms: 2000\n    hosts: [host-0002]\n');
  emulator = spawn(
    process.execPath,
    [BIN, 'emulate', '--hosts', '3', '--port', '0', '--images', `${fx.images.xen.path},${fx.images.other.path}`, '--fleet-file', fleetFile, '--faults', faults, '--seed', '7'],
    { cwd: ROOT, env: { ...process.env, LOG_LEVEL: 'warn' }, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`emulate did not start:\n${emulatorOut}`)), 150_000);
    emulator.stdout!.on('data', (d: Buffer) => {
      emulatorOut += d.toString();
      if (/Press Ctrl-C/.test(emulatorOut)) {
        clearTimeout(timer);
        resolve();
      }
    });
    emulator.stderr!.on('data', (d: Buffer) => (emulatorOut += d.toString()));
    emulator.once('exit', (code) => reject(new Error(`emulate exited with ${code}:\n${emulatorOut}`)));
  });
}, 300_000);

afterAll(async () => {
  if (emulator && emulator.exitCode === null) {
    const exited = new Promise((r) => emulator.once('exit', r));
    emulator.kill('SIGTERM');
    await exited;
  }
  await rm(dir, { recursive: true, force: true });
});

describe('fleetpatch emulate', () => {
  it('prints the fleet and the path of its fleet file', () => {
    expect(emulatorOut).toMatch(/^Emulating 3 hosts \(host-0000\.\.host-0002\) at http:\/\/127\.0\.0\.1:\d+$/m);
    expect(emulatorOut).toContain(`Images: xen-syms@${fx.images.xen.buildId.slice(0, 8)} ${fx.images.xen.buildId}, xen-syms@${fx.images.other.buildId.slice(0, 8)} ${fx.images.other.buildId}`);
    expect(emulatorOut).toContain(`Fleet file: ${fleetFile}`);
  });
});

describe("Xen's order-of-application run (xen-livepatch.md section 5)", () => {
  const H = 'host-0000';

  it('runs every step with the messages, exit codes and results of xen-livepatch', async () => {
    const call = async () => (await hv(H, 'call', 'xen_extra_version')).stdout.trim();
    let r: Run;

    expect(await call()).toBe('-unstable');

    // Revert with nothing loaded: error 2.
    r = await hv(H, 'revert', 'xen_hello_world');
    expect(r).toMatchObject({ code: 1, stdout: '' });
    expect(r.stderr).toBe('Failed to get status of xen_hello_world.\nError 2: No such file or directory\nReason: xen_hello_world: no payload of that name is loaded\n');

    // Load hello: Hello World.
    r = await hv(H, 'load', P('helloWorld'));
    expect(r).toEqual({ code: 0, stdout: `Uploading ${P('helloWorld')}... completed\nApplying xen_hello_world... completed\n`, stderr: '' });
    expect(await call()).toBe('Hello World');

    // Load hello again: Error 17.
    r = await hv(H, 'load', P('helloWorld'));
    expect(r.code).toBe(1);
    expect(r.stdout).toBe(`Uploading ${P('helloWorld')}... failed\n`);
    expect(r.stderr).toMatch(/^Error 17: File exists\nReason: .*xen_hello_world.*already loaded/);

    // List shows it APPLIED, with its modinfo.
    r = await hv(H, 'list');
    expect(r).toEqual({
      code: 0,
      stdout:
        ' ID                                     | status     | metadata\n' +
        '----------------------------------------+------------+---------------\n' +
        'xen_hello_world                         | APPLIED    | LIVEPATCH_RULEZ\n',
      stderr: '',
    });

    // Revert, unload, unload again (error 2).
    expect(await hv(H, 'revert', 'xen_hello_world')).toEqual({ code: 0, stdout: 'Reverting xen_hello_world... completed\n', stderr: '' });
    expect(await call()).toBe('-unstable');
    expect(await hv(H, 'unload', 'xen_hello_world')).toEqual({ code: 0, stdout: 'Unloading xen_hello_world... completed\n', stderr: '' });
    r = await hv(H, 'unload', 'xen_hello_world');
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^Failed to get status of xen_hello_world\.\nError 2: No such file or directory\n/);

    // Load hello, then bye: Bye World!
    expect((await hv(H, 'load', P('helloWorld'))).code).toBe(0);
    r = await hv(H, 'load', P('byeWorld'));
    expect(r).toEqual({ code: 0, stdout: `Uploading ${P('byeWorld')}... completed\nApplying xen_bye_world... completed\n`, stderr: '' });
    expect(await call()).toBe('Bye World!');

    // Upload replace and REPLACE: bye reverted, hello reverted, replace applied.
    expect(await hv(H, 'upload', 'xen_replace_world', P('replaceWorld'))).toEqual({ code: 0, stdout: `Uploading ${P('replaceWorld')}... completed\n`, stderr: '' });
    expect(await hv(H, 'replace', 'xen_replace_world')).toEqual({ code: 0, stdout: 'Replacing all live patches with xen_replace_world... completed\n', stderr: '' });
    expect(await call()).toBe('Hello Again World!');
    r = await hv(H, 'list');
    expect(r.stdout.split('\n').slice(2, 5)).toEqual([
      'xen_hello_world                         | CHECKED    | LIVEPATCH_RULEZ',
      'xen_bye_world                           | CHECKED    | ',
      'xen_replace_world                       | APPLIED    | ',
    ]);

    // Apply hello: error 22, it has .data.
    r = await hv(H, 'apply', 'xen_hello_world');
    expect(r).toEqual({
      code: 1,
      stdout: 'Applying xen_hello_world... failed\n',
      stderr: "Error 22: Invalid argument\nReason: xen_hello_world: can't revert as payload has .data. Please unload\n",
    });

    // Apply bye: error 22, it does not fit on top of xen_replace_world.
    r = await hv(H, 'apply', 'xen_bye_world');
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('Applying xen_bye_world... failed\n');
    expect(r.stderr).toMatch(/^Error 22: Invalid argument\nReason: xen_bye_world: check against xen_replace_world build-id failed: it depends on build-id [0-9a-f]{4}…, but the top of the stack is xen_replace_world \([0-9a-f]{4}…\)\n$/);

    // Apply replace: no action needed.
    expect(await hv(H, 'apply', 'xen_replace_world')).toEqual({ code: 0, stdout: 'No action needed.\n', stderr: '' });

    // The failed apply of hello left its rc in the list.
    r = await hv(H, 'list');
    expect(r.stdout).toContain('xen_hello_world                         | CHECKED (22, Invalid argument)    | LIVEPATCH_RULEZ\n');

    // Revert replace and unload all three.
    expect((await hv(H, 'revert', 'xen_replace_world')).stdout).toBe('Reverting xen_replace_world... completed\n');
    for (const name of ['xen_replace_world', 'xen_bye_world', 'xen_hello_world']) {
      expect(await hv(H, 'unload', name)).toEqual({ code: 0, stdout: `Unloading ${name}... completed\n`, stderr: '' });
    }
    expect(await hv(H, 'list')).toEqual({ code: 0, stdout: 'Nothing to list\n', stderr: '' });
    expect(await call()).toBe('-unstable');

    // Load nop, revert, apply again (allowed: no .data), unload while applied: wrong state.
    expect((await hv(H, 'load', P('nop'))).code).toBe(0);
    expect((await hv(H, 'call', 'xen_minor_version')).stdout).toBe(
      'cannot tell what xen_minor_version returns: payload xen_nop replaced 5 bytes of it with NOPs, and then it returns without setting %rax\n',
    );
    expect(await hv(H, 'revert', 'xen_nop')).toEqual({ code: 0, stdout: 'Reverting xen_nop... completed\n', stderr: '' });
    expect((await hv(H, 'call', 'xen_minor_version')).stdout).toBe('19\n');
    expect(await hv(H, 'apply', 'xen_nop')).toEqual({ code: 0, stdout: 'Applying xen_nop... completed\n', stderr: '' });
    expect(await hv(H, 'unload', 'xen_nop')).toEqual({ code: 1, stdout: '', stderr: 'xen_nop is in the wrong state.\nCurrent state: APPLIED\nExpected state: CHECKED\n' });

    // The debug dump: functions, build-id=, depend-on=.
    r = await hv(H, 'dump');
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(`build-id: ${fx.images.xen.buildId}\n`);
    expect(r.stdout).toMatch(/^ name=xen_nop state=APPLIED\(2\) [0-9a-f]{16} \(\.data=[0-9a-f]{16}, \.rodata=[0-9a-f]{16}\) using \d+ pages\.$/m);
    expect(r.stdout).toMatch(/^ {4}\(null\) patch [0-9a-f]{16}\(6\) with 0000000000000000 \(5\)$/m);
    expect(r.stdout).toContain(`build-id=${fx.payloads.nop.buildId}\ndepend-on=${fx.images.xen.buildId}\ndepend-on-xen=${fx.images.xen.buildId}\n`);
  }, 240_000);

  it('refuses what Xen refuses at upload: no .livepatch.xen_depends, another hypervisor\'s payload', async () => {
    let r = await hv('host-0000', 'upload', 'xen_no_xen_buildid', P('noXenBuildId'));
    expect(r.code).toBe(1);
    expect(r.stdout).toBe(`Uploading ${P('noXenBuildId')}... failed\n`);
    expect(r.stderr).toMatch(/^Error 22: Invalid argument\nReason: .*\.livepatch\.xen_depends is missing/);
    r = await hv('host-0000', 'load', P('helloWorldOther'));
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^Error 22: Invalid argument\nReason: .*build-id mismatch/);
    // host-0001 runs the other image: the same file loads there.
    r = await hv('host-0001', 'load', P('helloWorldOther'));
    expect(r).toMatchObject({ code: 0 });
    expect((await hv('host-0001', 'call', 'xen_extra_version')).stdout).toBe('Hello World\n');
  }, 120_000);

  it('exit code 2 when the action is still running (EAGAIN): "Operation didn\'t complete", then "already in progress"', async () => {
    expect((await hv('host-0002', 'upload', 'xen_hello_world', P('helloWorld'))).code).toBe(0);
    let r = await hv('host-0002', 'apply', 'xen_hello_world');
    expect(r).toEqual({ code: 2, stdout: 'Applying xen_hello_world... failed\n', stderr: "Operation didn't complete.\n" });
    r = await hv('host-0002', 'revert', 'xen_hello_world');
    expect(r).toEqual({ code: 2, stdout: '', stderr: 'Cannot execute revert.\nOperation already in progress.\n' });
  }, 120_000);

  it('answers usage mistakes like xen-livepatch', async () => {
    let r = await hv('host-0000', 'frobnicate');
    expect(r).toMatchObject({ code: 1, stderr: "Unrecognised command 'frobnicate' -- try 'fleetpatch hv help'\n" });
    r = await hv('host-0000', 'apply');
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('Usage: fleetpatch hv');
    r = await hv('host-0000', 'upload', 'x', path.join(dir, 'missing.livepatch'));
    expect(r).toMatchObject({ code: 1, stderr: `Could not open ${path.join(dir, 'missing.livepatch')}.\nError 2: No such file or directory\n` });
    r = await hv('host-0000', 'revert', 'xen_nop', '--nodeps');
    expect(r).toMatchObject({ code: 1, stderr: 'Unsupported flag: --nodeps.\n' });
    r = await hv('host-0099', 'list');
    expect(r).toMatchObject({ code: 1 });
    expect(r.stderr).toMatch(/HOST_NOT_FOUND: no host host-0099/);
    r = await fleetpatch(['hv', '--fleet-file', path.join(dir, 'nope.json'), '--host', 'host-0000', 'list']);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/FLEET_FILE_INVALID: no fleet file at/);
  }, 120_000);
});
