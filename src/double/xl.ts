/**
 * A double of the few `xl` commands a dom0 agent and Xen's own live-patch tests use, over the
 * hypercalls of one emulated host (hypercalls.ts), as tools/xl of Xen 4.20 prints them:
 *
 * - `xl info [<key>]`: the lines of `xl info` the emulated host can answer, in xl's order, as
 *   `%-23s: %s` (`host`, `xen_major`, `xen_minor`, `xen_extra`, `xen_version`, `build_id`); with a
 *   key, the value of each line that starts with it, alone (`xl info build_id`, `xl info
 *   xen_extra`: what Xen's livepatch tests read to see "Hello World"). The rest of the real list
 *   describes hardware the emulator does not have, and is not made up.
 * - `xl debug-keys <keys>`: nothing printed, exit 0 (key 'x' dumps the live patches to the console).
 * - `xl dmesg`: the console, i.e. the live-patch debug dump.
 */
import type { Hypercalls } from './hypercalls.ts';
import type { ToolStreams } from './xen-livepatch.ts';

export interface XlDeps {
  hypercalls: Hypercalls;
  /** The host's name, as `xl info host` prints dom0's host name. */
  hostName: string;
  streams: ToolStreams;
}

const KNOWN = ['info', 'debug-keys', 'dmesg'];

/** The lines of `xl info` the double can tell, in the order xl prints them. */
async function infoLines(deps: XlDeps): Promise<[string, string][]> {
  const xc = deps.hypercalls;
  const [major, minor, extra, buildId] = await Promise.all([xc.call('xen_major_version'), xc.call('xen_minor_version'), xc.call('xen_extra_version'), xc.buildId()]);
  const lines: [string, string][] = [['host', deps.hostName]];
  if (typeof major === 'number') lines.push(['xen_major', String(major)]);
  if (typeof minor === 'number') lines.push(['xen_minor', String(minor)]);
  if (typeof extra === 'string') lines.push(['xen_extra', extra]);
  if (typeof major === 'number' && typeof minor === 'number' && typeof extra === 'string') lines.push(['xen_version', `${major}.${minor}${extra}`]);
  lines.push(['build_id', buildId]);
  return lines;
}

/** One run of `xl <argv>`; returns the exit code. */
export async function runXl(argv: readonly string[], deps: XlDeps): Promise<number> {
  const io = deps.streams;
  const [command, ...args] = argv;
  if (command === undefined || !KNOWN.includes(command)) {
    // xl's own answer to a command it does not have (the double has only these three).
    io.err(`command not implemented\n`);
    return 1;
  }
  if (command === 'debug-keys') return 0;
  if (command === 'dmesg') {
    const text = await deps.hypercalls.console();
    io.out(text.endsWith('\n') || text === '' ? text : `${text}\n`);
    return 0;
  }
  const lines = await infoLines(deps);
  if (args.length === 0) {
    io.out(lines.map(([k, v]) => `${k.padEnd(23)}: ${v}\n`).join(''));
    return 0;
  }
  // With an argument, xl prints what follows ": " on every line that starts with it.
  const key = args[0]!;
  io.out(lines.filter(([k]) => k.startsWith(key)).map(([, v]) => `${v}\n`).join(''));
  return 0;
}
