/**
 * `fleetpatch hv [--fleet-file F] --host <id> <command>`: Xen's xen-livepatch tool against one
 * emulated host. Same commands, same messages, same exit codes (0 success, 2 for EAGAIN/EBUSY
 * "retry later", 1 otherwise), so an operator used to Xen feels at home; the difference is that
 * wherever Xen prints only "Error 22: Invalid argument", we also print the reason it left on the
 * hypervisor console. Plus `dump` (Xen's debug key 'x') and `call <function>`.
 *
 * The flow of each command follows tools/misc/xen-livepatch.c (Xen 4.14+).
 */
import { readInputFile } from '../runtime/files.ts';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { FleetpatchError, XEN_ERRNO, XenError, strerror } from '../errors.ts';
import { HostAgent } from '../agent/client.ts';
import { defaultFleetFilePath, findFleetHost, readFleetFile } from '../agent/fleet-file.ts';
import { STATE_NUMBER, XEN_LIVEPATCH_NAME_SIZE, describeCall, type ActionCmd } from '../agent/contract.ts';
import type { WireCall, WireStatus } from '../agent/contract.ts';
import { parseCommandArgs } from './args.ts';
import type { CliIO, Command } from './io.ts';

const { EAGAIN, EBUSY, EINVAL, ENOENT } = XEN_ERRNO;
/** The tool passes 30 ms and sleeps twice that before it looks at the result. */
const HYPERVISOR_TIMEOUT_NS = 30_000_000;
const DELAY_MS = (2 * HYPERVISOR_TIMEOUT_NS) / 1e6;

const STATE_NAME: Record<number, string> = { 1: 'CHECKED', 2: 'APPLIED' };
function state2str(state: number): string {
  return STATE_NAME[state] ?? 'unknown';
}

interface ActionOption {
  allow: number;
  /** The state after success; -ENOENT for unload (the payload is gone). */
  expected: number;
  name: ActionCmd;
  verb: string;
}

const ACTIONS: Record<ActionCmd, ActionOption> = {
  apply: { allow: STATE_NUMBER.CHECKED, expected: STATE_NUMBER.APPLIED, name: 'apply', verb: 'Applying' },
  revert: { allow: STATE_NUMBER.APPLIED, expected: STATE_NUMBER.CHECKED, name: 'revert', verb: 'Reverting' },
  unload: { allow: STATE_NUMBER.CHECKED, expected: -ENOENT, name: 'unload', verb: 'Unloading' },
  replace: { allow: STATE_NUMBER.CHECKED, expected: STATE_NUMBER.APPLIED, name: 'replace', verb: 'Replacing all live patches with' },
};

function showHelp(io: CliIO): void {
  for (const line of [
    'fleetpatch hv: xen-livepatch against an emulated host',
    'Usage: fleetpatch hv [--fleet-file <file>] --host <id> [--timeout <ms>] <command> [args] [command-flags]',
    ` <name> An unique name of payload. Up to ${XEN_LIVEPATCH_NAME_SIZE} characters.`,
    'Commands:',
    '  help                   display this help',
    '  upload <name> <file>   upload file <file> with <name> name',
    '  list                   list payloads uploaded.',
    '  apply <name> [flags]   apply <name> patch.',
    '    Supported flags:',
    '      --nodeps           Disable inter-module buildid dependency check.',
    '                         Check only against hypervisor buildid.',
    '  revert <name>          revert name <name> patch.',
    '  replace <name>         apply <name> patch and revert all others.',
    '  unload <name>          unload name <name> patch.',
    '  load <file> [flags]    upload and apply <file> with name as the <file> name',
    '    Supported flags:',
    '      --nodeps           Disable inter-module buildid dependency check.',
    '                         Check only against hypervisor buildid.',
    '  dump                   the hypervisor\'s live-patch debug dump (debug key \'x\').',
    '  call <function>        what calling <function> returns now, and which payload provides it.',
    'Exit codes: 0 success, 2 retry later (EAGAIN, EBUSY), 1 otherwise.',
    '--timeout is how long to wait for each answer of the host (default 10000 ms).',
    `The fleet file defaults to <FLEETPATCH_DATA_DIR>/fleet.json (written by \`fleetpatch emulate\`).`,
  ]) {
    io.err(line);
  }
}

/** Xen's tool answers a wrong number of arguments with its help text and -1. */
function wrongArguments(io: CliIO): number {
  showHelp(io);
  return -1;
}

/** "Error 22: Invalid argument", then the reason Xen leaves on its console. */
function printError(io: CliIO, errno: number, reason: string | null | undefined): void {
  io.err(`Error ${errno}: ${strerror(errno)}`);
  if (reason) io.err(`Reason: ${reason}`);
}

const FILE_ERRNO: Record<string, [number, string]> = {
  ENOENT: [2, 'No such file or directory'],
  EACCES: [13, 'Permission denied'],
  EISDIR: [21, 'Is a directory'],
  ENOTDIR: [20, 'Not a directory'],
  EMFILE: [24, 'Too many open files'],
};

function getName(io: CliIO, name: string): boolean {
  if (name.length > XEN_LIVEPATCH_NAME_SIZE) {
    io.err(`ID must be no more than ${XEN_LIVEPATCH_NAME_SIZE} characters.`);
    return false;
  }
  return true;
}

class Tool {
  constructor(
    private readonly agent: HostAgent,
    private readonly io: CliIO,
  ) {}

  async list(args: string[]): Promise<number> {
    const { io } = this;
    if (args.length) return wrongArguments(io);
    let page;
    try {
      page = await this.agent.listAll();
    } catch (e) {
      if (!(e instanceof XenError)) throw e;
      io.err('Failed to get list sizes.');
      printError(io, e.errno, e.message);
      return e.errno;
    }
    if (page.entries.length === 0) {
      io.out('Nothing to list');
      return 0;
    }
    io.out(' ID                                     | status     | metadata');
    io.out('----------------------------------------+------------+---------------');
    for (const p of page.entries) {
      const rc = p.rc ? ` (${-p.rc}, ${strerror(-p.rc)})` : '';
      io.out(`${p.name.padEnd(40)}| ${p.state}${rc}    | ${p.metadata.join(';')}`);
    }
    for (const p of page.entries) if (p.rc && p.reason) io.err(`Reason (${p.name}): ${p.reason}`);
    return 0;
  }

  async upload(args: string[]): Promise<number> {
    const { io } = this;
    if (args.length !== 2) return wrongArguments(io);
    const [name, file] = args as [string, string];
    if (!getName(io, name)) return EINVAL;
    let bytes: Uint8Array;
    try {
      // A regular file of at most 2 MiB (runtime/files.ts): a FIFO or /dev/zero is refused, not read.
      bytes = await readInputFile(file, 'payload');
    } catch (e) {
      if (e instanceof XenError) {
        io.out(`Uploading ${file}... failed`);
        printError(io, e.errno, e.message);
        return e.errno;
      }
      const code = String((e as FleetpatchError).details?.errno ?? (e as NodeJS.ErrnoException).code ?? '');
      const [n, text] = FILE_ERRNO[code] ?? [(os.constants.errno as Record<string, number>)[code] ?? EINVAL, (e as Error).message];
      io.err(`Could not open ${file}.`);
      io.err(`Error ${n}: ${text}`);
      return n;
    }
    try {
      await this.agent.upload(name, bytes);
    } catch (e) {
      if (!(e instanceof XenError)) throw e;
      io.out(`Uploading ${file}... failed`);
      printError(io, e.errno, e.message);
      return e.errno;
    }
    io.out(`Uploading ${file}... completed`);
    return 0;
  }

  async action(args: string[], opt: ActionOption, nodeps: boolean): Promise<number> {
    const { io, agent } = this;
    if (args.length !== 1) return wrongArguments(io);
    const name = args[0]!;
    if (!getName(io, name)) return EINVAL;

    let status: WireStatus;
    try {
      status = await agent.get(name);
    } catch (e) {
      if (!(e instanceof XenError)) throw e;
      io.err(`Failed to get status of ${name}.`);
      printError(io, e.errno, e.message);
      return e.errno;
    }
    if (status.rc === -EAGAIN) {
      io.err(`Cannot execute ${opt.name}.`);
      io.err('Operation already in progress.');
      return EAGAIN;
    }
    const state = STATE_NUMBER[status.state];
    if (state === opt.expected) {
      io.out('No action needed.');
      return 0;
    }
    if (!(opt.allow & state)) {
      io.err(`${name} is in the wrong state.`);
      io.err(`Current state: ${state2str(state)}`);
      io.err(`Expected state: ${state2str(opt.allow)}`);
      return -1;
    }

    const line = `${opt.verb} ${name}... `;
    try {
      await agent.action(name, opt.name, { timeoutNs: HYPERVISOR_TIMEOUT_NS, nodeps: opt.name === 'apply' && nodeps });
    } catch (e) {
      if (!(e instanceof XenError)) throw e;
      io.out(`${line}failed`);
      printError(io, e.errno, e.message);
      return e.errno;
    }

    await sleep(DELAY_MS);
    let rc: number;
    let reason: string | null = null;
    try {
      status = await agent.get(name);
      rc = status.rc;
      reason = status.reason;
    } catch (e) {
      if (!(e instanceof XenError)) throw e;
      rc = -e.errno;
      reason = e.message;
    }
    if (rc === -EAGAIN) {
      io.out(`${line}failed`);
      io.err("Operation didn't complete.");
      return EAGAIN;
    }
    if (rc === 0) rc = STATE_NUMBER[status.state];
    if (opt.expected === rc) {
      io.out(`${line}completed`);
      return 0;
    }
    io.out(`${line}failed`);
    if (rc < 0) {
      printError(io, -rc, reason);
      return -rc;
    }
    io.err(`${name} is in the wrong state.`);
    io.err(`Current state: ${state2str(rc)}`);
    io.err(`Expected state: ${state2str(opt.expected)}`);
    return -1;
  }

  /** Upload then apply; if the apply fails, unload again. The name is the file's without its last extension. */
  async load(args: string[], nodeps: boolean): Promise<number> {
    if (args.length !== 1) return wrongArguments(this.io);
    const file = args[0]!;
    const base = path.basename(file);
    const dot = base.lastIndexOf('.');
    const name = dot === -1 ? base : base.slice(0, dot);
    const rc = await this.upload([name, file]);
    if (rc) return rc;
    const applied = await this.action([name], ACTIONS.apply, nodeps);
    if (applied) await this.action([name], ACTIONS.unload, false);
    return applied;
  }

  async dump(args: string[]): Promise<number> {
    if (args.length) return wrongArguments(this.io);
    for (const line of (await this.agent.dump()).replace(/\n$/, '').split('\n')) this.io.out(line);
    return 0;
  }

  async call(args: string[]): Promise<number> {
    const { io } = this;
    if (args.length !== 1) return wrongArguments(io);
    let r: WireCall;
    try {
      r = await this.agent.call(args[0]!);
    } catch (e) {
      if (!(e instanceof XenError)) throw e;
      printError(io, e.errno, e.message);
      return e.errno;
    }
    io.out(describeCall(r, r.function || args[0]!));
    return 0;
  }
}

/** xen-livepatch's main(): 0, 2 for EAGAIN/EBUSY, 1 for anything else. */
function exitCode(ret: number): number {
  if (ret === 0) return 0;
  if (ret === EAGAIN || ret === EBUSY) return 2;
  return 1;
}

export const hvCommand: Command = async (args, io) => {
  const { values, positionals } = parseCommandArgs(
    args,
    {
      'fleet-file': { type: 'string' },
      host: { type: 'string' },
      nodeps: { type: 'boolean' },
      timeout: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    'hv',
  );
  const [command, ...rest] = positionals;
  if (values.help || command === undefined || command === 'help') {
    showHelp(io);
    return 0;
  }
  const known = ['list', 'upload', 'load', 'apply', 'revert', 'replace', 'unload', 'dump', 'call'];
  if (!known.includes(command)) {
    io.err(`Unrecognised command '${command}' -- try 'fleetpatch hv help'`);
    return 1;
  }
  if (values.nodeps && command !== 'apply' && command !== 'load') {
    io.err('Unsupported flag: --nodeps.');
    return 1;
  }
  if (!values.host) throw new FleetpatchError('USAGE', 'hv: --host <id> is required (a host id from the fleet file, e.g. host-0000)');
  const timeoutMs = values.timeout === undefined ? undefined : Number(values.timeout);
  if (timeoutMs !== undefined && !(timeoutMs > 0)) throw new FleetpatchError('USAGE', `hv: --timeout must be a number of milliseconds (got ${values.timeout})`);

  const fleetFile = values['fleet-file'] ?? defaultFleetFilePath();
  const fleet = await readFleetFile(fleetFile);
  const host = findFleetHost(fleet, values.host);
  const agent = new HostAgent({ url: fleet.url, hostId: host.id, token: host.token, ...(timeoutMs ? { timeoutMs } : {}) });
  const tool = new Tool(agent, io);
  const nodeps = Boolean(values.nodeps);

  let ret: number;
  switch (command) {
    case 'list':
      ret = await tool.list(rest);
      break;
    case 'upload':
      ret = await tool.upload(rest);
      break;
    case 'load':
      ret = await tool.load(rest, nodeps);
      break;
    case 'dump':
      ret = await tool.dump(rest);
      break;
    case 'call':
      ret = await tool.call(rest);
      break;
    default:
      ret = await tool.action(rest, ACTIONS[command as ActionCmd], nodeps);
  }
  return exitCode(ret);
};
