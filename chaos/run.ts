/**
 * `npm run chaos [-- --seed N --hosts 500 --minutes 10]`: one chaos run (scenario.ts), bounded in
 * time; prints the seed, every fault as it is injected, the faults of each phase (rollout, repair,
 * REPLACE, rollback), then each invariant with its counts, and exits non-zero if any fails. Not
 * part of `npm test` (a short run is: test/chaos/*.e2e.test.ts).
 */
import { writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { runChaos } from './scenario.ts';

const { values } = parseArgs({
  options: { seed: { type: 'string' }, hosts: { type: 'string' }, workers: { type: 'string' }, minutes: { type: 'string' }, concurrency: { type: 'string' } },
});
const seed = values.seed !== undefined ? Number(values.seed) : Math.floor(Math.random() * 1_000_000);
const hosts = Number(values.hosts ?? 500);
if (!Number.isInteger(seed) || seed < 0 || !Number.isInteger(hosts) || hosts < 10 || hosts > 10_000) {
  process.stderr.write('chaos: --seed must be a whole number >= 0 and --hosts from 10 to 10000\n');
  process.exit(2);
}
const report = await runChaos({
  seed,
  hosts,
  workers: Number(values.workers ?? 2),
  concurrency: Number(values.concurrency ?? 20),
  actionMs: 200,
  faults: { workerKills: 3, temporalRestarts: 1, postgresOutages: 1, reboots: 5, hungHosts: 2, applyFailures: 3, wrongAnswers: 2, slowHosts: 10 },
  postgresDownMs: 10_000,
  deadlineMs: Number(values.minutes ?? 10) * 60_000,
  say: (l) => process.stdout.write(`${l}\n`),
});
process.stdout.write(`\nchaos run, seed ${report.seed} (reproduce: npm run chaos -- --seed ${report.seed} --hosts ${report.hosts}): ${report.hosts} hosts, ${report.seconds} s\n`);
process.stdout.write(`faults injected: ${Object.entries(report.injected).map(([k, n]) => `${k} ${n}`).join(', ')}\n`);
for (const phase of ['rollout', 'repair', 'replace', 'rollback'] as const) {
  const here = report.landed.filter((f) => f.phase === phase);
  process.stdout.write(`  during the ${phase}: ${here.map((f) => `${f.kind}${f.host ? ` ${f.host}` : ''} (${f.progress})`).join(', ') || 'none'}\n`);
}
for (const m of report.missed) process.stdout.write(`  not landed: ${m.kind} in the ${m.phase}: ${m.why}\n`);
for (const [phase, what] of Object.entries(report.phases)) if (what) process.stdout.write(`${phase}: ${what}\n`);
for (const v of report.verdicts) {
  process.stdout.write(`${v.ok ? 'PASS' : 'FAIL'}  ${v.name}: ${v.detail}\n`);
  for (const p of v.problems) process.stdout.write(`        ${p}\n`);
}
if (Object.keys(report.offenders).length > 0) {
  const file = path.join(os.tmpdir(), `fleetpatch-chaos-${report.seed}-offenders.json`);
  writeFileSync(file, `${JSON.stringify(report.offenders, null, 1)}\n`);
  process.stdout.write(`the journal and the events of every host named above: ${file}\n`);
}
process.stdout.write(report.ok ? `\nall ${report.verdicts.length} invariants hold\n` : `\n${report.verdicts.filter((v) => !v.ok).length} invariant(s) FAILED\n`);
process.exit(report.ok ? 0 : 1);
