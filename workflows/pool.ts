/**
 * Runs `fn` over `items` with at most `limit` in flight, in order, deterministically (workflow
 * code). Before taking each next item it awaits `gate()`, which can wait (pause) or answer false
 * (stop scheduling: budget exceeded, abort); items already running always finish.
 */
export async function runBounded<T>(items: readonly T[], limit: number, gate: () => Promise<boolean>, fn: (item: T) => Promise<void>): Promise<number> {
  let next = 0;
  let started = 0;
  const lane = async () => {
    while (next < items.length) {
      if (!(await gate())) return;
      if (next >= items.length) return;
      const item = items[next++]!;
      started++;
      await fn(item);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, lane));
  return started;
}
