/**
 * A double of Xen 4.20's `xen-livepatch` (tools/misc/xen-livepatch.c at RELEASE-4.20.0): the same
 * commands, argument checks, messages on the same streams, and the exit codes of its main(), with
 * the hypercalls answered by one emulated host (hypercalls.ts). It prints only what the tool
 * prints: where the emulator knows why (a dependency mismatch, .data), the tool says only
 * `Error 22: Invalid argument`, and so does the double. Held to the captured transcripts of the
 * real tool, byte for byte (test/double/xen-livepatch-double.int.test.ts).
 *
 * Flow, as the C: `--force` may come first; commands are matched exactly (4.19+); actions take
 * `<name> [flags]`, check the flags before anything else, GET, act with a 30 ms timeout, sleep
 * 60 ms once and GET again (no wait loop); `load <file> [flags]` is upload, apply, and unload if
 * the apply failed. main() exits 0 for 0, 2 for EAGAIN and EBUSY, 1 for anything else.
 */
import { open } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { ActionCmd } from '../agent/contract.ts';
import { HypercallError, type Hypercalls } from './hypercalls.ts';
import { glibcStrerror } from './strerror.ts';

const EAGAIN = 11;
const EBUSY = 16;
const EINVAL = 22;
const ENOENT = 2;
const ENODEV = 19;
/** XEN_LIVEPATCH_NAME_SIZE: the tool's own check is `strlen > 128` (so 128 passes it). */
const NAME_SIZE = 128;
/** LIVEPATCH_MAX_SIZE: the hypervisor refuses a bigger payload with EINVAL before reading it. */
const MAX_PAYLOAD_BYTES = 2 * 1024 * 1024;
const HYPERVISOR_TIMEOUT_NS = 30_000_000;
const DELAY_MS = (2 * HYPERVISOR_TIMEOUT_NS) / 1e6;
const STATE = { CHECKED: 1, APPLIED: 2 } as const;

/** Where the double writes: bytes as they are (names are printed as given). */
export interface ToolStreams {
  out(text: string): void;
  err(text: string): void;
}

export interface XenLivepatchDeps {
  /** The hypervisor interface, or why it could not be opened (xencall's errno): the tool then says so and exits 0. */
  hypercalls: Hypercalls | { noHandle: 'ENOENT' | 'EACCES' };
  streams: ToolStreams;
  /** The tool's one sleep (60 ms); tests may shorten nothing: the double sleeps as the tool does. */
  sleepMs?: (ms: number) => Promise<void>;
}

const USAGE =
  'xen-livepatch: live patching tool\n' +
  'Usage: xen-livepatch [--force] <command> [args] [command-flags]\n' +
  ' Use --force option to bypass some checks.\n' +
  ` <name> An unique name of payload. Up to ${NAME_SIZE} characters.\n` +
  'Commands:\n' +
  '  help                   display this help\n' +
  '  upload <name> <file>   upload file <file> with <name> name\n' +
  '  list                   list payloads uploaded.\n' +
  '  apply <name> [flags]   apply <name> patch.\n' +
  '    Supported flags:\n' +
  '      --nodeps           Disable inter-module buildid dependency check.\n' +
  '                         Check only against hypervisor buildid.\n' +
  '  revert <name>          revert name <name> patch.\n' +
  '  replace <name>         apply <name> patch and revert all others.\n' +
  '  unload <name>          unload name <name> patch.\n' +
  '  load <file> [flags]    upload and apply <file> with name as the <file> name\n' +
  '    Supported flags:\n' +
  '      --nodeps           Disable inter-module buildid dependency check.\n' +
  '                         Check only against hypervisor buildid.\n';

interface ActionOption {
  cmd: ActionCmd;
  allow: number;
  /** The state after success; -ENOENT for unload (the GET then fails). */
  expected: number;
  verb: string;
  /** flag_options[]: only apply takes one. */
  flags: readonly string[];
}

const ACTIONS: Readonly<Record<ActionCmd, ActionOption>> = {
  apply: { cmd: 'apply', allow: STATE.CHECKED, expected: STATE.APPLIED, verb: 'Applying', flags: ['--nodeps'] },
  revert: { cmd: 'revert', allow: STATE.APPLIED, expected: STATE.CHECKED, verb: 'Reverting', flags: [] },
  unload: { cmd: 'unload', allow: STATE.CHECKED, expected: -ENOENT, verb: 'Unloading', flags: [] },
  replace: { cmd: 'replace', allow: STATE.CHECKED, expected: STATE.APPLIED, verb: 'Replacing all live patches with', flags: [] },
};

function state2str(state: number): string {
  return state === STATE.CHECKED ? 'CHECKED' : state === STATE.APPLIED ? 'APPLIED' : 'unknown';
}

const utf8 = new TextEncoder();
const bytesOf = (s: string) => utf8.encode(s).length;

/** main()'s last word: 0, 2 for "retry later" (EAGAIN, EBUSY), 1 for any other errno and for -1. */
export function exitCodeOf(ret: number): number {
  if (ret === 0) return 0;
  return ret === EAGAIN || ret === EBUSY ? 2 : 1;
}

/** The errno a failed open/stat leaves, from Node's code ("ENOENT" -> 2). */
function errnoOf(e: unknown): number {
  const code = (e as NodeJS.ErrnoException).code;
  const n = code ? (os.constants.errno as Record<string, number | undefined>)[code] : undefined;
  if (n === undefined) throw e;
  return n;
}

class Tool {
  constructor(
    private readonly xc: Hypercalls,
    private readonly io: ToolStreams,
    private readonly pause: (ms: number) => Promise<void>,
  ) {}

  private usage(): number {
    this.io.err(USAGE);
    return -1;
  }

  /** get_name(): the tool's own length check, in bytes (strlen). */
  private nameTooLong(name: string): boolean {
    if (bytesOf(name) <= NAME_SIZE) return false;
    this.io.err(`ID must be no more than ${NAME_SIZE} characters.\n`);
    return true;
  }

  async list(args: string[]): Promise<number> {
    if (args.length) return this.usage();
    let entries;
    try {
      entries = await this.xc.list();
    } catch (e) {
      if (!(e instanceof HypercallError)) throw e;
      this.io.err(`Failed to get list sizes.\nError ${e.errno}: ${glibcStrerror(e.errno)}\n`);
      return e.errno;
    }
    if (entries.length === 0) {
      this.io.out('Nothing to list\n');
      return 0;
    }
    let text = ' ID                                     | status     | metadata\n----------------------------------------+------------+---------------\n';
    for (const p of entries) {
      // printf("%-40.*s"): padded to 40 bytes, not characters; a longer name is not cut.
      const pad = ' '.repeat(Math.max(0, 40 - bytesOf(p.name)));
      const state = state2str(STATE[p.state]);
      const rc = p.rc ? ` (${-p.rc}, ${glibcStrerror(-p.rc)})    | ` : '    | ';
      text += `${p.name}${pad}| ${state}${rc}${p.metadata.join(';')}\n`;
    }
    this.io.out(text);
    return 0;
  }

  async upload(args: string[]): Promise<number> {
    if (args.length !== 2) return this.usage();
    const [name, file] = args as [string, string];
    if (this.nameTooLong(name)) return EINVAL;
    let bytes: Uint8Array;
    // open, stat, mmap, in that order, each with its own message.
    let handle;
    try {
      handle = await open(file, 'r');
    } catch (e) {
      const n = errnoOf(e);
      this.io.err(`Could not open ${file}.\nError ${n}: ${glibcStrerror(n)}\n`);
      return n;
    }
    try {
      let size: number;
      let regular: boolean;
      try {
        const st = await handle.stat();
        size = st.size;
        regular = st.isFile();
      } catch (e) {
        const n = errnoOf(e);
        this.io.err(`Could not get size of ${file}.\nError ${n}: ${glibcStrerror(n)}\n`);
        return n;
      }
      // mmap of 0 bytes is EINVAL; of a directory, a FIFO or a socket ENODEV.
      const mapErrno = !regular ? ENODEV : size === 0 ? EINVAL : 0;
      if (mapErrno) {
        this.io.err(`Could not map ${file}.\nError ${mapErrno}: ${glibcStrerror(mapErrno)}\n`);
        return mapErrno;
      }
      this.io.out(`Uploading ${file}... `);
      if (size > MAX_PAYLOAD_BYTES) return this.uploadFailed(EINVAL);
      const buf = Buffer.alloc(size);
      const { bytesRead } = await handle.read(buf, 0, size, 0);
      bytes = new Uint8Array(buf.buffer, buf.byteOffset, bytesRead);
    } finally {
      await handle.close();
    }
    try {
      await this.xc.upload(name, bytes);
    } catch (e) {
      if (!(e instanceof HypercallError)) throw e;
      return this.uploadFailed(e.errno);
    }
    this.io.out('completed\n');
    return 0;
  }

  private uploadFailed(errno: number): number {
    this.io.out('failed\n');
    this.io.err(`Error ${errno}: ${glibcStrerror(errno)}\n`);
    return errno;
  }

  async action(args: string[], opt: ActionOption): Promise<number> {
    const { io, xc } = this;
    if (args.length < 1) return this.usage();
    const [name, ...flagArgs] = args as [string, ...string[]];
    if (this.nameTooLong(name)) return EINVAL;
    let nodeps = false;
    for (const f of flagArgs) {
      if (!opt.flags.includes(f)) {
        io.err(`Unsupported flag: ${f}.\n`);
        return EINVAL;
      }
      nodeps = true;
    }

    let status;
    try {
      status = await xc.get(name);
    } catch (e) {
      if (!(e instanceof HypercallError)) throw e;
      io.err(`Failed to get status of ${name}.\nError ${e.errno}: ${glibcStrerror(e.errno)}\n`);
      return e.errno;
    }
    if (status.rc === -EAGAIN) {
      io.err(`Cannot execute ${opt.cmd}.\nOperation already in progress.\n`);
      return EAGAIN;
    }
    const state = STATE[status.state];
    if (state === opt.expected) {
      io.out('No action needed.\n');
      return 0;
    }
    if (!(opt.allow & state)) {
      io.err(`${name} is in the wrong state.\nCurrent state: ${state2str(state)}\nExpected state: ${state2str(opt.allow)}\n`);
      return -1;
    }

    io.out(`${opt.verb} ${name}... `);
    try {
      await xc.action(name, opt.cmd, { timeoutNs: HYPERVISOR_TIMEOUT_NS, nodeps });
    } catch (e) {
      if (!(e instanceof HypercallError)) throw e;
      io.out('failed\n');
      io.err(`Error ${e.errno}: ${glibcStrerror(e.errno)}\n`);
      return e.errno;
    }

    await this.pause(DELAY_MS);
    let rc: number;
    try {
      status = await xc.get(name);
      rc = status.rc;
    } catch (e) {
      if (!(e instanceof HypercallError)) throw e;
      rc = -e.errno;
    }
    if (rc === -EAGAIN) {
      io.out('failed\n');
      io.err("Operation didn't complete.\n");
      return EAGAIN;
    }
    if (rc === 0) rc = STATE[status.state];
    if (rc === opt.expected) {
      io.out('completed\n');
      return 0;
    }
    io.out('failed\n');
    if (rc < 0) {
      io.err(`Error ${-rc}: ${glibcStrerror(-rc)}\n`);
      return -rc;
    }
    io.err(`${name} is in the wrong state.\nCurrent state: ${state2str(rc)}\nExpected state: ${state2str(opt.expected)}\n`);
    return -1;
  }

  /** Upload under the file's name without its last extension, apply with the flags, unload if that failed. */
  async load(args: string[]): Promise<number> {
    if (args.length < 1) return this.usage();
    const [file, ...flags] = args as [string, ...string[]];
    const base = path.basename(file);
    const dot = base.lastIndexOf('.');
    const name = dot === -1 ? base : base.slice(0, dot);
    const rc = await this.upload([name, file]);
    if (rc) return rc;
    const applied = await this.action([name, ...flags], ACTIONS.apply);
    if (applied) await this.action([name], ACTIONS.unload);
    return applied;
  }
}

/** One run of `xen-livepatch <argv>`; returns the exit code. */
export async function runXenLivepatch(argv0: readonly string[], deps: XenLivepatchDeps): Promise<number> {
  const io = deps.streams;
  let argv = [...argv0];
  if (argv[0] === '--force') {
    argv = argv.slice(1);
    // `--force` alone: the usage, and -1.
    if (argv.length === 0) {
      io.err(USAGE);
      return 1;
    }
  }
  const [command, ...args] = argv;
  if (command === undefined) {
    io.err(USAGE);
    return 0;
  }
  const main = ['help', 'list', 'upload', 'load'];
  if (!main.includes(command) && !(command in ACTIONS)) {
    io.err(`Unrecognised command '${command}' -- try 'xen-livepatch help'\n`);
    return 1;
  }
  if ('noHandle' in deps.hypercalls) {
    const why = glibcStrerror(deps.hypercalls.noHandle === 'EACCES' ? 13 : ENOENT);
    io.err(`xencall: error: Could not obtain handle on privileged command interface: ${why}\nfailed to get the handler\n`);
    return 0;
  }
  const tool = new Tool(deps.hypercalls, io, deps.sleepMs ?? ((ms) => sleep(ms)));
  let ret: number;
  switch (command) {
    case 'help':
      io.err(USAGE);
      ret = 0;
      break;
    case 'list':
      ret = await tool.list(args);
      break;
    case 'upload':
      ret = await tool.upload(args);
      break;
    case 'load':
      ret = await tool.load(args);
      break;
    default:
      ret = await tool.action(args, ACTIONS[command as ActionCmd]);
  }
  return exitCodeOf(ret);
}
