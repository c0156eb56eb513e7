/**
 * Runs one of Xen's tools the way a dom0 agent must: the program and an argument vector (never a
 * shell, so a payload name is one argument whatever it holds), the C locale (the tools print
 * strerror(3), which a locale translates), its own process group so a timeout kills everything it
 * started, and bounded output: past the limit it is killed and that is the error, not a cut list
 * read as a short one. Returns what the tool printed and its exit code for the parsers, or throws:
 * TOOL_MISSING, HOST_TOOL_TIMEOUT, HOST_TOOL_OUTPUT (too much), HOST_TOOL_FAILED (a signal).
 */
import { spawn } from 'node:child_process';
import { FleetpatchError } from '../errors.ts';
import type { ToolExit } from './tool-text.ts';

export interface RunLimits {
  /** From the start until both streams are closed. */
  timeoutMs: number;
  maxStdoutBytes: number;
  maxStderrBytes: number;
}

/** xen-livepatch prints a row of at most about 200 bytes plus a payload's .modinfo; 4 MiB holds a thousand. */
export const DEFAULT_LIMITS: RunLimits = { timeoutMs: 10_000, maxStdoutBytes: 4 * 1024 * 1024, maxStderrBytes: 64 * 1024 };

/** The tools are named by absolute path; PATH is only for what they might run themselves. */
const TOOL_ENV = { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', LC_ALL: 'C' };

export interface ToolRun extends ToolExit {
  stdout: Uint8Array;
  stderr: Uint8Array;
}

const lossy = new TextDecoder('utf-8');
/** Some of what a killed tool printed, for the error's details. */
const tail = (chunks: Buffer[]) => lossy.decode(Buffer.concat(chunks).subarray(0, 4096));

/** `what` names the command for sentences ("xen-livepatch apply xen_nop"). */
export function runTool(file: string, args: readonly string[], limits: RunLimits, what: string): Promise<ToolRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { shell: false, detached: true, stdio: ['ignore', 'pipe', 'pipe'], env: TOOL_ENV });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    const size = { out: 0, err: 0 };
    let spawned = false;
    let flood: 'standard output' | 'standard error' | undefined;
    let timedOut = false;

    const killGroup = () => {
      // Negative pid: the whole group the tool leads, its children too. The group exists for as
      // long as any of them lives, so its id cannot have been handed to anyone else meanwhile.
      if (child.pid === undefined) return;
      try {
        process.kill(-child.pid, 'SIGKILL');
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ESRCH') throw e;
      }
    };
    const take = (chunks: Buffer[], key: 'out' | 'err', max: number, stream: 'standard output' | 'standard error') => (chunk: Buffer) => {
      if (flood) return;
      const room = max - size[key];
      if (chunk.length > room) {
        chunks.push(chunk.subarray(0, room));
        size[key] = max;
        flood = stream;
        killGroup();
        return;
      }
      chunks.push(chunk);
      size[key] += chunk.length;
    };
    child.stdout.on('data', take(out, 'out', limits.maxStdoutBytes, 'standard output'));
    child.stderr.on('data', take(err, 'err', limits.maxStderrBytes, 'standard error'));

    const timer = setTimeout(() => {
      timedOut = true;
      killGroup();
    }, limits.timeoutMs);

    child.once('spawn', () => {
      spawned = true;
    });
    child.once('error', (e: NodeJS.ErrnoException) => {
      if (spawned) return; // a kill that failed; 'close' still comes
      clearTimeout(timer);
      if (e.code === 'ENOENT' || e.code === 'EACCES' || e.code === 'ENOTDIR') {
        const why = e.code === 'EACCES' ? 'is not executable by the agent' : 'does not exist';
        reject(new FleetpatchError('TOOL_MISSING', `${what}: ${file} ${why} (${e.code}); give the tool's path with --${what.split(' ')[0]} PATH`, { file, errno: e.code }));
      } else {
        reject(new FleetpatchError('HOST_TOOL_FAILED', `${what}: ${file} could not be started: ${e.code ?? e.message}`, { file, errno: e.code }));
      }
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      const partial = { file, args, stdout: tail(out), stderr: tail(err) };
      if (timedOut) {
        reject(new FleetpatchError('HOST_TOOL_TIMEOUT', `${what} did not finish within ${limits.timeoutMs} ms; it was killed with every process it started`, { ...partial, timeoutMs: limits.timeoutMs }));
      } else if (flood) {
        const max = flood === 'standard output' ? limits.maxStdoutBytes : limits.maxStderrBytes;
        reject(new FleetpatchError('HOST_TOOL_OUTPUT', `${what} printed more than ${max} bytes on its ${flood}; fleetpatch stopped reading there and killed it`, { ...partial, limitBytes: max }));
      } else if (code === null) {
        reject(new FleetpatchError('HOST_TOOL_FAILED', `${what} was killed by ${signal ?? 'a signal'} before it finished`, { ...partial, signal }));
      } else {
        resolve({ exitCode: code, stdout: new Uint8Array(Buffer.concat(out)), stderr: new Uint8Array(Buffer.concat(err)) });
      }
    });
  });
}
