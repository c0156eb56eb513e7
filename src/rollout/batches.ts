/**
 * How a wave step's concurrency is split into batches (activities). One batch can keep many lanes
 * busy, but several batches let several workers share a step, and a retried batch (its worker
 * died) leaves the others running. Pure.
 */

/** Lanes a batch keeps at least, so a step is not cut into batches of one host each. */
export const LANES_PER_BATCH = 25;
/** More batches than this per step buy nothing on a fleet's worth of workers. */
export const MAX_BATCHES = 8;

/** Lane counts of the step's batches; they add up to `concurrency`. */
export function batchLanes(concurrency: number, maxBatches = MAX_BATCHES): number[] {
  const c = Math.max(1, Math.floor(concurrency));
  const n = Math.max(1, Math.min(maxBatches, Math.ceil(c / LANES_PER_BATCH)));
  return Array.from({ length: n }, (_, i) => Math.floor(c / n) + (i < c % n ? 1 : 0));
}
