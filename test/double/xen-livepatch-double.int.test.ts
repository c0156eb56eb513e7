/**
 * The xen-livepatch double held to the real tool: every scenario captured from Xen 4.20's
 * xen-livepatch (test/host/fixtures/xen-livepatch-transcripts.ts) is set up on an emulated host
 * of its own, run through the double, and both streams and the exit code compared byte for byte.
 * The scenarios an emulated host cannot produce (an XSM denial, the list changing between two
 * sysctls, an action hook's rc) are listed with why; a new transcript must land in one of the two.
 * Then the executables themselves (bin/*-double.js through writeToolDoubles' wrappers), run as the
 * dom0 agent runs tools: argv, no shell, an environment of PATH and LC_ALL=C only. In the int
 * tier: the emulator listens on a socket and the executables are processes.
 */
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HostAgent } from '../../src/agent/client.ts';
import { agentHypercalls } from '../../src/double/hypercalls.ts';
import { runXenLivepatch } from '../../src/double/xen-livepatch.ts';
import { runXl } from '../../src/double/xl.ts';
import { writeToolDoubles } from '../../src/double/install.ts';
import { DOUBLE_FAILURE_EXIT, doubleMain } from '../../src/double/main.ts';
import { startFleetServer, type RunningFleet } from '../../src/emulator/server.ts';
import type { FaultsInput } from '../../src/emulator/faults.ts';

type FaultRuleInput = NonNullable<FaultsInput['rules']>[number];
import { parseAction, parseList, parseUpload } from '../../src/host/xen-livepatch-output.ts';
import { parseXlBuildId, parseXlInfoBuildId } from '../../src/host/xl-info-output.ts';
import { transcriptsOf, type Transcript } from '../host/fixtures/xen-livepatch-transcripts.ts';
import { otherPayload, xenTestPayloads } from './xen-payloads.ts';

const X = xenTestPayloads();
/** The directory the transcripts' upload scenarios named; each run here uses a private one instead. */
const CAPTURED_DIR = '/tmp/fleetpatch-upload/';

interface Setup {
  agent: HostAgent;
  dir: string;
  /** Upload, then apply and wait for the work (what `load` does, without printing). */
  load(name: string, bytes: Uint8Array, opts?: { nodeps?: boolean }): Promise<void>;
}

interface Scenario {
  /** Faults for this scenario's host only. */
  faults?: FaultRuleInput[];
  setup?: (s: Setup) => Promise<void>;
  noHandle?: 'ENOENT' | 'EACCES';
}

/** How to put an emulated host where the real tool was when it printed each transcript. */
const SCENARIOS: Record<string, Scenario> = {
  'unknown-command': {},
  'list-empty': {},
  'list-metadata-newline': { setup: (s) => s.agent.upload('xen_hello_world', otherPayload('nl', 'x', { modinfo: ['note=two\nlines'] })).then(() => undefined) },
  'list-metadata-forged-row': {
    setup: (s) => s.agent.upload('xen_hello_world', otherPayload('forged', 'x', { modinfo: ['x\nxen_hello_world                         | APPLIED    | '] })).then(() => undefined),
  },
  'list-name-with-separator': { setup: (s) => s.agent.upload('evil| APPLIED    | x', otherPayload('evil', 'x')).then(() => undefined) },
  'list-long-name-with-separator': { setup: (s) => s.load('a_name_of_more_than_forty_bytes_in_all_xx', otherPayload('longname', 'x', { modinfo: ['x| CHECKED    | '] })) },
  'list-no-handle': { noHandle: 'ENOENT' },
  'list-no-handle-eacces': { noHandle: 'EACCES' },
  'upload-completed': { setup: (s) => writeFile(path.join(s.dir, 'xen_hello_world.livepatch'), X.hello) },
  'upload-eexist': {
    setup: async (s) => {
      await writeFile(path.join(s.dir, 'xen_hello_world.livepatch'), X.hello);
      await s.agent.upload('xen_hello_world', X.hello);
    },
  },
  // built for another hypervisor (.livepatch.xen_depends): Xen's EINVAL at upload
  'upload-einval': { setup: (s) => writeFile(path.join(s.dir, 'xen_hello_world.livepatch'), otherPayload('xen_hello_world', 'x', { xenDepends: 'ab'.repeat(20) })) },
  'upload-no-file': {},
  'upload-empty-file': { setup: (s) => writeFile(path.join(s.dir, 'empty.livepatch'), new Uint8Array(0)) },
  'upload-directory': { setup: (s) => mkdir(path.join(s.dir, 'dir.livepatch')) },
  'upload-name-129': {},
  'upload-name-128': { setup: (s) => writeFile(path.join(s.dir, 'xen_hello_world.livepatch'), X.hello) },
  'upload-no-handle': { noHandle: 'ENOENT' },
  'apply-completed': { setup: (s) => s.agent.upload('xen_hello_world', X.hello).then(() => undefined) },
  'apply-nodeps-completed': { setup: (s) => s.agent.upload('xen_hello_world', X.hello).then(() => undefined) },
  'apply-no-action-needed': { setup: (s) => s.load('xen_hello_world', X.hello) },
  'apply-not-loaded': {},
  'apply-in-progress': {
    faults: [{ kind: 'actionDuration', ms: 60_000 }],
    setup: async (s) => {
      await s.agent.upload('xen_hello_world', X.hello);
      await s.agent.action('xen_hello_world', 'apply');
    },
  },
  // bye depends on hello, which is not applied
  'apply-refused-einval': { setup: (s) => s.agent.upload('xen_bye_world', X.bye).then(() => undefined) },
  // another payload's action is pending on the host
  'apply-refused-ebusy': {
    faults: [{ kind: 'actionDuration', ms: 60_000, payload: 'xen_nop' }],
    setup: async (s) => {
      await s.agent.upload('xen_hello_world', X.hello);
      await s.agent.upload('xen_nop', X.nop);
      await s.agent.action('xen_nop', 'apply');
    },
  },
  'apply-work-failed-einval': { faults: [{ kind: 'applyFailure', errno: 'EINVAL', payload: 'xen_hello_world' }], setup: (s) => s.agent.upload('xen_hello_world', X.hello).then(() => undefined) },
  // the CPUs never meet within the tool's 30 ms: rc -EBUSY
  'apply-work-timed-out': { faults: [{ kind: 'actionTimeout', payload: 'xen_hello_world' }], setup: (s) => s.agent.upload('xen_hello_world', X.hello).then(() => undefined) },
  'apply-not-completed': { faults: [{ kind: 'actionDuration', ms: 60_000 }], setup: (s) => s.agent.upload('xen_hello_world', X.hello).then(() => undefined) },
  // the host reboots in the apply and is back at once: the payload is gone when the tool looks again
  'apply-gone-after': { faults: [{ kind: 'crashDuringApply', downMs: 0 }], setup: (s) => s.agent.upload('xen_hello_world', X.hello).then(() => undefined) },
  'apply-unsupported-flag': {},
  'apply-name-129': {},
  'apply-no-handle': { noHandle: 'ENOENT' },
  'apply-usage': {},
  'revert-completed': { setup: (s) => s.load('xen_hello_world', X.hello) },
  'revert-no-action-needed': { setup: (s) => s.agent.upload('xen_hello_world', X.hello).then(() => undefined) },
  'revert-not-top': {
    setup: async (s) => {
      await s.load('xen_hello_world', X.hello);
      await s.load('xen_bye_world', X.bye);
    },
  },
  'revert-nodeps': {},
  'revert-in-progress': {
    faults: [{ kind: 'actionDuration', ms: 60_000, payload: 'xen_hello_world' }],
    setup: async (s) => {
      await s.agent.upload('xen_hello_world', X.hello);
      await s.agent.action('xen_hello_world', 'apply');
    },
  },
  'unload-completed': { setup: (s) => s.agent.upload('xen_hello_world', X.hello).then(() => undefined) },
  'unload-wrong-state': { setup: (s) => s.load('xen_nop', X.nop) },
  'unload-not-loaded': {},
  'replace-completed': {
    setup: async (s) => {
      await s.load('xen_hello_world', X.hello);
      await s.agent.upload('xen_replace_world', X.replace);
    },
  },
  'replace-no-action-needed': { setup: (s) => s.load('xen_replace_world', X.replace) },
  // pre-/post-action hooks: REPLACE refuses them
  'replace-refused-eopnotsupp': { setup: (s) => s.agent.upload('xen_replace_world', otherPayload('xen_replace_world', 'x', { hooks: { preApply: true } })).then(() => undefined) },
  // reverting hello fails in REPLACE's walk down the stack
  'replace-work-failed': {
    faults: [{ kind: 'revertFailure', payload: 'xen_hello_world' }],
    setup: async (s) => {
      await s.load('xen_hello_world', X.hello);
      await s.agent.upload('xen_replace_world', X.replace);
    },
  },
  help: {},
  'no-arguments': {},
  'prefix-li': {},
  'force-alone': {},
  'force-upload': { setup: (s) => writeFile(path.join(s.dir, 'xen_hello_world.livepatch'), X.hello) },
  'list-usage': {},
  'upload-usage': {},
};

/** What an emulated host cannot make the real tool print, and why. */
const NOT_REPRODUCIBLE: Record<string, string> = {
  'list-rows': 'rows with rc -1 and -512 come from action hooks, which the emulator does not run (the other rows: below)',
  'list-unknown-state': 'Xen has no third state; the capture answered one to show what the tool prints',
  'list-sizes-eperm': 'an XSM policy denying the sysctl',
  'list-sizes-eacces': 'tools built for another Xen version (a sysctl interface version mismatch)',
  'list-entries-ebusy': "the list's second sysctl failing after its first succeeded",
  'list-entries-einval': "the list's second sysctl failing after its first succeeded",
  'list-grew-errno-0': 'the list changing between its two sysctls; the double reads the whole list in one go (HostAgent.listAll starts again when it changed)',
  'list-grew-stale-errno': 'the list changing between its two sysctls (as above)',
  'upload-enomem': 'the hypervisor out of memory',
  'upload-ebusy': 'an upload refused with EBUSY, which the capture answered and the emulator never does',
  'upload-eperm': 'an XSM policy denying the upload',
  'apply-refused-eperm': 'an XSM policy denying the action',
  'apply-wrong-state-after': 'an apply whose work ends with rc 0 and the payload CHECKED, which Xen cannot do',
  'unload-still-loaded': 'an unload that leaves the payload loaded; UNLOAD is synchronous',
  'apply-name-128': 'a 128-character name, which the real tool prints with the stack bytes after it (they differ from run to run)',
};

const TRANSCRIPTS = transcriptsOf('4.20');
let fleet: RunningFleet;
let root: string;
const hostOf = new Map<string, string>();

function agentFor(hostId: string): HostAgent {
  const h = fleet.fleet.hosts.find((x) => x.id === hostId)!;
  return new HostAgent({ url: fleet.url, hostId: h.id, token: h.token, timeoutMs: 10_000 });
}

const here = (dir: string) => (s: string) => s.replaceAll(CAPTURED_DIR, `${dir}/`);
const text = (s: string | Uint8Array) => (typeof s === 'string' ? s : new TextDecoder().decode(s));

interface Ran {
  exitCode: number;
  stdout: string;
  stderr: string;
}

async function runInProcess(hostId: string, argv: string[], noHandle?: 'ENOENT' | 'EACCES'): Promise<Ran> {
  let stdout = '';
  let stderr = '';
  const agent = agentFor(hostId);
  const exitCode = await runXenLivepatch(argv, {
    hypercalls: noHandle ? { noHandle } : agentHypercalls(agent),
    streams: { out: (t) => void (stdout += t), err: (t) => void (stderr += t) },
  });
  return { exitCode, stdout, stderr };
}

beforeAll(async () => {
  root = await mkdtemp(path.join(os.tmpdir(), 'xen-livepatch-double-'));
  const names = Object.keys(SCENARIOS);
  names.forEach((n, i) => hostOf.set(n, `host-${String(i).padStart(4, '0')}`));
  const rules: FaultRuleInput[] = names.flatMap((n) => (SCENARIOS[n]!.faults ?? []).map((f) => ({ ...f, hosts: [hostOf.get(n)!] }) as FaultRuleInput));
  // spares: the list's rows, the executables
  fleet = await startFleetServer({ hosts: names.length + 4, port: 0, faults: { rules } });
}, 120_000);

afterAll(async () => {
  await fleet?.close();
  if (root) await rm(root, { recursive: true, force: true });
});

describe("the xen-livepatch double prints what Xen 4.20's xen-livepatch prints", () => {
  it('has a setup, or a reason it cannot have one, for every scenario captured', () => {
    const all = Object.keys(TRANSCRIPTS).sort();
    expect([...Object.keys(SCENARIOS), ...Object.keys(NOT_REPRODUCIBLE)].sort()).toEqual(all);
  });

  for (const [name, scenario] of Object.entries(SCENARIOS)) {
    it(`${name}: ${TRANSCRIPTS[name]?.argv.join(' ').slice(0, 50) || '(no arguments)'}`, async () => {
      const t: Transcript = TRANSCRIPTS[name]!;
      const hostId = hostOf.get(name)!;
      const dir = path.join(root, name);
      await mkdir(dir);
      const agent = agentFor(hostId);
      await scenario.setup?.({
        agent,
        dir,
        load: async (payload, bytes, opts) => {
          await agent.upload(payload, bytes);
          const { status } = await agent.actAndWait(payload, 'apply', { waitMs: 5_000, nodeps: opts?.nodeps ?? false });
          expect(status).toMatchObject({ state: 'APPLIED', rc: 0 });
        },
      });
      const local = here(dir);
      const ran = await runInProcess(hostId, t.argv.map(local), scenario.noHandle);
      expect(ran).toEqual({ exitCode: t.exitCode, stdout: local(text(t.stdout)), stderr: local(text(t.stderr)) });
    }, 30_000);
  }

  it('list-rows: every row an emulated host can hold, as the captured list prints it', async () => {
    const hostId = `host-${String(Object.keys(SCENARIOS).length).padStart(4, '0')}`;
    const agent = agentFor(hostId);
    fleet.setFaults({
      rules: [
        ...Object.keys(SCENARIOS).flatMap((n) => (SCENARIOS[n]!.faults ?? []).map((f) => ({ ...f, hosts: [hostOf.get(n)!] }) as FaultRuleInput)),
        { kind: 'actionTimeout', payload: 'x'.repeat(40), hosts: [hostId] },
        { kind: 'applyFailure', errno: 'EINVAL', payload: 'xen_bye_world', hosts: [hostId] },
        { kind: 'actionDuration', ms: 60_000, payload: 'lp_4.17.3-3.11.gf717213.xs8-4.17.3-3.12.xs8', hosts: [hostId] },
      ],
    });
    const wait = (name: string, cmd: 'apply' | 'replace', nodeps = false) => agent.actAndWait(name, cmd, { waitMs: 5_000, nodeps });
    await agent.upload('xen_hello_world', X.hello);
    await wait('xen_hello_world', 'apply');
    // bye's work fails (rc -EINVAL), then replace goes on top of hello (--nodeps: it depends on the hypervisor)
    await agent.upload('xen_bye_world', X.bye);
    await wait('xen_bye_world', 'apply');
    await agent.upload('xen_replace_world', X.replace);
    await wait('xen_replace_world', 'apply', true);
    await agent.upload('lp_4.17.3-3.11.gf717213.xs8-4.17.3-3.12.xs8', otherPayload('lp', 'x', { modinfo: ['a=1', 'b=2'] }));
    await agent.upload('exactly_forty_bytes_long_payload_name_xx', otherPayload('forty', 'x'));
    await agent.upload('x'.repeat(40), otherPayload('xs', 'x', { modinfo: ['key=value'] }));
    await wait('x'.repeat(40), 'apply', true);
    await agent.upload('ünïcödé_pätch', otherPayload('unicode', 'x'));
    // last: it stays pending (rc -EAGAIN) while the list is read
    await agent.action('lp_4.17.3-3.11.gf717213.xs8-4.17.3-3.12.xs8', 'apply', { nodeps: true });
    const ran = await runInProcess(hostId, ['list']);
    const captured = text(TRANSCRIPTS['list-rows']!.stdout).split('\n');
    const printed = ran.stdout.split('\n');
    expect(ran).toMatchObject({ exitCode: 0, stderr: '' });
    expect(printed.slice(0, 2)).toEqual(captured.slice(0, 2));
    const rowsOf = (lines: string[]) => lines.filter((l) => !/^(lp_hook_denied|lp_odd_rc) /.test(l)).slice(2).sort();
    expect(rowsOf(printed)).toEqual(rowsOf(captured));
  }, 60_000);
});

describe('the executables, run as the dom0 agent runs tools', () => {
  let tools: Awaited<ReturnType<typeof writeToolDoubles>>;
  const hostId = () => `host-${String(Object.keys(SCENARIOS).length + 1).padStart(4, '0')}`;
  const exec = (file: string, args: string[]) =>
    new Promise<Ran>((resolve) =>
      execFile(file, args, { env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', LC_ALL: 'C' }, encoding: 'utf8' }, (e, stdout, stderr) =>
        resolve({ exitCode: e ? Number((e as { code?: number }).code) : 0, stdout, stderr }),
      ),
    );

  beforeAll(async () => {
    const h = fleet.fleet.hosts.find((x) => x.id === hostId())!;
    tools = await writeToolDoubles(path.join(root, 'tools'), { url: fleet.url, hostId: h.id, token: h.token });
  });

  it('xen-livepatch: load, list and a refusal, each read back by the parsers of the real output', async () => {
    const file = path.join(root, 'xen_hello_world.livepatch');
    await writeFile(file, X.hello);
    let r = await exec(tools.xenLivepatch, ['load', file]);
    expect(r).toEqual({ exitCode: 0, stdout: `Uploading ${file}... completed\nApplying xen_hello_world... completed\n`, stderr: '' });
    r = await exec(tools.xenLivepatch, ['list']);
    expect(parseList(r)).toMatchObject({ ok: true, payloads: [{ name: 'xen_hello_world', state: 'APPLIED', rc: 0, metadata: 'LIVEPATCH_RULEZ' }] });
    r = await exec(tools.xenLivepatch, ['upload', 'xen_hello_world', file]);
    expect(parseUpload(r, { name: 'xen_hello_world', file })).toMatchObject({ ok: false, phase: 'upload', errnoName: 'EEXIST' });
    r = await exec(tools.xenLivepatch, ['unload', 'xen_hello_world']);
    expect(parseAction(r, { cmd: 'unload', name: 'xen_hello_world' })).toMatchObject({ ok: false, phase: 'state', wrongState: { current: 'APPLIED', expected: 'CHECKED' } });
  }, 120_000);

  it('xl: info build_id and the full info as the real readers take them; info xen_extra shows the patch', async () => {
    expect(parseXlBuildId(await exec(tools.xl, ['info', 'build_id']))).toBe(fleet.fleet.hosts[0]!.buildId);
    const info = await exec(tools.xl, ['info']);
    expect(parseXlInfoBuildId(info)).toBe(fleet.fleet.hosts[0]!.buildId);
    expect(info.stdout).toMatch(/^host {19}: host-\d{4}\n/);
    expect(await exec(tools.xl, ['info', 'xen_extra'])).toEqual({ exitCode: 0, stdout: 'Hello World\n', stderr: '' });
    const dmesg = await exec(tools.xl, ['dmesg']);
    expect(dmesg.stdout).toContain(' name=xen_hello_world state=APPLIED(2) ');
    expect(await exec(tools.xl, ['debug-keys', 'x'])).toEqual({ exitCode: 0, stdout: '', stderr: '' });
  }, 120_000);
});

describe('what no hypercall returns', () => {
  const capture = () => {
    const c = { out: '', err: '' };
    return { c, streams: { out: (t: string) => void (c.out += t), err: (t: string) => void (c.err += t) } };
  };

  it('an unreachable host: one line naming the double, exit 70, which the readers refuse', async () => {
    const { c, streams } = capture();
    const env = { FLEETPATCH_DOUBLE_URL: 'http://127.0.0.1:1', FLEETPATCH_DOUBLE_HOST: 'host-0000', FLEETPATCH_DOUBLE_TOKEN: 't' };
    const code = await doubleMain('xen-livepatch', ['apply', 'xen_hello_world'], { env, streams });
    expect(code).toBe(DOUBLE_FAILURE_EXIT);
    expect(c.err).toMatch(/^xen-livepatch \(fleetpatch double\): HOST_UNREACHABLE: .*\n$/);
    expect(() => parseAction({ exitCode: code, stdout: c.out, stderr: c.err }, { cmd: 'apply', name: 'xen_hello_world' })).toThrow(/xen-livepatch does not print/);
  });

  it('no config: says which variables to set, exit 70', async () => {
    const { c, streams } = capture();
    expect(await doubleMain('xl', ['info'], { env: {}, streams })).toBe(DOUBLE_FAILURE_EXIT);
    expect(c.err).toMatch(/^xl \(fleetpatch double\): DOUBLE_CONFIG_INVALID: the environment: set FLEETPATCH_DOUBLE_CONFIG/);
    const bad = path.join(root, 'bad.json');
    await writeFile(bad, '{"url":"ftp://x","hostId":"h","token":"t"}');
    const second = capture();
    expect(await doubleMain('xl', ['info'], { env: { FLEETPATCH_DOUBLE_CONFIG: bad }, streams: second.streams })).toBe(DOUBLE_FAILURE_EXIT);
    expect(second.c.err).toMatch(/DOUBLE_CONFIG_INVALID: .*bad\.json: url must be an http\(s\) URL/);
  });

  it('xl of a command the double does not have: xl\'s own answer', async () => {
    const { c, streams } = capture();
    expect(await runXl(['create', 'x.cfg'], { hypercalls: agentHypercalls(agentFor('host-0000')), hostName: 'h', streams })).toBe(1);
    expect(c).toEqual({ out: '', err: 'command not implemented\n' });
  });
});
