/**
 * The adapter that runs Xen's tools, against small fake tools (shell scripts): ones that print
 * what xen-livepatch of Xen 4.20 really prints (fixtures/xen-livepatch-transcripts.ts) and exit
 * with its codes, and ones that hang, flood their output, die by a signal, are missing or are
 * not executable. Needs no Temporal and no PostgreSQL, but spawns processes, hence this tier.
 */
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { existsSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FleetpatchError, XenError } from '../../src/errors.ts';
import { runTool, type RunLimits } from '../../src/host/run-tool.ts';
import { XenTools } from '../../src/host/xen-tools.ts';
import { refusalError, type ToolRefusal } from '../../src/host/xen-livepatch-output.ts';
import { transcriptsOf, type Transcript } from './fixtures/xen-livepatch-transcripts.ts';

const T = transcriptsOf('4.20');
const LIMITS: RunLimits = { timeoutMs: 20_000, maxStdoutBytes: 1024 * 1024, maxStderrBytes: 64 * 1024 };
let root: string;

beforeAll(async () => {
  root = await mkdtemp(path.join(os.tmpdir(), 'fp-xen-tools-'));
});
afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

let n = 0;
/** A fresh directory with an executable `tool` running `body` (sh); `$D` is the directory. */
async function fakeTool(body: string): Promise<{ dir: string; tool: string }> {
  const dir = path.join(root, `t${++n}`);
  await mkdir(dir);
  const tool = path.join(dir, 'tool');
  await writeFile(tool, `#!/bin/sh\nD='${dir}'\nfor a in "$@"; do printf '%s\\n' "$a"; done >> "$D/argv"\n${body}\n`);
  await chmod(tool, 0o755);
  return { dir, tool };
}

/** A tool that prints a transcript as it came (bytes) and exits with its code. */
async function printing(t: Transcript, extra = ''): Promise<{ dir: string; tool: string }> {
  const f = await fakeTool(`${extra}\ncat "$D/stdout"\ncat "$D/stderr" >&2\nexit ${t.exitCode}`);
  await writeFile(path.join(f.dir, 'stdout'), t.stdout);
  await writeFile(path.join(f.dir, 'stderr'), t.stderr);
  return f;
}

const argvOf = (dir: string) => readFileSync(path.join(dir, 'argv'), 'utf8').split('\n').slice(0, -1);

async function rejection(p: Promise<unknown>): Promise<FleetpatchError> {
  const e = await p.then(
    () => undefined,
    (err: unknown) => err,
  );
  expect(e).toBeInstanceOf(FleetpatchError);
  expect((e as Error).message).not.toMatch(/\n/);
  return e as FleetpatchError;
}

/** Gone: no such process, or a zombie nobody reaps (this container's init may not). */
function gone(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'ESRCH';
  }
  try {
    return /^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return true;
  }
}

async function eventually(check: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 600; i++) {
    if (check()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`never: ${what}`);
}

describe('running a tool', () => {
  it('passes every argument as it is, with no shell between, in the C locale and none of the agent environment', async () => {
    const { dir, tool } = await fakeTool('printf "%s\\n" "$LC_ALL" "${FLEETPATCH_TEST_SECRET:-unset}" > "$D/env"');
    process.env.FLEETPATCH_TEST_SECRET = 'not-for-tools';
    const hostile = ['$(touch "$D/pwned")', '; touch pwned2', '`id`', 'two words', "it's", '*', '--nodeps', ''];
    try {
      expect(await runTool(tool, hostile, LIMITS, 'xen-livepatch apply')).toEqual({ exitCode: 0, stdout: new Uint8Array(), stderr: new Uint8Array() });
    } finally {
      delete process.env.FLEETPATCH_TEST_SECRET;
    }
    expect(argvOf(dir)).toEqual(hostile);
    expect(existsSync(path.join(dir, 'pwned')) || existsSync(path.join(dir, 'pwned2'))).toBe(false);
    expect(await readFile(path.join(dir, 'env'), 'utf8')).toBe('C\nunset\n');
  });

  it('kills a tool that hangs, and every process it started, and says how long it waited', async () => {
    const { dir, tool } = await fakeTool('sleep 600 &\necho $! > "$D/child"\necho $$ > "$D/self"\nprintf "Applying xen_hello_world... "\nwait');
    const e = await rejection(runTool(tool, ['apply', 'xen_hello_world'], { ...LIMITS, timeoutMs: 1500 }, 'xen-livepatch apply xen_hello_world'));
    expect(e.code).toBe('HOST_TOOL_TIMEOUT');
    expect(e.retryable).toBe(true);
    expect(e.message).toBe('xen-livepatch apply xen_hello_world did not finish within 1500 ms; it was killed with every process it started');
    // what it had printed is kept: here, that it got as far as the hypercall
    expect(e.details.stdout).toBe('Applying xen_hello_world... ');
    for (const file of ['child', 'self']) {
      const pid = Number(await readFile(path.join(dir, file), 'utf8'));
      await eventually(() => gone(pid), `${file} ${pid} gone`);
    }
  });

  it('stops reading at the limit, kills the tool and refuses what it printed, on either stream', async () => {
    for (const [body, stream] of [
      ['exec yes "xen_hello_world                         | APPLIED    | "', 'standard output'],
      ['exec yes "Error 16: Device or resource busy" >&2', 'standard error'],
    ] as const) {
      const { tool } = await fakeTool(body);
      const e = await rejection(runTool(tool, ['list'], { ...LIMITS, maxStdoutBytes: 65_536, maxStderrBytes: 4096 }, 'xen-livepatch list'));
      expect(e.code).toBe('HOST_TOOL_OUTPUT');
      expect(e.message).toBe(`xen-livepatch list printed more than ${stream === 'standard output' ? 65_536 : 4096} bytes on its ${stream}; fleetpatch stopped reading there and killed it`);
    }
  });

  it('takes output of exactly the limit, and refuses one byte more', async () => {
    const t = T['list-rows']!;
    const size = Buffer.byteLength(t.stdout as string);
    const { tool } = await printing(t);
    expect((await runTool(tool, ['list'], { ...LIMITS, maxStdoutBytes: size }, 'xen-livepatch list')).stdout.length).toBe(size);
    expect((await rejection(runTool(tool, ['list'], { ...LIMITS, maxStdoutBytes: size - 1 }, 'xen-livepatch list'))).code).toBe('HOST_TOOL_OUTPUT');
  });

  it('reports a tool that dies by a signal', async () => {
    for (const signal of ['SEGV', 'KILL', 'ABRT']) {
      const { tool } = await fakeTool(`printf "Uploading x... "\nkill -${signal} $$`);
      const e = await rejection(runTool(tool, ['upload', 'x', '/f'], LIMITS, 'xen-livepatch upload x'));
      expect(e.code).toBe('HOST_TOOL_FAILED');
      expect(e.message).toBe(`xen-livepatch upload x was killed by SIG${signal} before it finished`);
    }
  });

  it('names a tool that is missing or not executable, and the option that gives its path', async () => {
    const missing = await rejection(runTool(path.join(root, 'no-such-xen-livepatch'), ['list'], LIMITS, 'xen-livepatch list'));
    expect(missing.code).toBe('TOOL_MISSING');
    expect(missing.message).toBe(`xen-livepatch list: ${path.join(root, 'no-such-xen-livepatch')} does not exist (ENOENT); give the tool's path with --xen-livepatch PATH`);
    const plain = path.join(root, 'not-executable');
    await writeFile(plain, '#!/bin/sh\n');
    await chmod(plain, 0o644);
    const e = await rejection(runTool(plain, ['info', 'build_id'], LIMITS, 'xl info build_id'));
    expect(e.code).toBe('TOOL_MISSING');
    expect(e.message).toMatch(/is not executable by the agent \(EACCES\); give the tool's path with --xl PATH$/);
  });
});

describe('XenTools, against fake tools that print what Xen 4.20 prints', () => {
  it('lists, acts and reads the build-id, each with the argument vector xen-livepatch and xl take', async () => {
    const list = await printing(T['list-rows']!);
    const rows = await new XenTools({ xenLivepatch: list.tool }).list();
    expect(rows.ok && rows.payloads.map((p) => p.name)).toContain('lp_4.17.3-3.11.gf717213.xs8-4.17.3-3.12.xs8');
    expect(argvOf(list.dir)).toEqual(['list']);

    const apply = await printing(T['apply-nodeps-completed']!);
    const tools = new XenTools({ xenLivepatch: apply.tool });
    expect(await tools.action('apply', 'xen_hello_world', { nodeps: true })).toEqual({ ok: true, done: 'completed', diagnostics: [] });
    expect(argvOf(apply.dir)).toEqual(['apply', 'xen_hello_world', '--nodeps']);

    // --nodeps is apply's alone; the tool refuses it on the others, so it is not passed
    const revert = await printing(T['revert-not-top']!);
    const r = (await new XenTools({ xenLivepatch: revert.tool }).action('revert', 'xen_hello_world', { nodeps: true })) as ToolRefusal;
    expect(argvOf(revert.dir)).toEqual(['revert', 'xen_hello_world']);
    expect(r).toMatchObject({ ok: false, phase: 'action', errnoName: 'EBUSY', retryable: true });
    expect(refusalError(r)).toBeInstanceOf(XenError);

    const xl = await fakeTool('echo b48efad4098d4242ea8a36386ea1467ab59cffc9');
    expect(await new XenTools({ xl: xl.tool }).buildId()).toBe('b48efad4098d4242ea8a36386ea1467ab59cffc9');
    expect(argvOf(xl.dir)).toEqual(['info', 'build_id']);
  });

  it("uploads the bytes from a private file of their own, which is gone afterwards, whatever Xen said", async () => {
    const bytes = Uint8Array.from({ length: 3000 }, (_, i) => (i * 7) % 256);
    for (const [said, exitCode] of [['completed', 0], ['failed', 1]] as const) {
      const { dir, tool } = await fakeTool(
        `cp "$3" "$D/uploaded"\nstat -c %a "$3" > "$D/mode"\nprintf 'Uploading %s... ${said}\\n' "$3"\n${said === 'failed' ? "echo 'Error 17: File exists' >&2" : ''}\nexit ${exitCode}`,
      );
      const outcome = await new XenTools({ xenLivepatch: tool, uploadDir: root }).upload('xen_hello_world', bytes);
      const [cmd, name, file] = argvOf(dir);
      expect([cmd, name]).toEqual(['upload', 'xen_hello_world']);
      expect(new Uint8Array(await readFile(path.join(dir, 'uploaded')))).toEqual(bytes);
      expect((await readFile(path.join(dir, 'mode'), 'utf8')).trim()).toBe('600');
      expect(existsSync(path.dirname(file!))).toBe(false);
      if (said === 'completed') expect(outcome).toEqual({ ok: true, diagnostics: [] });
      else expect(outcome).toMatchObject({ ok: false, phase: 'upload', errnoName: 'EEXIST' });
    }
  });

  it('runs one upload or action at a time, in order, while the list can be read meanwhile', async () => {
    // The action holds a lock until the test releases it; a second one that found it held would say so.
    const { dir, tool } = await fakeTool(`
case "$1" in
list) cat "$D/list"; exit 0 ;;
esac
if ! mkdir "$D/lock" 2>/dev/null; then echo "overlap: $2" >&2; exit 1; fi
echo "start $2" >> "$D/log"
i=0; while [ ! -e "$D/release-$2" ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done
echo "end $2" >> "$D/log"
rmdir "$D/lock"
printf 'Applying %s... completed\\n' "$2"`);
    await writeFile(path.join(dir, 'list'), T['list-rows']!.stdout);
    const tools = new XenTools({ xenLivepatch: tool });
    const names = ['xen_a', 'xen_b', 'xen_c', 'xen_d'];
    const actions = names.map((name) => tools.action('apply', name));
    const lastLogged = () => (existsSync(path.join(dir, 'log')) ? readFileSync(path.join(dir, 'log'), 'utf8').trim().split('\n').at(-1) : undefined);
    for (const name of names) {
      // each starts only after the one before it ended (and is released only now)
      await eventually(() => lastLogged() === `start ${name}`, `${name} starts`);
      expect(existsSync(path.join(dir, 'lock'))).toBe(true);
      // an action is running: the list does not wait for it
      expect((await tools.list()).ok).toBe(true);
      await writeFile(path.join(dir, `release-${name}`), '');
    }
    expect(await Promise.all(actions)).toEqual(names.map(() => ({ ok: true, done: 'completed', diagnostics: [] })));
    expect(readFileSync(path.join(dir, 'log'), 'utf8').trim().split('\n')).toEqual(names.flatMap((name) => [`start ${name}`, `end ${name}`]));
  });

  it('the lock in that fake tool does see two actions at once when nothing orders them', async () => {
    const { dir, tool } = await fakeTool(`
if ! mkdir "$D/lock" 2>/dev/null; then echo "overlap: $2" >&2; exit 1; fi
i=0; while [ ! -e "$D/release" ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done
rmdir "$D/lock"
printf 'Applying %s... completed\\n' "$2"`);
    const first = runTool(tool, ['apply', 'xen_a'], LIMITS, 'xen-livepatch apply xen_a');
    await eventually(() => existsSync(path.join(dir, 'lock')), 'the first holds the lock');
    const second = await runTool(tool, ['apply', 'xen_b'], LIMITS, 'xen-livepatch apply xen_b');
    expect(new TextDecoder().decode(second.stderr)).toBe('overlap: xen_b\n');
    await writeFile(path.join(dir, 'release'), '');
    expect((await first).exitCode).toBe(0);
  });

  it('a failed or unreadable run does not hold up the next one', async () => {
    const { tool } = await fakeTool(`case "$2" in bad) echo 'Applying bad... maybe'; exit 0 ;; hang) sleep 600 ;; esac\nprintf 'Applying %s... completed\\n' "$2"`);
    const tools = new XenTools({ xenLivepatch: tool, timeoutMs: 1500 });
    const [bad, hang, good] = await Promise.allSettled([tools.action('apply', 'bad'), tools.action('apply', 'hang'), tools.action('apply', 'good')]);
    expect(bad.status === 'rejected' && (bad.reason as FleetpatchError).code).toBe('HOST_TOOL_OUTPUT');
    expect(hang.status === 'rejected' && (hang.reason as FleetpatchError).code).toBe('HOST_TOOL_TIMEOUT');
    expect(good).toEqual({ status: 'fulfilled', value: { ok: true, done: 'completed', diagnostics: [] } });
  });

  it('refuses a name whose row could not be read back before running anything', async () => {
    const { dir, tool } = await fakeTool('exit 0');
    const tools = new XenTools({ xenLivepatch: tool });
    expect((await rejection(tools.action('apply', 'two\nlines'))).code).toBe('REQUEST_INVALID');
    expect((await rejection(tools.upload('a'.repeat(128), new Uint8Array([1])))).code).toBe('EINVAL');
    expect(existsSync(path.join(dir, 'argv'))).toBe(false);
  });

  it('what the tools print when they cannot reach Xen is a failure, though xen-livepatch exits 0 then', async () => {
    const { tool } = await printing(T['list-no-handle']!);
    const e = await rejection(new XenTools({ xenLivepatch: tool }).list());
    expect(e.code).toBe('HOST_TOOL_FAILED');
    expect(e.message).toMatch(/could not open the hypervisor's control interface/);
    const xl = await fakeTool("echo 'cannot init xl context' >&2; exit 1");
    expect((await rejection(new XenTools({ xl: xl.tool }).buildId())).message).toBe('xl info build_id: xl exited with 1: "cannot init xl context"');
  });

  it('the defaults are where Xen installs its tools', async () => {
    const tools = new XenTools();
    expect([tools.xenLivepatch, tools.xl]).toEqual(['/usr/sbin/xen-livepatch', '/usr/sbin/xl']);
    expect(tools.limits).toEqual({ timeoutMs: 10_000, maxStdoutBytes: 4 * 1024 * 1024, maxStderrBytes: 64 * 1024 });
    // on this machine they are not there: the error says which path and which option
    if (!existsSync('/usr/sbin/xen-livepatch')) expect((await rejection(tools.list())).message).toMatch(/\/usr\/sbin\/xen-livepatch does not exist.*--xen-livepatch PATH/);
  });
});
