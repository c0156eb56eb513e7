/**
 * Text in a plan that PostgreSQL cannot store (a NUL, a lone surrogate) is refused when the plan is
 * validated, naming the field, for every string of a plan that uses every field: no plan that
 * validates can make a rollout fail later when it records what it was given.
 */
import { describe, expect, it } from 'vitest';
import { isFleetpatchError } from '../../src/errors.ts';
import { parsePlan, validatePlan, type PlanInput } from '../../src/rollout/plan.ts';

/** A plan with every field that holds text. */
const FULL: PlanInput = {
  name: 'fix',
  description: 'the fix for XSA-999',
  payloads: [{ file: 'a.livepatch', name: 'fix_a', signature: 'a.sig' }, { buildId: 'abcd' }],
  mode: 'apply',
  hosts: { labels: { region: 'eu-west' }, ids: ['host-0000', 'host-0001'] },
  waves: [
    { name: 'canary', hosts: 1, groupBy: 'rack' },
    { name: 'half', hosts: '50%' },
    { name: 'all', hosts: '100%' },
  ],
  budget: { perWave: '10%', total: '20%' },
  bake: '1m',
  gates: [{ after: 'canary', approval: true }],
  verify: { call: 'xen_extra_version', expect: 'Hello' },
  notify: { webhook: 'https://hooks.example/fleetpatch' },
};

type Path = (string | number)[];

/** Every string in the plan, with its path, and every mapping key a person chooses (label names). */
function strings(value: unknown, path: Path = []): { path: Path; key?: true }[] {
  if (typeof value === 'string') return [{ path }];
  if (Array.isArray(value)) return value.flatMap((v, i) => strings(v, [...path, i]));
  if (value !== null && typeof value === 'object') {
    return Object.entries(value).flatMap(([k, v]) => [...(path.join('.') === 'hosts.labels' ? [{ path: [...path, k], key: true as const }] : []), ...strings(v, [...path, k])]);
  }
  return [];
}

function withText(plan: unknown, at: { path: Path; key?: true }, text: (old: string) => string): unknown {
  const copy = structuredClone(plan) as Record<string | number, unknown>;
  let parent: Record<string | number, unknown> = copy;
  for (const p of at.path.slice(0, -1)) parent = parent[p] as Record<string | number, unknown>;
  const last = at.path.at(-1)!;
  if (at.key) {
    parent[text(String(last))] = parent[last];
    delete parent[last];
  } else {
    parent[last] = text(parent[last] as string);
  }
  return copy;
}

function refusal(plan: unknown): { message: string; issues: { path: string[]; message: string }[] } {
  try {
    validatePlan(plan);
  } catch (e) {
    if (isFleetpatchError(e) && e.code === 'PLAN_INVALID') return { message: e.message, issues: e.details.issues as { path: string[]; message: string }[] };
    throw e;
  }
  throw new Error('the plan was accepted');
}

const where = (at: { path: Path; key?: true }, injected: string) =>
  at.path
    .map((p, i) => (i === at.path.length - 1 && at.key ? injected : p))
    .reduce<string>((s, p) => (typeof p === 'number' ? `${s}[${p}]` : s ? `${s}.${p}` : p), '');

describe('text a plan cannot store', () => {
  it('the full plan validates as it is', () => {
    expect(() => validatePlan(FULL)).not.toThrow();
    expect(strings(FULL).length).toBeGreaterThan(20);
  });

  const fields = strings(FULL);
  const ENUMS = new Set(['mode']);
  it.each(fields.map((f) => [f.key ? `${f.path.join('.')} (its name)` : f.path.join('.'), f] as const))('%s: a NUL and a lone surrogate are refused, naming the field', (_label, at) => {
    const old = at.key ? String(at.path.at(-1)) : (at.path.reduce<unknown>((v, p) => (v as Record<string | number, unknown>)[p], FULL) as string);
    const nul = refusal(withText(FULL, at, (s) => `${s}\u0000`));
    if (ENUMS.has(at.path.join('.'))) {
      // A choice among fixed words: refused as not one of them.
      expect(nul.message).toMatch(new RegExp(`^plan: ${at.path.join('.')}: Invalid option`));
      return;
    }
    const name = at.key ? 'its name ' : '';
    expect(nul.message).toContain(`${where(at, `${old}\\u0000`)}: ${name}contains a NUL character (\\u0000) at position ${old.length}, which cannot be stored`);
    const lone = refusal(withText(FULL, at, (s) => `${s}\uD800`));
    expect(lone.message).toContain(`${where(at, `${old}\\ud800`)}: ${name}contains a lone UTF-16 surrogate (\\ud800) at position ${old.length}, which is not text`);
    // The refusal is itself storable and on one line: it may be shown, logged or recorded.
    for (const text of [nul.message, lone.message, JSON.stringify(nul.issues), JSON.stringify(lone.issues)]) {
      expect(text).not.toMatch(/[\u0000\n]|[\uD800-\uDFFF]/);
    }
  });

  it('lists every field that cannot be stored at once, with the other problems of the plan', () => {
    const r = refusal({ ...FULL, description: 'bad\u0000reason', hosts: { ids: ['host-0007', 'x\u0000y'] }, concurrency: 0 });
    expect(r.message).toBe(
      'plan: description: contains a NUL character (\\u0000) at position 3, which cannot be stored; ' +
        'hosts.ids[1]: contains a NUL character (\\u0000) at position 1, which cannot be stored; ' +
        'concurrency: Too small: expected number to be >=1',
    );
  });

  it('refuses a NUL written as an escape in YAML or JSON plan text', () => {
    for (const text of ['name: fix\ndescription: "bad\\0reason"\npayloads: [{ buildId: abcd }]\nwaves: [{ name: all, hosts: "100%" }]\n', '{"name":"fix","payloads":[{"buildId":"abcd"}],"waves":[{"name":"all","hosts":"100%"}],"hosts":{"ids":["host-0007","x\\u0000y"]}}']) {
      expect(() => parsePlan(text, 'plan.yaml')).toThrow(/^plan\.yaml: (description|hosts\.ids\[1\]): contains a NUL character/);
    }
  });

  it('accepts every other text: emoji, combining marks, right-to-left, control characters but NUL, the longest allowed', () => {
    const plan = validatePlan({
      ...FULL,
      description: 'שלום 🩹 e\u0301 \u202eevil\u202c \u0001\u001f\u007f\t\n'.padEnd(2000, '…'),
      payloads: [{ file: 'דלתא/🩹.livepatch', name: '🩹'.repeat(31) }],
      hosts: { labels: { 'région-🩹': 'ي'.repeat(128) }, ids: ['h\u0301'.repeat(64)] },
      verify: { call: 'xen_extra_version', expect: '🩹'.repeat(100) },
    });
    expect(plan.hosts.labels).toEqual({ 'région-🩹': 'ي'.repeat(128) });
    expect(plan.payloads[0]).toMatchObject({ name: '🩹'.repeat(31) });
  });
});
