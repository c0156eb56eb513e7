/**
 * The executables' one entry (bin/xen-livepatch-double.js, bin/xl-double.js): read which host to
 * answer for, run the tool against it through HostAgent, print, exit. What a hypercall cannot
 * return (the emulated host unreachable, a protocol error, no config) is not dressed up as Xen's
 * output: the double says it in one line on standard error, naming itself, and exits 70
 * (EX_SOFTWARE), so a reader of Xen's output refuses it instead of taking it for an answer.
 */
import { Agent as UndiciAgent } from 'undici';
import { FleetpatchError } from '../errors.ts';
import { HostAgent } from '../agent/client.ts';
import { readDoubleConfig } from './config.ts';
import { agentHypercalls } from './hypercalls.ts';
import { runXenLivepatch, type ToolStreams } from './xen-livepatch.ts';
import { runXl } from './xl.ts';

/** BSD's EX_SOFTWARE: neither Xen tool exits with it. */
export const DOUBLE_FAILURE_EXIT = 70;

export type DoubledTool = 'xen-livepatch' | 'xl';

export interface DoubleMainOptions {
  env: Readonly<Record<string, string | undefined>>;
  streams: ToolStreams;
}

/** Runs one tool with `argv` (without the program name); returns the exit code. */
export async function doubleMain(tool: DoubledTool, argv: readonly string[], opts: DoubleMainOptions): Promise<number> {
  const { streams } = opts;
  // A dispatcher of its own, closed at the end, so the process exits as soon as the tool is done.
  const dispatcher = new UndiciAgent({ connections: 2, pipelining: 1 });
  try {
    const config = await readDoubleConfig(opts.env);
    const agent = new HostAgent({ url: config.url, hostId: config.hostId, token: config.token, dispatcher, ...(config.timeoutMs ? { timeoutMs: config.timeoutMs } : {}) });
    const hypercalls = agentHypercalls(agent);
    if (tool === 'xl') return await runXl(argv, { hypercalls, hostName: config.hostId, streams });
    return await runXenLivepatch(argv, { hypercalls: config.noHandle ? { noHandle: config.noHandle } : hypercalls, streams });
  } catch (e) {
    const what = e instanceof FleetpatchError ? `${e.code}: ${e.message}` : String((e as Error)?.stack ?? e);
    // A line of its own even when the tool was in the middle of one ("Applying x... ").
    streams.err(`${tool} (fleetpatch double): ${what.replace(/\n/g, ' ')}\n`);
    return DOUBLE_FAILURE_EXIT;
  } finally {
    await dispatcher.close();
  }
}

/** process.stdout and process.stderr, written as bytes arrive (the real tool's stdout is unbuffered). */
export const processStreams: ToolStreams = {
  out: (text) => void process.stdout.write(text),
  err: (text) => void process.stderr.write(text),
};
