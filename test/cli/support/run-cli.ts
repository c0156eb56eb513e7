/**
 * `fleetpatch <args>` run in the test's own process: `main()` exactly as bin/fleetpatch.js calls
 * it, with everything a user would see on the terminal. That is what the command writes through
 * its CliIO and anything else written to stdout or stderr meanwhile: the logger writes to fd 2
 * itself, so fs.writeSync on fds 1 and 2, process.stdout/stderr.write and console are captured
 * too. A spawned `node bin/fleetpatch.js` costs a second or two of CPU to start (tsx, the
 * modules); this costs milliseconds, so a unit test can try a hundred hostile command lines.
 *
 * The capture is process-wide, so commands run one at a time: a call made while another runs
 * waits for it. `env` is set for the run and restored.
 */
import fs from 'node:fs';
import { main } from '../../../src/cli/main.ts';
import type { CliIO } from '../../../src/cli/io.ts';

export interface CliRun {
  code: number;
  stdout: string;
  stderr: string;
}

/** The settings fleetpatch reads (src/runtime/config.ts); a run starts from none of them but `env`'s. */
const SETTINGS = /^(FLEETPATCH_|TEMPORAL_|PGSSL|DATABASE_URL$|LOG_LEVEL$|NO_COLOR$)/;

let queue: Promise<unknown> = Promise.resolve();

export function runCli(args: string[], env: Record<string, string> = {}): Promise<CliRun> {
  const run = queue.then(() => runNow(args, env));
  queue = run.catch(() => undefined);
  return run;
}

async function runNow(args: string[], env: Record<string, string>): Promise<CliRun> {
  const out: string[] = [];
  const err: string[] = [];
  const sink = (fd: number) => (fd === 1 ? out : fd === 2 ? err : undefined);
  const text = (chunk: unknown) => (typeof chunk === 'string' ? chunk : Buffer.from(chunk as Uint8Array).toString());

  const savedEnv = { ...process.env };
  for (const k of Object.keys(process.env)) if (SETTINGS.test(k)) delete process.env[k];
  Object.assign(process.env, env);

  const saved = { stdout: process.stdout.write, stderr: process.stderr.write, writeSync: fs.writeSync, console: { ...console } };
  const streamWrite = (to: string[]) =>
    ((chunk: unknown, encodingOrCallback?: unknown, callback?: unknown) => {
      to.push(text(chunk));
      const cb = typeof encodingOrCallback === 'function' ? encodingOrCallback : callback;
      if (typeof cb === 'function') queueMicrotask(() => (cb as () => void)());
      return true;
    }) as typeof process.stdout.write;
  process.stdout.write = streamWrite(out);
  process.stderr.write = streamWrite(err);
  fs.writeSync = ((fd: number, buffer: unknown, ...rest: unknown[]) => {
    const to = sink(fd);
    if (!to) return (saved.writeSync as (...a: unknown[]) => number)(fd, buffer, ...rest);
    const s = text(buffer);
    to.push(s);
    return Buffer.byteLength(s);
  }) as typeof fs.writeSync;
  const line = (to: string[]) => (...a: unknown[]) => to.push(`${a.map(String).join(' ')}\n`);
  Object.assign(console, { log: line(out), info: line(out), debug: line(out), warn: line(err), error: line(err), trace: line(err) });

  const io: CliIO = { out: (l) => out.push(`${l}\n`), err: (l) => err.push(`${l}\n`), isTTY: false };
  try {
    const code = await main(args, io);
    return { code, stdout: out.join(''), stderr: err.join('') };
  } finally {
    process.stdout.write = saved.stdout;
    process.stderr.write = saved.stderr;
    fs.writeSync = saved.writeSync;
    Object.assign(console, saved.console);
    for (const k of Object.keys(process.env)) if (!(k in savedEnv)) delete process.env[k];
    Object.assign(process.env, savedEnv);
  }
}
