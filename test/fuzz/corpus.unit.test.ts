/**
 * The regression corpus of the long fuzzing (npm run fuzz, docs/reliability.md "Fuzzing"): every
 * input in test/fuzz-corpus/<target>/ once found something (a crash, a hang, a wrong answer) or
 * marks the edge of a documented rule. Each is replayed here through the same target and oracles
 * as in the fuzzer (fuzz/targets/*.ts), and must end with the outcome its expected.json records.
 * To add one: copy the input from fuzz/findings/, fix what it found, run
 * `npm run fuzz -- --replay <file>` for its outcome, and record it in expected.json.
 */
import { readFile, readdir } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { limits, type FuzzTarget, type TargetName } from '../../fuzz/lib.ts';
import { loadTarget } from '../../fuzz/worker.ts';

const CORPUS = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'fuzz-corpus');

// Replays check answers, not speed: a loaded CI machine must not turn a slow case into a failure.
limits.operationMs = 60_000;

for (const name of ['payload', 'plan', 'http'] as const satisfies readonly TargetName[]) {
  describe(`fuzz corpus: ${name}`, async () => {
    const dir = path.join(CORPUS, name);
    const expected = JSON.parse(await readFile(path.join(dir, 'expected.json'), 'utf8')) as Record<string, string>;
    const files = (await readdir(dir)).filter((f) => f !== 'expected.json').sort();
    let target: FuzzTarget<unknown>;

    beforeAll(async () => {
      target = await loadTarget(name);
      await target.setup(1);
    });
    afterAll(() => target?.teardown());

    it('records an outcome for every input, and every outcome recorded has its input', () => {
      expect(Object.keys(expected).sort()).toEqual(files);
    });

    it.each(files)('%s', async (file) => {
      const input = target.decode(new Uint8Array(await readFile(path.join(dir, file))));
      expect(await target.run(input)).toBe(expected[file]);
    });
  });
}
