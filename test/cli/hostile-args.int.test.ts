/**
 * Every subcommand with hostile arguments: missing and unknown options, numbers beyond every
 * bound, text that cannot be stored, files that are missing, directories, symlink loops, FIFOs,
 * /dev/zero, unreadable or huge, and services that are not there. Each must answer with exactly
 * one line on stderr from the error catalogue, a documented exit code (docs/runtime.md), no stack
 * trace, no password, and must not hang.
 *
 * The table runs in this process (test/cli/support/run-cli.ts: main() as bin/fleetpatch.js calls
 * it, with all of stdout and stderr captured): a spawned command costs seconds of CPU to start,
 * and a hundred of them timed out on a loaded machine. A few cases also run as a user runs them,
 * `node bin/fleetpatch.js` in its own process, for what only a process shows: the exit status,
 * the last-resort handlers in bin/fleetpatch.js, what Node itself would print. In the int tier
 * because it makes a FIFO with mkfifo(1) and spawns those processes.
 *
 * Services: DATABASE_URL and TEMPORAL_ADDRESS point at a closed port, so a case that gets as far
 * as connecting fails fast with DATABASE_UNAVAILABLE / TEMPORAL_UNAVAILABLE.
 */
import { execFile, execFileSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { mkdir, open, rm, symlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildPayload, DEFAULT_IMAGE } from '../../src/payload/index.ts';
import { startFleetServer } from '../../src/emulator/server.ts';
import { runCli, type CliRun } from './support/run-cli.ts';

const BIN = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'bin', 'fleetpatch.js');

const dir = mkdtempSync(path.join(os.tmpdir(), 'fleetpatch-hostile-'));
const f = (name: string) => path.join(dir, name);

const ENV = {
  DATABASE_URL: 'postgres://fp:hunter2@127.0.0.1:1/fleetpatch',
  TEMPORAL_ADDRESS: '127.0.0.1:1',
  FLEETPATCH_DATA_DIR: path.join(dir, 'data'),
  FLEETPATCH_TRUSTED_KEYS: path.join(dir, 'keys'),
  NO_COLOR: '1',
};

/** As its own process; generous: on a loaded 2-core machine a start alone has taken 30 s. */
function fleetpatchProcess(args: string[]): Promise<CliRun> {
  return new Promise((resolve) => {
    execFile(process.execPath, [BIN, ...args], { timeout: 150_000, env: { PATH: process.env.PATH, HOME: process.env.HOME, ...ENV } }, (error, stdout, stderr) => {
      const code = error ? (typeof error.code === 'number' ? error.code : error.killed ? -1 : 1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

beforeAll(async () => {
  execFileSync('mkfifo', [f('fifo')]);
  await mkdir(f('keys'));
  await symlink(f('loop-b'), f('loop-a'));
  await symlink(f('loop-a'), f('loop-b'));
  await writeFile(f('hello.livepatch'), buildPayload({ name: 'hello', funcs: [{ target: 'xen_extra_version', returns: 'Hello' }] }, { image: DEFAULT_IMAGE }));
  await writeFile(f('garbage.livepatch'), 'not an ELF file at all, but long enough to be looked at '.repeat(4));
  await writeFile(f('garbage.key'), '{"type":"fleetpatch-signing-key"}');
  for (const [name, size] of [['huge.livepatch', 200 * 1024 * 1024], ['huge.yaml', 50 * 1024 * 1024]] as const) {
    const h = await open(f(name), 'w');
    await h.truncate(size);
    await h.close();
  }
  await writeFile(f('bad.yaml'), 'name: [unclosed');
  await writeFile(f('two-missing.yaml'), 'name: fix\npayloads: [{ file: a.livepatch }, { file: b.livepatch }]\nwaves: [{ name: all, hosts: "100%" }]\n');
  await writeFile(f('nul.yaml'), 'name: fix\npayloads: [{ file: hello.livepatch }]\nhosts: { ids: ["host-0007", "x\\0y"] }\nwaves: [{ name: all, hosts: "100%" }]\n');
  await writeFile(f('forever.yaml'), 'name: fix\npayloads: [{ file: hello.livepatch }]\nwaves: [{ name: a, hosts: 1 }, { name: b, hosts: "100%" }]\nbake: 99999999999d\n');
});
afterAll(() => rm(dir, { recursive: true, force: true }));

type Case = [args: () => string[], exit: number, stderr?: RegExp];

const CASES: Case[] = [
  // fleetpatch itself
  [() => [], 2],
  [() => ['frobnicate'], 2, /unknown command "frobnicate"/],
  [() => ['--json'], 2],
  // payload
  [() => ['payload'], 2],
  [() => ['payload', 'frobnicate'], 2],
  [() => ['payload', 'inspect'], 2, /missing payload file/],
  [() => ['payload', 'inspect', '--bogus', f('hello.livepatch')], 2],
  [() => ['payload', 'inspect', f('missing.livepatch')], 2, /no such file/],
  [() => ['payload', 'store'], 2, /missing payload file/],
  [() => ['payload', 'store', f('missing.livepatch')], 2, /no such file/],
  [() => ['payload', 'store', '/dev/zero'], 2, /character device/],
  [() => ['payload', 'inspect', dir], 2, /is a directory/],
  [() => ['payload', 'inspect', f('loop-a')], 2, /symlink loop/],
  [() => ['payload', 'inspect', '/dev/zero'], 2, /character device/],
  [() => ['payload', 'inspect', f('fifo')], 2, /FIFO/],
  [() => ['payload', 'inspect', f('huge.livepatch')], 1, /EINVAL: .*over 2 MiB/],
  [() => ['payload', 'inspect', '/proc/self/mem'], 1, /FILE_ERROR: .*EIO/],
  [() => ['payload', 'inspect', f('garbage.livepatch')], 1, /^EINVAL \(22\): /],
  [() => ['payload', 'check', f('hello.livepatch')], 2, /--image/],
  [() => ['payload', 'check', f('hello.livepatch'), '--image', '/dev/zero'], 2],
  [() => ['payload', 'check', f('hello.livepatch'), '--image', 'default', '--loaded', f('fifo')], 2],
  [() => ['payload', 'build'], 2],
  [() => ['payload', 'build', '--spec', dir, '--out', f('out.livepatch')], 2],
  [() => ['payload', 'build', '--spec', f('huge.yaml'), '--out', f('out.livepatch')], 1, /FILE_TOO_LARGE/],
  [() => ['payload', 'keygen'], 2],
  [() => ['payload', 'keygen', '--out', '/proc/no-such-dir/key'], 2],
  [() => ['payload', 'sign', f('hello.livepatch')], 2, /--key/],
  [() => ['payload', 'sign', f('hello.livepatch'), '--key', '/dev/zero'], 2],
  [() => ['payload', 'sign', f('hello.livepatch'), '--key', f('garbage.key')], 1, /KEY_INVALID/],
  [() => ['payload', 'verify', f('hello.livepatch')], 2, /--trust/],
  [() => ['payload', 'verify', f('hello.livepatch'), '--trust', f('fifo')], 2],
  [() => ['payload', 'verify', f('hello.livepatch'), '--trust', f('garbage.key'), '--sig', f('loop-a')], 1, /KEY_INVALID/],
  // rollout
  [() => ['rollout'], 2],
  [() => ['rollout', 'frobnicate'], 2],
  [() => ['rollout', 'plan'], 2],
  [() => ['rollout', 'plan', f('missing.yaml')], 2, /no such file/],
  [() => ['rollout', 'plan', dir], 2],
  [() => ['rollout', 'plan', '/dev/zero'], 2],
  [() => ['rollout', 'plan', f('fifo')], 2],
  [() => ['rollout', 'plan', f('huge.yaml')], 1, /FILE_TOO_LARGE/],
  [() => ['rollout', 'plan', f('bad.yaml')], 1, /PLAN_INVALID: .*not valid YAML/],
  [() => ['rollout', 'plan', f('forever.yaml')], 1, /PLAN_INVALID: .*bake: "99999999999d" is longer than the longest bake/],
  [() => ['rollout', 'plan', f('two-missing.yaml')], 1, /PLAN_INVALID: .*two-missing\.yaml: payloads\[0\]\.file a\.livepatch: .*no such file.*payloads\[1\]\.file b\.livepatch: .*no such file/],
  [() => ['rollout', 'start'], 2],
  [() => ['rollout', 'start', f('missing.yaml')], 2],
  [() => ['rollout', 'start', f('hello.livepatch'), '--id', '../../etc'], 2, /not a rollout id/],
  [() => ['rollout', 'start', f('forever.yaml'), '--interval-ms', 'abc'], 2],
  [() => ['rollout', 'status'], 2],
  [() => ['rollout', 'status', 'x', '--bogus'], 2],
  [() => ['rollout', 'status', 'a/b'], 2],
  [() => ['rollout', 'watch', 'x', '--interval-ms', '0'], 2],
  [() => ['rollout', 'pause', 'x'], 2, /--reason/],
  [() => ['rollout', 'abort', 'x', '--reason', 'r'.repeat(1001)], 2, /--reason is 1001 characters/],
  [() => ['rollout', 'approve', 'x', '--reason', 'ok', '--by', 'b'.repeat(201)], 2, /--by/],
  [() => ['rollout', 'resume', 'x', '--reason', 'ok'], 1, /TEMPORAL_UNAVAILABLE|DATABASE_UNAVAILABLE/],
  // audit
  [() => ['audit'], 2],
  [() => ['audit', 'frobnicate'], 2],
  [() => ['audit', 'constructor'], 2],
  [() => ['audit', 'timeline'], 2, /--host is required/],
  [() => ['audit', 'timeline', '--host', 'h', '--limit', '99999999999999999999'], 2, /--limit must be a whole number/],
  [() => ['audit', 'timeline', '--host', 'h', '--limit', '1e3'], 2],
  [() => ['audit', 'checks', '--limit', '-1'], 2],
  [() => ['audit', 'checks', '--limit', '99999999999999999999'], 2],
  [() => ['audit', 'checks', '--outcome', 'perhaps'], 2],
  [() => ['audit', 'checks', '--payload', "x' OR 1=1"], 2],
  [() => ['audit', 'stack', '--host', 'h', '--position', '99999999999999999999'], 2],
  [() => ['audit', 'stack', '--host', 'h', '--at', 'yesterday'], 2],
  [() => ['audit', 'where'], 2],
  [() => ['audit', 'where', '--payload', 'XYZ'], 2],
  [() => ['audit', 'where', '--payload', 'ab', '--at', '+999999-01-01'], 2],
  [() => ['audit', 'verify', '--stream', 'bogus'], 2],
  [() => ['audit', 'rollout'], 2],
  [() => ['audit', 'replay'], 2],
  [() => ['audit', 'verify'], 1, /DATABASE_UNAVAILABLE: cannot reach PostgreSQL at postgres:\/\/fp:\*\*\*@127\.0\.0\.1:1/],
  [() => ['audit', 'verify', '--json'], 1, /DATABASE_UNAVAILABLE/],
  // emulate
  [() => ['emulate'], 2, /--hosts N is required/],
  [() => ['emulate', '--hosts', '0'], 2],
  [() => ['emulate', '--hosts', '99999999999999999999'], 2],
  [() => ['emulate', '--hosts', '1', '--port', '99999'], 2],
  [() => ['emulate', '--hosts', '1', '--public-url', 'not a url'], 2],
  [() => ['emulate', '--hosts', '1', '--images', '/dev/zero'], 2],
  [() => ['emulate', '--hosts', '1', '--images', f('fifo')], 2],
  [() => ['emulate', '--hosts', '1', '--faults', f('fifo')], 2],
  [() => ['emulate', '--hosts', '1', '--port', '0', '--fleet-file', '/etc/passwd/x.json'], 1, /FLEET_FILE_INVALID: cannot write the fleet file \/etc\/passwd\/x\.json/],
  // hv (its Xen-compatible help and refusals aside)
  [() => ['hv', '--host', 'h', '--fleet-file', f('missing.json'), 'list'], 1, /FLEET_FILE_INVALID/],
  [() => ['hv', '--host', 'h', '--fleet-file', f('fifo'), 'list'], 1, /FLEET_FILE_INVALID/],
  [() => ['hv', '--host', 'h', '--timeout', 'abc', 'list'], 2],
  // worker, services, demo
  [() => ['worker', '--bogus'], 2],
  [() => ['worker', '--max-activities', 'abc'], 2],
  [() => ['worker', '--max-activities', '0'], 2],
  [() => ['services', '--bogus'], 2],
  [() => ['demo', '--hosts', 'abc'], 2],
  [() => ['demo', '--hosts', '99999999999999999999'], 2],
  [() => ['demo', '--api-port', 'x'], 2],
  [() => ['worker', '--metrics-port', '70000'], 2],
  // api, tokens
  [() => ['api', '--bogus'], 2],
  [() => ['api', '--port', '99999'], 2],
  [() => ['api', '--port', '-1'], 2],
  [() => ['tokens'], 2, /missing command/],
  [() => ['tokens', 'frobnicate'], 2],
  [() => ['tokens', 'create', '--name', 'ci'], 2, /--role is required/],
  [() => ['tokens', 'create', '--name', 'ci', '--role', 'root'], 2, /--role must be one of viewer, operator, admin/],
  [() => ['tokens', 'create', '--name', '../etc', '--role', 'viewer'], 2, /--name must be/],
  [() => ['tokens', 'revoke'], 2, /--name is required/],
  [() => ['tokens', 'list'], 1, /DATABASE_UNAVAILABLE/],
  // --json: a usage error prints nothing on stdout; other errors print one JSON error object
  [() => ['payload', 'inspect', f('missing.livepatch'), '--json'], 2],
  [() => ['payload', 'inspect', '/proc/self/mem', '--json'], 1, /FILE_ERROR/],
  [() => ['rollout', 'plan', f('two-missing.yaml'), '--json'], 1, /PLAN_INVALID/],
  // text that cannot be stored (only a caller in this process can pass it: argv holds no NUL),
  // and text that is empty, refused naming the option or the argument
  [() => ['rollout', 'pause', 'x', '--reason', 'bad\u0000reason'], 2, /^fleetpatch: USAGE: rollout pause: --reason contains a NUL character \(\\u0000\) at position 3, which cannot be stored$/],
  [() => ['rollout', 'approve', 'x', '--reason', 'ok', '--by', 'o\uDC00ps'], 2, /rollout approve: --by contains a lone UTF-16 surrogate \(\\udc00\) at position 1/],
  [() => ['rollout', 'status', 'x\u0000y'], 2, /rollout status: argument 1 \("x\\u0000y"\) contains a NUL character/],
  [() => ['rollout', 'start', f('forever.yaml'), '--reason', ''], 2, /rollout start: --reason is empty/],
  [() => ['rollout', 'start', f('nul.yaml')], 1, /PLAN_INVALID: .*nul\.yaml: hosts\.ids\[1\]: contains a NUL character \(\\u0000\) at position 1, which cannot be stored/],
  [() => ['rollout', 'plan', f('nul.yaml')], 1, /PLAN_INVALID: .*hosts\.ids\[1\]: contains a NUL character/],
  [() => ['audit', 'timeline', '--host', 'h\uD800'], 2, /audit timeline: --host contains a lone UTF-16 surrogate \(\\ud800\) at position 1/],
  [() => ['audit', 'frob\u0000nicate'], 2, /unknown subcommand "frob\\u0000nicate"/],
  [() => ['tokens', 'revoke', '--name', 'ci', '--reason', 'gone\u0000'], 2, /tokens revoke: --reason contains a NUL character/],
  [() => ['tokens', 'revoke', '--name', 'ci', '--reason', ''], 2, /tokens revoke: --reason is empty/],
  [() => ['payload', 'inspect', 'a\u0000.livepatch'], 2, /payload inspect: argument 1 \("a\\u0000\.livepatch"\) contains a NUL character/],
  [() => ['payload', 'store', f('hello.livepatch'), '--by', 'x\uD800'], 2, /payload store: --by contains a lone UTF-16 surrogate/],
  [() => ['hv', '--host', 'host\u0000', 'list'], 2, /hv: --host contains a NUL character/],
  [() => ['emulate', '--hosts', '1', 'x\u0000'], 2, /emulate: argument 1 \("x\\u0000"\) contains a NUL character/],
  [() => ['worker', '--identity', 'w\u0000'], 2, /worker: --identity contains a NUL character/],
  [() => ['api', '--listen', '127.0.0.1\u0000'], 2, /api: --listen contains a NUL character/],
  [() => ['frob\u0000'], 2, /^fleetpatch: USAGE: unknown command "frob\\u0000"$/],
];

/** What every answer to a hostile command line must look like. */
function expectOneCataloguedLine(argv: string[], r: CliRun, exit: number, stderr?: RegExp): void {
  const lines = r.stderr.split('\n').filter((l) => l.trim() !== '');
  expect(lines, r.stderr).toHaveLength(1);
  expect(lines[0]).toMatch(/^(fleetpatch: [A-Z][A-Z0-9_]+: |E[A-Z0-9]+ \(\d+\): )/);
  if (stderr) expect(lines[0]).toMatch(stderr);
  expect(r.code, r.stderr).toBe(exit);
  expect(r.stderr + r.stdout).not.toMatch(/\n\s+at .+:\d+:\d+/);
  expect(r.stderr + r.stdout).not.toContain('hunter2');
  // One printable line: nothing the user gave comes back raw.
  expect(r.stderr).not.toMatch(/[\u0000\uD800-\uDFFF]/);
  if (argv.includes('--json')) {
    if (exit === 2) expect(r.stdout).toBe('');
    else expect(JSON.parse(r.stdout.trim().split('\n').at(-1)!)).toMatchObject({ ok: false, error: { code: expect.any(String), message: expect.any(String) } });
  }
}

const label = (argv: string[]) => JSON.stringify(argv.join(' ')).slice(1, -1).replaceAll(dir, '<dir>').slice(0, 120);

describe('every subcommand with hostile arguments', () => {
  // One at a time: the capture of stdout and stderr is the process's.
  it.each(CASES.map(([args, exit, stderr]) => [label(args()), args, exit, stderr] as const))('fleetpatch %s', { timeout: 60_000 }, async (_label, args, exit, stderr) => {
    const argv = args();
    expectOneCataloguedLine(argv, await runCli(argv, ENV), exit, stderr);
  });
});

/**
 * As its own process, the answers a user sees from the real command: a usage error, a file that
 * cannot be read (with --json), a plan that is refused, PostgreSQL and Temporal not there.
 */
const AS_A_PROCESS: Case[] = [
  [() => ['frobnicate'], 2, /unknown command "frobnicate"/],
  [() => ['payload', 'inspect', '/proc/self/mem', '--json'], 1, /FILE_ERROR/],
  [() => ['rollout', 'plan', f('nul.yaml')], 1, /PLAN_INVALID: .*hosts\.ids\[1\]: contains a NUL character/],
  [() => ['audit', 'verify'], 1, /DATABASE_UNAVAILABLE: cannot reach PostgreSQL at postgres:\/\/fp:\*\*\*@127\.0\.0\.1:1/],
  [() => ['rollout', 'resume', 'x', '--reason', 'ok'], 1, /TEMPORAL_UNAVAILABLE|DATABASE_UNAVAILABLE/],
];

describe('the same, as its own process', () => {
  it.each(AS_A_PROCESS.map(([args, exit, stderr]) => [label(args()), args, exit, stderr] as const))('node bin/fleetpatch.js %s', { timeout: 180_000 }, async (_label, args, exit, stderr) => {
    const argv = args();
    expectOneCataloguedLine(argv, await fleetpatchProcess(argv), exit, stderr);
  });
});

describe('hv upload of a file that is not a payload file', () => {
  it('refuses /dev/zero and a FIFO at once, in xen-livepatch\'s words', { timeout: 60_000 }, async () => {
    const fleet = await startFleetServer({ hosts: 1, fleetFile: f('fleet.json') });
    try {
      for (const file of ['/dev/zero', f('fifo')]) {
        const r = await runCli(['hv', '--fleet-file', fleet.fleetFile, '--host', 'host-0000', 'upload', 'x', file], ENV);
        expect(r.code).toBe(1);
        expect(r.stderr).toMatch(new RegExp(`^Could not open ${file}\\.\\nError 22: payload ${file}: is a (character device|FIFO \\(named pipe\\)), not a regular file\\n$`));
      }
      expect(fleet.host('host-0000')!.payloads).toHaveLength(0);
    } finally {
      await fleet.close();
    }
  });
});
