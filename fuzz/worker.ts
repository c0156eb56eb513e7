/**
 * One fuzzing process for one target, started by fuzz/run.ts (never by hand, except through
 * `npm run fuzz -- --replay`). It runs fast-check properties over the target's arbitrary until its
 * deadline, in rounds of fresh seeds: a failing case is shrunk by fast-check, written to the
 * findings directory, and the next round starts. Before every case it writes the case's input to
 * `--current`, so that when this process hangs in a loop or dies (a Node crash, an out-of-memory
 * abort) the runner still knows which input did it.
 *
 * Messages to the runner (IPC): progress (every ~200 ms: a heartbeat), finding, done.
 */
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import fc from 'fast-check';
import { OracleViolation, SlowCase, cpuMs, limits, type FuzzTarget, type TargetName } from './lib.ts';

export interface WorkerStats {
  cases: number;
  outcomes: Record<string, number>;
  slowestMs: number;
  peakRssBytes: number;
  heapUsedBytes: number;
  figures: Record<string, number | string>;
}

export type FindingKind = 'crash' | 'hang';

export interface Finding {
  kind: FindingKind;
  target: TargetName;
  /** The input, in the target's corpus format. */
  file: string;
  message: string;
  seed: number;
}

export type WorkerMessage =
  | { type: 'progress'; stats: WorkerStats }
  | { type: 'finding'; finding: Finding }
  | { type: 'done'; stats: WorkerStats };

export async function loadTarget(name: TargetName): Promise<FuzzTarget<unknown>> {
  switch (name) {
    case 'payload':
      return (await import('./targets/payload.ts')).payloadTarget as FuzzTarget<unknown>;
    case 'plan':
      return (await import('./targets/plan.ts')).planTarget as FuzzTarget<unknown>;
    case 'http':
      return (await import('./targets/http.ts')).httpTarget as FuzzTarget<unknown>;
  }
}

/** Exit code of a worker whose own generators failed (not a finding: a bug of the fuzzer). */
export const HARNESS_ERROR = 3;

/** How long fast-check may shrink one failing input. */
const SHRINK_MS = 30_000;
/** A case runs several operations, each under --case-ms; the case as a whole gets this many times that. */
const CASE_OPERATIONS = 10;

/** VmHWM: the most resident memory this process ever had (Linux); else the current RSS. */
export function peakRss(): number {
  try {
    const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'));
    if (m) return Number(m[1]) * 1024;
  } catch {
    // not Linux
  }
  return process.memoryUsage.rss();
}

function signature(e: unknown): string {
  const err = e instanceof Error ? e : new Error(String(e));
  const first = `${err.name}: ${err.message}`.split('\n')[0]!.replace(/\d+/g, 'N').slice(0, 200);
  const frame = (err.stack ?? '').split('\n').find((l) => l.includes('/src/')) ?? '';
  return `${first} @ ${frame.trim().replace(/:\d+:\d+\)?$/, '')}`;
}

interface Options {
  target: TargetName;
  seed: number;
  ms: number;
  caseMs: number;
  current: string;
  findings: string;
}

function parseArgs(argv: readonly string[]): Options {
  const get = (k: string) => {
    const i = argv.indexOf(`--${k}`);
    if (i === -1 || argv[i + 1] === undefined) throw new Error(`worker: --${k} is required`);
    return argv[i + 1]!;
  };
  return {
    target: get('target') as TargetName,
    seed: Number(get('seed')),
    ms: Number(get('ms')),
    caseMs: Number(get('case-ms')),
    current: get('current'),
    findings: get('findings'),
  };
}

async function main(): Promise<void> {
  const opts = parseArgs(process.argv.slice(2));
  limits.operationMs = opts.caseMs;
  const send = (m: WorkerMessage) => process.send?.(m);
  const target = await loadTarget(opts.target);
  await target.setup(opts.seed);
  const arb = target.arbitrary();
  const deadline = Date.now() + opts.ms;
  const stats: WorkerStats = { cases: 0, outcomes: {}, slowestMs: 0, peakRssBytes: 0, heapUsedBytes: 0, figures: {} };
  const seen = new Set<string>();
  let lastBeat = Date.now();
  let lastCheck = Date.now();
  const snapshot = (): WorkerStats => ({ ...stats, peakRssBytes: peakRss(), heapUsedBytes: process.memoryUsage().heapUsed, figures: target.figures?.() ?? {} });

  for (let round = 0; Date.now() < deadline - 50; round++) {
    const seed = (opts.seed + round * 0x9e3779b1) >>> 0;
    // Cases counted only until the first failure of a round: fast-check's shrinking runs are not.
    let failing = false;
    let failedAt = 0;
    let details: fc.RunDetails<[unknown]>;
    try {
      details = await fc.check(
        fc.asyncProperty(arb, async (input) => {
          // Shrinking gets a bounded time: past it every candidate passes, so fast-check keeps the
          // smallest failing input found so far.
          if (failing && Date.now() - failedAt > SHRINK_MS) return;
          writeFileSync(opts.current, target.encode(input));
          const t0 = cpuMs();
          let outcome: string | undefined;
          let error: unknown;
          try {
            outcome = await target.run(input);
          } catch (e) {
            error = e;
          }
          const ms = cpuMs() - t0;
          // A whole case (several operations, each timed by the target) has a wider backstop.
          if (error === undefined && ms > opts.caseMs * CASE_OPERATIONS) error = new SlowCase(ms);
          const now = Date.now();
          if (now - lastBeat > 200) {
            lastBeat = now;
            send({ type: 'progress', stats: snapshot() });
            // Let the IPC message out (a synchronous target never yields on its own).
            await new Promise((r) => setImmediate(r));
          }
          if (error !== undefined) {
            if (!failing) failedAt = Date.now();
            failing = true;
            throw error;
          }
          if (!failing) {
            stats.cases++;
            stats.outcomes[outcome!] = (stats.outcomes[outcome!] ?? 0) + 1;
            stats.slowestMs = Math.max(stats.slowestMs, ms);
          }
          if (now - lastCheck > 2000) {
            lastCheck = now;
            // Garbage now and then, so that the peak RSS measures what is held, not what is lazily kept.
            (globalThis as { gc?: () => void }).gc?.();
            await target.check?.();
          }
        }),
        { seed, numRuns: 2 ** 31 - 1, interruptAfterTimeLimit: Math.max(1, deadline - Date.now()), markInterruptAsFailure: false },
      );
    } catch (e) {
      // An error outside the property (in an arbitrary) is a bug of the fuzzer itself: stop.
      process.stderr.write(`fuzz worker: the fuzzer itself failed (seed ${seed}): ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
      process.exit(HARNESS_ERROR);
    }
    if (!details.failed || !details.counterexample) continue;
    const input = details.counterexample[0];
    const e = details.errorInstance;
    const kind: FindingKind = e instanceof SlowCase ? 'hang' : 'crash';
    const sig = `${kind} ${kind === 'hang' ? '' : signature(e)}`;
    if (seen.has(sig)) continue;
    seen.add(sig);
    const bytes = target.encode(input);
    const hash = createHash('sha256').update(bytes).digest('hex').slice(0, 12);
    mkdirSync(opts.findings, { recursive: true });
    const file = path.join(opts.findings, `${opts.target}-${kind}-${hash}${target.extension}`);
    writeFileSync(file, bytes);
    const err = e instanceof Error ? e : new Error(String(e));
    const message = `${err.name}: ${err.message}`;
    writeFileSync(`${file}.txt`, `${message}\n\nseed ${seed} path ${details.counterexamplePath}\n${err instanceof OracleViolation ? JSON.stringify(err.facts) + '\n' : ''}\n${err.stack ?? ''}\n`);
    send({ type: 'finding', finding: { kind, target: opts.target, file, message, seed } });
  }
  await target.teardown();
  // What the process still holds once garbage is collected: bounded, whatever it parsed.
  (globalThis as { gc?: () => void }).gc?.();
  stats.figures = { ...(target.figures?.() ?? {}) };
  const final = { ...snapshot(), heapUsedBytes: process.memoryUsage().heapUsed };
  await new Promise<void>((resolve) => (process.send ? process.send({ type: 'done', stats: final } satisfies WorkerMessage, () => resolve()) : resolve()));
  process.disconnect?.();
}

if (process.argv[1] && import.meta.url.endsWith(path.basename(process.argv[1]))) {
  main().catch((e: unknown) => {
    process.stderr.write(`fuzz worker: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
    process.exit(1);
  });
}
