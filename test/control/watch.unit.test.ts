/**
 * `rollout watch` waits between reads on the command's abort signal: every wait must take its
 * listener away again, or a long watch piles them up (Node's MaxListenersExceededWarning after
 * ten), whether the rollout answers or Temporal is away.
 */
import { getEventListeners } from 'node:events';
import { describe, expect, it } from 'vitest';
import { pause, watchProgress } from '../../src/cli/rollouts.ts';
import type { CliIO } from '../../src/cli/io.ts';
import { FleetpatchError } from '../../src/errors.ts';
import { initialProgress, type RolloutProgress, type RolloutStatus } from '../../src/rollout/progress.ts';
import type { ResolvedPlan } from '../../src/rollout/types.ts';

const plan = { name: 'watched', waves: [{ name: 'all' }] } as unknown as ResolvedPlan;
const progress = (status: RolloutStatus): RolloutProgress => ({ ...initialProgress('watched-1', plan, '2026-01-01T00:00:00.000Z'), status });

function captured(): CliIO & { outs: string[]; errs: string[] } {
  const outs: string[] = [];
  const errs: string[] = [];
  return { outs, errs, out: (l) => outs.push(l), err: (l) => errs.push(l), isTTY: false };
}

function warningsDuring<T>(fn: () => Promise<T>): Promise<{ result: T; warnings: string[] }> {
  const warnings: string[] = [];
  const onWarning = (w: Error) => warnings.push(w.name);
  process.on('warning', onWarning);
  return fn()
    .then(async (result) => {
      // Warnings are emitted on the next tick.
      await new Promise((r) => setImmediate(r));
      return { result, warnings };
    })
    .finally(() => process.off('warning', onWarning));
}

describe('rollout watch', () => {
  it('leaves no abort listener behind over many waits, and no MaxListenersExceededWarning', async () => {
    const signal = new AbortController().signal;
    const listening: number[] = [];
    let reads = 0;
    const io = captured();
    const { result, warnings } = await warningsDuring(() =>
      watchProgress(
        async () => {
          listening.push(getEventListeners(signal, 'abort').length);
          reads++;
          return progress(reads < 25 ? 'running' : 'succeeded');
        },
        io,
        1,
        signal,
      ),
    );
    expect(result).toBe(0);
    expect(reads).toBe(25);
    expect(listening).toEqual(Array.from({ length: 25 }, () => 0));
    expect(getEventListeners(signal, 'abort')).toHaveLength(0);
    expect(warnings).not.toContain('MaxListenersExceededWarning');
    // Printed when the progress changed: running, then succeeded.
    expect(io.outs).toHaveLength(2);
  });

  it('while Temporal is away: says so once, and still takes every listener away', { timeout: 30_000 }, async () => {
    const signal = new AbortController().signal;
    const listening: number[] = [];
    let reads = 0;
    const io = captured();
    const result = await watchProgress(
      async () => {
        listening.push(getEventListeners(signal, 'abort').length);
        if (++reads <= 3) throw new FleetpatchError('TEMPORAL_UNAVAILABLE', 'connection refused');
        return progress('failed');
      },
      io,
      50,
      signal,
    );
    expect(result).toBe(1);
    expect(listening).toEqual([0, 0, 0, 0]);
    expect(io.errs).toHaveLength(1);
    expect(io.errs[0]).toMatch(/^waiting: the rollout cannot be read since .* \(connection refused\); retrying$/);
    expect(getEventListeners(signal, 'abort')).toHaveLength(0);
  });

  it('an interrupt ends the wait at once (exit 130) and leaves nothing on the signal', async () => {
    const controller = new AbortController();
    const io = captured();
    setTimeout(() => controller.abort(), 50);
    const result = await watchProgress(async () => progress('running'), io, 60_000, controller.signal);
    expect(result).toBe(130);
    expect(getEventListeners(controller.signal, 'abort')).toHaveLength(0);
    // A wait on a signal that is already aborted returns without adding anything.
    await pause(60_000, controller.signal);
    expect(getEventListeners(controller.signal, 'abort')).toHaveLength(0);
  });
});
