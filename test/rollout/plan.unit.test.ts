import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { parsePlan, PLAN_LIMITS } from '../../src/rollout/plan.ts';
import { FleetpatchError } from '../../src/errors.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

function planError(text: string): string {
  try {
    parsePlan(text, 'plan.yaml');
  } catch (e) {
    expect(e).toBeInstanceOf(FleetpatchError);
    expect((e as FleetpatchError).code).toBe('PLAN_INVALID');
    return (e as Error).message;
  }
  throw new Error('plan was accepted');
}

const minimal = `
name: fix
payloads: [{ file: a.livepatch }]
waves: [{ name: all, hosts: "100%" }]
`;

describe('rollout plans', () => {
  it('accepts the example an operator would write, with its meaning', async () => {
    const plan = parsePlan(await readFile(path.join(ROOT, 'examples', 'plan.yaml'), 'utf8'));
    expect(plan.name).toBe('xsa-999-fix');
    expect(plan.mode).toBe('apply');
    expect(plan.waves.map((w) => w.name)).toEqual(['canary', 'early', 'half', 'rest']);
    expect(plan.waves[1]).toMatchObject({ hosts: '10%', groupBy: 'region' });
    expect(plan.budget.perWave).toEqual({ kind: 'percent', percent: 5 });
    expect(plan.budget.total).toEqual({ kind: 'count', count: 10 });
    expect(plan.bake).toBe(600_000);
    expect(plan.gates).toEqual([{ after: 'canary', approval: true }]);
    expect(plan.verify).toEqual({ call: 'xen_extra_version', expect: 'Hello World' });
    expect(plan.onFailure).toBe('rollback');
  });

  it('fills strict defaults: no failures tolerated, no bake, rollback on failure', () => {
    const plan = parsePlan(minimal);
    expect(plan).toMatchObject({ mode: 'apply', concurrency: 50, bake: 0, onFailure: 'rollback', gates: [], budget: {} });
  });

  it('names every problem with its path', () => {
    const message = planError(`
name: fix
payloads: []
waves:
  - { name: a, hosts: "150%" }
  - { name: a, hosts: 0 }
bake: soon
budget: { perWave: "lots" }
`);
    expect(message).toContain('payloads: name at least one payload');
    expect(message).toContain('waves[0].hosts');
    expect(message).toContain('waves[1].hosts');
    expect(message).toContain('bake: "soon" is not a duration');
    expect(message).toContain('budget.perWave: "lots" is not a failure budget');
    expect(planError(`${minimal}gates: [{ after: nowhere, approval: true }]`)).toContain('gates[0].after: no wave is named "nowhere"');
  });

  it('refuses duplicate wave names, shrinking cumulative sizes and unknown keys', () => {
    expect(planError(`${minimal}\nextra: 1`)).toMatch(/extra/);
    const m = planError(`
name: fix
payloads: [{ file: a }]
waves: [{ name: a, hosts: "50%" }, { name: a, hosts: "10%" }]
`);
    expect(m).toContain('wave name "a" is used twice');
    expect(m).toContain('waves[1].hosts: wave sizes are cumulative');
  });

  it('refuses text that is not a plan', () => {
    expect(planError('name: [unclosed')).toMatch(/not valid YAML or JSON/);
    expect(planError('- a\n- b')).toMatch(/a plan is a mapping/);
  });

  it('reports duplicate wave names and shrinking sizes together with every other problem', () => {
    const m = planError(`
name: fix
payloads: [{ file: a }]
waves: [{ name: a, hosts: "50%" }, { name: a, hosts: "10%" }, { name: b, hosts: 3 }, { name: c, hosts: 2 }]
bake: soon
concurrency: 0
gates: [{ after: nowhere, approval: true }]
`);
    expect(m).toContain('bake: "soon" is not a duration');
    expect(m).toContain('concurrency');
    expect(m).toContain('waves[1].name: wave name "a" is used twice');
    expect(m).toContain('waves[1].hosts: wave sizes are cumulative; 10% is smaller than an earlier wave\'s 50%');
    expect(m).toContain("waves[3].hosts: wave sizes are cumulative; 2 is smaller than an earlier wave's 3");
    expect(m).toContain('gates[0].after: no wave is named "nowhere"');
  });

  it.each([
    ['bake: 99999999999d', 'bake'],
    ['bake: 31d', 'bake'],
    ['bake: 1e400', 'bake'],
    ['concurrency: 1001', 'concurrency'],
    ['budget: { perWave: 99999999999999999999 }', 'budget.perWave'],
    ['budget: { total: "1000001" }', 'budget.total'],
    ['verify: { call: xen_extra_version, expect: "' + 'x'.repeat(201) + '" }', 'verify.expect'],
    ['verify: { call: "' + 'f'.repeat(128) + '", expect: x }', 'verify.call'],
    ['hosts: { ids: ["' + 'h'.repeat(129) + '"] }', 'hosts.ids[0]'],
    ['description: "' + 'd'.repeat(2001) + '"', 'description'],
  ])('refuses %s, beyond what a rollout can honour', (line, where) => {
    expect(planError(`${minimal}${line}`)).toContain(`${where}`);
  });

  it('refuses a wave count beyond the bound and a payload name Xen would refuse', () => {
    expect(planError(minimal.replace('hosts: "100%"', 'hosts: 1000001'))).toContain('waves[0].hosts');
    expect(planError(minimal.replace('{ file: a.livepatch }', `{ file: a.livepatch, name: "${'n'.repeat(128)}" }`))).toContain('payloads[0]');
  });

  it('accepts the extremes it allows, and they are what a Temporal timer and a Date take', () => {
    const plan = parsePlan(`${minimal}bake: 30d\nconcurrency: ${PLAN_LIMITS.maxConcurrency}\nbudget: { perWave: ${PLAN_LIMITS.maxBudgetCount}, total: "100%" }\n`);
    expect(plan.bake).toBe(PLAN_LIMITS.maxBakeMs);
    expect(new Date(Date.now() + plan.bake).toISOString()).toMatch(/^\d{4}-/);
    expect(plan.allowUnsigned).toBe(false);
    expect(parsePlan(`${minimal}allowUnsigned: true\n`).allowUnsigned).toBe(true);
    expect(planError(`${minimal}allowUnsigned: "yes"\n`)).toContain('allowUnsigned');
  });
});
