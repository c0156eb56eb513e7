/**
 * What the long fuzzing of plan files (npm run fuzz -- --target plan, docs/reliability.md) found,
 * kept fixed: YAML's duplicate-key check was quadratic (a 700 KB plan took ~9 s to refuse);
 * nesting deeper than the YAML parser's stack was refused in words that depended on the caller's
 * stack (a column, or a syntax error further on), so the same file got different refusals; and a
 * key with a newline in it made the refusal more than one line.
 */
import { describe, expect, it } from 'vitest';
import { FleetpatchError } from '../../src/errors.ts';
import { parsePlan } from '../../src/rollout/plan.ts';

function refusal(text: string): string {
  try {
    parsePlan(text, 'plan.yaml');
  } catch (e) {
    expect(e).toBeInstanceOf(FleetpatchError);
    expect((e as FleetpatchError).code).toBe('PLAN_INVALID');
    return (e as Error).message;
  }
  throw new Error('the plan was accepted');
}

/** Calls fn `depth` frames down the stack. */
function atDepth<T>(depth: number, fn: () => T): T {
  return depth === 0 ? fn() : atDepth(depth - 1, fn);
}

describe('plan files found by fuzzing', () => {
  it('a mapping with 40,000 keys is read in linear time, and a duplicate among them is still refused', () => {
    const keys = Array.from({ length: 40_000 }, (_, i) => `"k${i}": "v${i}"`);
    const unique = `{"name": "p", "payloads": [{"buildId": "ab"}], "waves": [{"name": "a", "hosts": 1}], "hosts": {"labels": {${keys.join(', ')}}}}`;
    expect(refusal(unique)).toMatch(/^plan\.yaml: hosts\.labels: at most 32 labels/);
    const duplicate = unique.replace('"k39999"', '"k7"');
    expect(refusal(duplicate)).toMatch(/^plan\.yaml: not valid YAML or JSON: Map keys must be unique at line 1, column \d+: "k7" appears twice$/);
    // Both took ~9 s each with yaml's own pairwise check, now well under a second each: the
    // test's own timeout is the bound here, the speed itself is npm run bench's to measure.
  });

  it('duplicate keys are refused wherever they are, with their line and column, as before', () => {
    expect(refusal('name: a\nwaves: []\nname: b\n')).toBe('plan.yaml: not valid YAML or JSON: Map keys must be unique at line 3, column 1: "name" appears twice');
    expect(refusal('{"waves": [{"name": "a", "name": "b"}]}')).toMatch(/Map keys must be unique at line 1, column 26: "name" appears twice/);
    expect(refusal('~: 1\nnull: 2\n')).toMatch(/Map keys must be unique at line 2, column 1: "null" appears twice/);
    // Different scalars are different keys (1 and "1"), as in yaml.
    expect(refusal('a: 1\n1: x\n"1": y\n')).not.toMatch(/unique/);
  });

  it('nesting deeper than the parser can follow: the same refusal whatever the caller', () => {
    const text = `name: p\nwaves: ${'['.repeat(5000)}${']'.repeat(5000)}\n`;
    const shallow = refusal(text);
    const deep = atDepth(2000, () => refusal(text));
    expect(shallow).toBe('plan.yaml: not valid YAML or JSON: it nests too deeply (at most 64 levels)');
    expect(deep).toBe(shallow);
    // Deep nesting with a syntax error further on: it was "too deep" or the syntax error, by the stack.
    const both = `x: ${'['.repeat(3000)}: `;
    expect(refusal(both)).toBe(shallow);
    expect(atDepth(3000, () => refusal(both))).toBe(shallow);
    // A megabyte of brackets is refused at once, not parsed to the end.
    expect(refusal('['.repeat(1_000_000))).toBe(shallow);
  });

  it('64 levels are read; 65 are too deep', () => {
    const maps = (n: number) => `a:\n${Array.from({ length: n - 1 }, (_, i) => `${' '.repeat(i + 1)}b:`).join('\n')} 1`;
    for (const [text, deep] of [[maps(64), false], [maps(65), true], [`${'- '.repeat(64)}x`, false], [`${'- '.repeat(65)}x`, true], [`${'{a: '.repeat(64)}1${'}'.repeat(64)}`, false], [`${'{a: '.repeat(65)}1${'}'.repeat(65)}`, true]] as const) {
      expect(/nests too deeply/.test(refusal(text))).toBe(deep);
    }
  });

  it('a key with a newline (or a YAML mapping used as a key) is named on one line', () => {
    const text = 'name: p\npayloads: [{file: a.livepatch}]\nwaves: [{name: a, hosts: 1}]\nhosts:\n  ? {file: "x\\ny"}\n  : 1\n"bad\\nkey\\u2028": 1\n';
    const message = refusal(text);
    expect(message).not.toMatch(/[\n\r\u2028\u2029]/);
    expect(message).toBe('plan.yaml: hosts: Unrecognized key: "{ file: \"x\\ny\" }"; (plan): Unrecognized key: "bad\\nkey\\u2028"');
  });
});
