/**
 * `npm run bench [name...]`: runs every bench/*.bench.ts (or the named ones), prints the figures
 * and writes them to bench/results.json. Speed targets are checked here, never in timed tests.
 */
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { fileURLToPath, pathToFileURL } from 'node:url';
import path from 'node:path';
import type { Bench, BenchFigure } from './report.ts';

const dir = path.dirname(fileURLToPath(import.meta.url));
const wanted = process.argv.slice(2);
const files = (await readdir(dir))
  .filter((f) => f.endsWith('.bench.ts'))
  .filter((f) => wanted.length === 0 || wanted.some((w) => f.startsWith(w)))
  .sort();

const results: Record<string, BenchFigure[]> = {};
for (const file of files) {
  const name = file.replace(/\.bench\.ts$/, '');
  const figures: BenchFigure[] = [];
  console.log(`\n== ${name}`);
  const started = Date.now();
  const mod = (await import(pathToFileURL(path.join(dir, file)).href)) as { default: Bench };
  await mod.default({
    report: (f) => {
      figures.push(f);
      console.log(`  ${f.name.padEnd(58)} ${formatValue(f.value).padStart(14)} ${f.unit}${f.note ? `  (${f.note})` : ''}`);
    },
    log: (line) => console.log(`  ${line}`),
  });
  console.log(`  (${((Date.now() - started) / 1000).toFixed(1)} s)`);
  results[name] = figures;
}

// Figures of earlier runs stay unless this run measured the same figure again (a bench run for
// one fleet size must not erase another size's figures).
const out = path.join(dir, 'results.json');
const previous = JSON.parse(await readFile(out, 'utf8').catch(() => '{}')) as Record<string, BenchFigure[] | string>;
const merged: Record<string, BenchFigure[] | string> = { ...previous };
for (const [name, figures] of Object.entries(results)) {
  const earlier = Array.isArray(previous[name]) ? (previous[name] as BenchFigure[]) : [];
  merged[name] = [...earlier.filter((f) => !figures.some((g) => g.name === f.name)), ...figures];
}
merged.measuredAt = new Date().toISOString();
await writeFile(out, JSON.stringify(merged, null, 2) + '\n');
console.log(`\nwrote ${path.relative(process.cwd(), out)}`);

function formatValue(v: number): string {
  if (!Number.isFinite(v)) return String(v);
  return Math.abs(v) >= 100 ? Math.round(v).toLocaleString('en-US') : v.toFixed(2);
}
