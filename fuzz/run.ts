/**
 * npm run fuzz -- --minutes N [--target payload|plan|http|all] [--seed S] [--case-ms MS]
 *                 [--findings DIR] [--max-old-space MIB]
 * npm run fuzz -- --replay FILE [--target T]
 *
 * Long fuzzing, outside CI (docs/reliability.md, "Fuzzing"). The budget is split evenly across the
 * targets, which run one after the other, each in its own Node process (fuzz/worker.ts) so that a
 * Node crash, an out-of-memory abort or a case that never returns is caught and named instead of
 * ending the run:
 *   - an operation (a parse, an upload check, one HTTP request) over --case-ms (default 1000 ms)
 *     is a hang (in CPU time, so a busy machine does not make one), and so is a worker that sends
 *     nothing for 60 s (it is killed, and the input it was on is kept);
 *   - a worker that dies is a crash (its input is kept, its stderr printed), and a fresh one goes
 *     on with the rest of the budget.
 * Per target it prints the cases run, the outcomes (accepted; refused by errno; refused by code),
 * the crashes and hangs, the slowest case and the peak RSS; it exits 1 if anything was found.
 * Findings go to --findings (default fuzz/findings/, not committed): an input file and a .txt
 * with the error, the seed and fast-check's path. Inputs worth keeping become regression tests
 * in test/fuzz-corpus/.
 */
import { fork } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, copyFileSync, existsSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { TARGETS, formatCount, mib, outcomeClass, type TargetName } from './lib.ts';
import { HARNESS_ERROR, loadTarget, type Finding, type WorkerMessage, type WorkerStats } from './worker.ts';

const here = path.dirname(fileURLToPath(import.meta.url));

interface Options {
  minutes: number;
  targets: TargetName[];
  seed: number;
  caseMs: number;
  findings: string;
  maxOldSpaceMb: number;
  replay: string | null;
}

function usage(message: string): never {
  process.stderr.write(`fuzz: ${message}\nusage: npm run fuzz -- --minutes N [--target payload|plan|http|all] [--seed S] [--case-ms MS] [--findings DIR]\n       npm run fuzz -- --replay FILE [--target payload|plan|http]\n`);
  process.exit(2);
}

function parseArgs(argv: readonly string[]): Options {
  const o: Options = { minutes: 10, targets: [...TARGETS], seed: Date.now() % 2 ** 31, caseMs: 1000, findings: path.join(here, 'findings'), maxOldSpaceMb: 1024, replay: null };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i]!;
    const v = argv[i + 1];
    const num = (min: number, max: number) => {
      const n = Number(v);
      if (v === undefined || !/^\d+(\.\d+)?$/.test(v) || n < min || n > max) usage(`${k} takes a number from ${min} to ${max}`);
      i++;
      return n;
    };
    switch (k) {
      case '--minutes':
        o.minutes = num(0.05, 24 * 60);
        break;
      case '--seed':
        o.seed = Math.floor(num(0, 2 ** 31 - 1));
        break;
      case '--case-ms':
        o.caseMs = num(10, 60_000);
        break;
      case '--max-old-space':
        o.maxOldSpaceMb = num(128, 16_384);
        break;
      case '--target': {
        if (v === undefined) usage('--target takes payload, plan, http or all');
        const names = v === 'all' ? [...TARGETS] : v.split(',');
        for (const n of names) if (!TARGETS.includes(n as TargetName)) usage(`unknown target "${n}"`);
        o.targets = names as TargetName[];
        i++;
        break;
      }
      case '--findings':
        if (v === undefined) usage('--findings takes a directory');
        o.findings = path.resolve(v);
        i++;
        break;
      case '--replay':
        if (v === undefined) usage('--replay takes a file');
        o.replay = path.resolve(v);
        i++;
        break;
      default:
        usage(`unknown option ${k}`);
    }
  }
  return o;
}

interface TargetReport {
  target: TargetName;
  cases: number;
  ms: number;
  outcomes: Record<string, number>;
  slowestMs: number;
  peakRssBytes: number;
  /** The most heap a worker held at its end, after a full garbage collection. */
  heapAfterGcBytes: number;
  figures: Record<string, number | string>;
  findings: Finding[];
  workers: number;
  harnessErrors: number;
}

function merge(into: TargetReport, s: WorkerStats): void {
  into.cases += s.cases;
  for (const [k, n] of Object.entries(s.outcomes)) into.outcomes[k] = (into.outcomes[k] ?? 0) + n;
  into.slowestMs = Math.max(into.slowestMs, s.slowestMs);
  into.peakRssBytes = Math.max(into.peakRssBytes, s.peakRssBytes);
  for (const [k, v] of Object.entries(s.figures)) {
    const prev = into.figures[k];
    into.figures[k] = typeof v === 'number' && typeof prev === 'number' ? (k.startsWith('max') || k.startsWith('largest') ? Math.max(prev, v) : prev + v) : v;
  }
}

/** Runs one target for `ms`, restarting its worker after a crash or a hang. */
async function runTarget(target: TargetName, ms: number, opts: Options): Promise<TargetReport> {
  const report: TargetReport = { target, cases: 0, ms: 0, outcomes: {}, slowestMs: 0, peakRssBytes: 0, heapAfterGcBytes: 0, figures: {}, findings: [], workers: 0, harnessErrors: 0 };
  const started = Date.now();
  const scratch = mkdtempSync(path.join(os.tmpdir(), `fleetpatch-fuzz-${target}-`));
  try {
    while (Date.now() - started < ms - 500) {
      const remaining = ms - (Date.now() - started);
      const current = path.join(scratch, `current-${report.workers}`);
      const seed = (opts.seed + report.workers * 1_000_003) % 2 ** 31;
      report.workers++;
      const child = fork(path.join(here, 'worker.ts'), ['--target', target, '--seed', String(seed), '--ms', String(Math.floor(remaining)), '--case-ms', String(opts.caseMs), '--current', current, '--findings', opts.findings], {
        execArgv: ['--import', 'tsx', '--expose-gc', `--max-old-space-size=${opts.maxOldSpaceMb}`],
        stdio: ['ignore', 'inherit', 'pipe', 'ipc'],
      });
      let stderr = '';
      child.stderr!.on('data', (d: Buffer) => {
        stderr = (stderr + d.toString()).slice(-8192);
      });
      let last: WorkerStats | null = null;
      let done = false;
      let heard = Date.now();
      const stall = Math.max(60_000, opts.caseMs * 60);
      // Setting up (gcc fixtures, a server) may take a while before the first case.
      let firstHeard = false;
      child.on('message', (m: WorkerMessage) => {
        heard = Date.now();
        firstHeard = true;
        if (m.type === 'progress') last = m.stats;
        else if (m.type === 'done') {
          last = m.stats;
          done = true;
        } else if (m.type === 'finding') {
          report.findings.push(m.finding);
          process.stdout.write(`  ${m.finding.kind.toUpperCase()} in ${target}: ${m.finding.message.split('\n')[0]!.slice(0, 300)}\n    input: ${path.relative(process.cwd(), m.finding.file)}\n`);
        }
      });
      let hung = false;
      const watchdog = setInterval(() => {
        const limit = firstHeard ? stall : Math.max(stall, 180_000);
        if (Date.now() - heard > limit) {
          hung = true;
          child.kill('SIGKILL');
        }
      }, 500);
      const exit = await new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
      clearInterval(watchdog);
      if (last) merge(report, last);
      if (done && last) report.heapAfterGcBytes = Math.max(report.heapAfterGcBytes, (last as WorkerStats).heapUsedBytes);
      if (done && exit.code === 0) break;
      if (exit.code === HARNESS_ERROR) {
        process.stdout.write(`  the ${target} fuzzer itself failed; not a finding:\n${stderr}\n`);
        report.harnessErrors++;
        break;
      }
      // A hang the worker could not report, or a crash of the process itself: keep the input.
      const kind = hung ? 'hang' : 'crash';
      mkdirSync(opts.findings, { recursive: true });
      let file = '(no input: it died before its first case)';
      if (existsSync(current)) {
        const ext = (await loadTarget(target)).extension;
        file = path.join(opts.findings, `${target}-${kind}-worker-${seed}${ext}`);
        copyFileSync(current, file);
      }
      const why = hung ? `the worker sent nothing for ${stall / 1000} s (killed)` : `the worker died (exit ${exit.code ?? exit.signal})`;
      // V8's fatal errors say what happened first, then a native stack: keep that line.
      const lines = stderr.trim().split('\n');
      const fatal = lines.filter((l) => /FATAL ERROR|heap out of memory|Error:/.test(l)).slice(0, 2);
      const detail = [...fatal, ...lines.slice(-4)].join(' | ');
      const finding: Finding = { kind, target, file, message: `${why}${detail ? `: ${detail}` : ''}. The input is the last case that started; the worker may have died between cases (generating the next one)`, seed };
      report.findings.push(finding);
      process.stdout.write(`  ${kind.toUpperCase()} in ${target}: ${finding.message.slice(0, 600)}\n    input: ${path.relative(process.cwd(), file)}\n`);
      if (!firstHeard && !existsSync(current)) break; // it cannot even start: do not loop
    }
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
  report.ms = Date.now() - started;
  return report;
}

function describe(r: TargetReport): string {
  const byClass = new Map<string, { n: number; kinds: number }>();
  let accepted = 0;
  for (const [o, n] of Object.entries(r.outcomes)) {
    if (!o.startsWith('refused ')) {
      accepted += o === 'accepted' ? n : 0;
      continue;
    }
    const c = outcomeClass(o);
    const e = byClass.get(c) ?? { n: 0, kinds: 0 };
    e.n += n;
    e.kinds++;
    byClass.set(c, e);
  }
  const other = Object.entries(r.outcomes).filter(([o]) => !o.startsWith('refused ') && o !== 'accepted');
  const isErrno = (c: string) => /^E[A-Z0-9]+$/.test(c) && !c.includes('_');
  const fmt = (filter: (c: string) => boolean) =>
    [...byClass].filter(([c]) => filter(c)).sort((a, b) => b[1].n - a[1].n).map(([c, e]) => `${c} ${formatCount(e.n)}${e.kinds > 1 ? ` (${e.kinds} checks)` : ''}`).join(', ') || 'none';
  const crashes = r.findings.filter((f) => f.kind === 'crash').length;
  const hangs = r.findings.filter((f) => f.kind === 'hang').length;
  const secs = r.ms / 1000;
  const lines = [
    `${r.target}: ${formatCount(r.cases)} cases in ${secs.toFixed(1)} s (${formatCount(Math.round(r.cases / Math.max(secs, 0.001)))}/s)`,
    `  accepted ${formatCount(accepted)}${other.length ? `; ${other.sort((a, b) => b[1] - a[1]).map(([o, n]) => `${o} ${formatCount(n)}`).join(', ')}` : ''}`,
    `  refused by errno: ${fmt(isErrno)}`,
    `  refused by code: ${fmt((c) => !isErrno(c))}`,
    `  distinct outcomes ${Object.keys(r.outcomes).length}; slowest case ${r.slowestMs.toFixed(0)} ms of CPU; peak RSS ${mib(r.peakRssBytes)}, heap after GC ${mib(r.heapAfterGcBytes)}${r.workers > 1 ? `; ${r.workers} worker processes` : ''}`,
  ];
  const figures = Object.entries(r.figures);
  if (figures.length) lines.push(`  ${figures.map(([k, v]) => `${k} ${typeof v === 'number' ? formatCount(v) : v}`).join(', ')}`);
  lines.push(`  crashes ${crashes}, hangs ${hangs}`);
  return lines.join('\n');
}

async function replay(file: string, opts: Options): Promise<number> {
  const guess: TargetName | undefined = opts.targets.length === 1 ? opts.targets[0] : file.endsWith('.bin') ? 'payload' : file.endsWith('.json') ? 'http' : file.endsWith('.yaml') ? 'plan' : undefined;
  if (!guess) usage('say which target the file is for with --target');
  const target = await loadTarget(guess);
  await target.setup(opts.seed);
  try {
    const t0 = performance.now();
    const outcome = await target.run(target.decode(new Uint8Array(readFileSync(file))));
    process.stdout.write(`${guess}: ${outcome} (${(performance.now() - t0).toFixed(1)} ms)\n`);
    return 0;
  } catch (e) {
    process.stdout.write(`${guess}: CRASH: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
    return 1;
  } finally {
    await target.teardown();
  }
}

async function main(): Promise<void> {
  const opts = parseArgs(process.argv.slice(2));
  if (opts.replay) process.exit(await replay(opts.replay, opts));
  const totalMs = opts.minutes * 60_000;
  const each = totalMs / opts.targets.length;
  process.stdout.write(`fuzz: ${opts.targets.join(', ')} for ${opts.minutes} min (${(each / 1000).toFixed(0)} s each), seed ${opts.seed}, hang = an operation over ${opts.caseMs} ms of CPU (+1 ms per KiB of input)\n`);
  const reports: TargetReport[] = [];
  for (const t of opts.targets) {
    const r = await runTarget(t, each, opts);
    reports.push(r);
    process.stdout.write(`${describe(r)}\n`);
  }
  const total = reports.reduce((n, r) => n + r.cases, 0);
  const found = reports.flatMap((r) => r.findings);
  process.stdout.write(`fuzz: ${formatCount(total)} cases, ${found.filter((f) => f.kind === 'crash').length} crashes, ${found.filter((f) => f.kind === 'hang').length} hangs (seed ${opts.seed})\n`);
  process.exit(found.length > 0 || reports.some((r) => r.harnessErrors > 0) ? 1 : 0);
}

main().catch((e: unknown) => {
  process.stderr.write(`fuzz: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
  process.exit(1);
});
