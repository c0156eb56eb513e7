/**
 * Benchmarks report figures through this one shape so `npm run bench` prints a single table and
 * writes bench/results.json, which docs/benchmarks.md quotes.
 */
export interface BenchFigure {
  /** What was measured, e.g. "payload parse throughput". */
  name: string;
  value: number;
  unit: string;
  /** Free-form context: input sizes, comparison baselines, machine notes. */
  note?: string;
}

export interface BenchContext {
  report(figure: BenchFigure): void;
  log(line: string): void;
}

/** A benchmark module's default export. */
export type Bench = (ctx: BenchContext) => Promise<void>;

export function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const idx = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[idx]!;
}
