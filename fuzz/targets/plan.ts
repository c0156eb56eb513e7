/**
 * Fuzz target: rollout plan files, through the plan schema (src/rollout/plan.ts parsePlan) and, for
 * one case in 16, through the real reader (readPlanFile: stat, bounded read, parse).
 *
 * Inputs are plan texts, generated three ways:
 *   - structure-aware: a plan built field by field like the documented ones (examples/plan.yaml),
 *     then some fields replaced by values at the edges of their type (NaN, ±Infinity, 1e400, -0,
 *     2^53+1, 0x10, "1e3%", "100.0000001%", "30d1ms", "99999999999999999999d", 10,000-character
 *     strings, NUL, "__proto__", nested arrays...), some keys removed or added, written as YAML
 *     (block or flow) or JSON;
 *   - the same texts mutated as text (cut, spliced, YAML features dropped in: anchors and aliases,
 *     merge keys, tags, directives, several documents, duplicate keys);
 *   - random text.
 *
 * Oracles, per case:
 *   - parsePlan returns a plan or throws PLAN_INVALID, nothing else, within the per-operation limit
 *     (for texts up to 1 MiB, what a plan file may hold; readPlanFile refuses longer ones);
 *   - a refusal is one line, starts with the file name, and names the field of every problem
 *     (each issue has a path, except "unrecognized key" issues at the top, which name the key);
 *   - a plan the schema accepts is representable: every number finite (no NaN, no Infinity), the
 *     bake an integer number of milliseconds within 30 days, counts integers within their bounds,
 *     every text within its bound, and the plan survives JSON and structuredClone unchanged
 *     (the workflow's input is JSON);
 *   - the same text gives the same plan or the same refusal again.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import fc from 'fast-check';
import { stringify as toYaml } from 'yaml';
import { FleetpatchError } from '../../src/errors.ts';
import { PLAN_LIMITS, parsePlan, type Plan } from '../../src/rollout/plan.ts';
import { FILE_LIMITS } from '../../src/runtime/files.ts';
import { OracleViolation, refusal, timed, timedAsync, type FuzzTarget } from '../lib.ts';

export interface PlanInput {
  readonly how: string;
  readonly text: string;
}

// ---- values at the edges of each type ---------------------------------------------------------

const EDGE_NUMBERS = [0, -0, 1, -1, 0.5, 1.5, 2, 3, 49, 50, 51, 100, 999, 1000, 1001, 5000, 5001, 1e6, 1e6 + 1, 2 ** 31, 2 ** 32, 2 ** 53, 2 ** 53 + 2, 1e21, 1e308, Number.MIN_VALUE, NaN, Infinity, -Infinity, 2_592_000_000, 2_592_000_001];
const EDGE_STRINGS = [
  '', ' ', '0', '00', '1', '-1', '1.5', '0x10', '1e3', '10%', ' 10% ', '0%', '100%', '100.0%', '100.0000001%', '101%', '1e3%', '-5%', '%', '5 %', 'NaN%', 'Infinity',
  '0s', '30s', '10m', '1h30m', '30d', '30d1ms', '31d', '29d23h59m59s999ms', '99999999999999999999d', '1.5h', '0.0001ms', '1e3s', '10m10m', 'NaNms', '-1s', '1 s', 's',
  '\0', 'a\0b', '__proto__', 'constructor', 'toString', 'é', '🙂', 'x'.repeat(63), 'x'.repeat(64), 'x'.repeat(127), 'x'.repeat(128), 'é'.repeat(64), 'x'.repeat(2001), 'x'.repeat(10_000),
  'ab'.repeat(64), 'ab'.repeat(65), 'zz', 'canary', 'rollback', 'pause', 'apply', 'replace', 'stack', 'http://example.invalid/hook', 'not a url', 'javascript:alert(1)',
];

const edgeValue: fc.Arbitrary<unknown> = fc.letrec<{ v: unknown }>((tie) => ({
  v: fc.oneof(
    { weight: 4, arbitrary: fc.constantFrom(...EDGE_NUMBERS) },
    { weight: 4, arbitrary: fc.constantFrom(...EDGE_STRINGS) },
    { weight: 1, arbitrary: fc.constantFrom(true, false, null) },
    { weight: 1, arbitrary: fc.double() },
    { weight: 1, arbitrary: fc.integer() },
    { weight: 1, arbitrary: fc.string({ maxLength: 40 }) },
    { weight: 1, arbitrary: fc.array(tie('v'), { maxLength: 3 }) },
    { weight: 1, arbitrary: fc.dictionary(fc.constantFrom('name', 'file', 'hosts', 'x', '__proto__', 'approval', 'after'), tie('v'), { maxKeys: 3 }) },
  ),
})).v;

// A plan as the documentation writes them: valid as generated; the edits below make it hostile.
const shortName = fc.stringMatching(/^[A-Za-z0-9][A-Za-z0-9._-]{0,20}$/);
const percent = fc.integer({ min: 1, max: 100 });
const wavesArb = fc.array(percent, { minLength: 1, maxLength: 5 }).chain((ps) => {
  const sorted = [...ps].sort((a, b) => a - b);
  return fc.tuple(
    fc.boolean(),
    fc.array(fc.record({ groupBy: fc.constantFrom('region', 'rack'), concurrency: fc.integer({ min: 1, max: 1000 }) }, { requiredKeys: [] }), { minLength: sorted.length, maxLength: sorted.length }),
  ).map(([asCount, extra]) => sorted.map((p, i) => ({ name: `w${i}`, hosts: asCount ? p * 10 : `${p}%`, ...extra[i] })));
});
const duration = fc.oneof(fc.constantFrom('0', '30s', '10m', '1h30m', '250ms', '30d', '2h', '1.5h', 0), fc.nat(2_592_000_000));
const budget = fc.oneof(fc.nat(20), percent.map((p) => `${p}%`), fc.constantFrom('0%', '100%', '2.5%', 0));
const buildId = fc.uint8Array({ minLength: 1, maxLength: 64 }).map((b) => Buffer.from(b).toString('hex'));

const planObject: fc.Arbitrary<Record<string, unknown>> = fc
  .record(
    {
      name: shortName,
      description: fc.string({ maxLength: 60 }),
      payloads: fc.array(fc.oneof(fc.record({ file: fc.constantFrom('p.livepatch', 'payloads/x.livepatch'), name: fc.stringMatching(/^[a-z_]{1,20}$/), signature: fc.constant('p.sig') }, { requiredKeys: ['file'] }), fc.record({ buildId })), { minLength: 1, maxLength: 4 }),
      allowUnsigned: fc.boolean(),
      mode: fc.constantFrom('apply', 'replace', 'stack'),
      hosts: fc.record({ labels: fc.dictionary(fc.constantFrom('region', 'rack', 'env'), fc.constantFrom('eu-west', 'prod', 'rack-000'), { maxKeys: 3 }), ids: fc.array(fc.integer({ min: 0, max: 9999 }).map((i) => `host-${String(i).padStart(4, '0')}`), { maxLength: 5 }) }, { requiredKeys: [] }),
      waves: wavesArb,
      concurrency: fc.integer({ min: 1, max: 1000 }),
      budget: fc.record({ perWave: budget, total: budget }, { requiredKeys: [] }),
      bake: duration,
      gates: fc.array(fc.record({ after: fc.constant('w0'), approval: fc.constant(true) }), { maxLength: 2 }),
      verify: fc.record({ call: fc.constantFrom('xen_extra_version', 'xen_minor_version'), expect: fc.string({ maxLength: 40 }) }),
      onFailure: fc.constantFrom('rollback', 'pause'),
      notify: fc.record({ webhook: fc.constantFrom('http://127.0.0.1:9/hook', 'https://example.invalid/x') }),
    },
    { requiredKeys: ['name', 'payloads', 'waves'] },
  )
  .map((o) => o as Record<string, unknown>);

type Edit = { kind: 'set'; path: number; value: unknown } | { kind: 'delete'; path: number } | { kind: 'add'; key: string; value: unknown } | { kind: 'many'; path: number; count: number };

const edit: fc.Arbitrary<Edit> = fc.oneof(
  { weight: 5, arbitrary: fc.record({ kind: fc.constant('set' as const), path: fc.nat(), value: edgeValue }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('delete' as const), path: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('add' as const), key: fc.constantFrom('extra', '__proto__', 'constructor', 'Name', 'name ', ''), value: edgeValue }) },
  // Long lists: host ids, waves, payloads, gates, labels at and past their bounds.
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('many' as const), path: fc.nat(), count: fc.oneof({ weight: 10, arbitrary: fc.constantFrom(31, 32, 33, 63, 64, 65, 99, 100, 101) }, { weight: 1, arbitrary: fc.constantFrom(4999, 5000, 5001, 20_000) }) }) },
);

/** Every [container, key] inside a value, the value itself first (as [null, null]). */
function places(root: unknown): [Record<string, unknown> | unknown[], string | number][] {
  const out: [Record<string, unknown> | unknown[], string | number][] = [];
  const walk = (v: unknown, depth: number) => {
    if (depth > 6 || v === null || typeof v !== 'object') return;
    if (Array.isArray(v)) v.forEach((x, i) => (out.push([v, i]), walk(x, depth + 1)));
    else for (const k of Object.keys(v)) out.push([v as Record<string, unknown>, k]), walk((v as Record<string, unknown>)[k], depth + 1);
  };
  walk(root, 0);
  return out;
}

function applyEdits(plan: Record<string, unknown>, edits: readonly Edit[]): Record<string, unknown> {
  const doc = structuredClone(plan);
  for (const e of edits) {
    const all = places(doc);
    if (e.kind === 'add') {
      // defineProperty: a "__proto__" key as YAML or JSON would have it, not a prototype change.
      Object.defineProperty(doc, e.key, { value: e.value, enumerable: true, writable: true, configurable: true });
      continue;
    }
    if (all.length === 0) continue;
    const [container, key] = all[e.path % all.length]!;
    if (e.kind === 'set') (container as Record<string | number, unknown>)[key] = e.value;
    else if (e.kind === 'delete') Array.isArray(container) ? container.splice(Number(key), 1) : delete (container as Record<string, unknown>)[key];
    else {
      const v = (container as Record<string | number, unknown>)[key];
      if (Array.isArray(v) && v.length > 0) (container as Record<string | number, unknown>)[key] = Array.from({ length: e.count }, (_, i) => structuredClone(v[i % v.length]));
      else if (Array.isArray(v)) (container as Record<string | number, unknown>)[key] = Array.from({ length: e.count }, (_, i) => `host-${i}`);
      else if (v && typeof v === 'object') (container as Record<string | number, unknown>)[key] = Object.fromEntries(Array.from({ length: e.count }, (_, i) => [`k${i}`, `v${i}`]));
    }
  }
  return doc;
}

/** YAML has no way to write NaN and ±Infinity in JSON; .nan and .inf are what a person would type. */
function write(doc: unknown, style: 'yaml' | 'flow' | 'json'): string {
  if (style === 'json') {
    return JSON.stringify(doc, (_k, v: unknown) => (typeof v === 'number' && !Number.isFinite(v) ? `@@${v}@@` : v)).replace(/"@@(NaN|Infinity|-Infinity)@@"/g, (_m, x: string) => (x === 'NaN' ? '.nan' : x === 'Infinity' ? '1e400' : '-1e400'));
  }
  return toYaml(doc, { flow: style === 'flow', lineWidth: 0 });
}

type TextEdit = { kind: 'cut'; at: number } | { kind: 'insert'; at: number; text: string } | { kind: 'splice'; from: number; to: number; length: number };

const YAML_TOKENS = [
  '&a ', '*a', '<<: *a\n', '!!binary ', '!!str ', '!!int ', '!!float ', '!!set ', '!!omap ', '!!js/function ', '!custom ', '%YAML 1.1\n---\n', '%TAG ! tag:x:\n', '---\n', '...\n',
  '? ', ': ', '- ', '{', '}', '[', ']', ',', '"', "'", '|', '>', '#', '\t', '\n', '\r\n', '\u2028', '\ufeff', '\0', '\\u0000', 'name: dup\n', '.nan', '.inf', '-.inf', '1e400', '0x1F', '0o17', '0b101', '~',
  'a: &x [*x]\n', 'a: &a [1,1,1,1,1,1,1,1,1]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: [*c,*c,*c,*c,*c,*c,*c,*c,*c]\n',
  `${'['.repeat(5000)}${']'.repeat(5000)}`, `${'- '.repeat(2000)}x\n`, `${'{a: '.repeat(3000)}1${'}'.repeat(3000)}`,
];

const textEdit: fc.Arbitrary<TextEdit> = fc.oneof(
  fc.record({ kind: fc.constant('cut' as const), at: fc.nat() }),
  fc.record({ kind: fc.constant('insert' as const), at: fc.nat(), text: fc.oneof({ weight: 6, arbitrary: fc.constantFrom(...YAML_TOKENS.slice(0, -3)) }, { weight: 1, arbitrary: fc.constantFrom(...YAML_TOKENS.slice(-3)) }, { weight: 3, arbitrary: fc.string({ maxLength: 8 }) }) }),
  fc.record({ kind: fc.constant('splice' as const), from: fc.nat(), to: fc.nat(), length: fc.integer({ min: 1, max: 64 }) }),
);

function applyTextEdits(text: string, edits: readonly TextEdit[]): string {
  let t = text;
  for (const e of edits) {
    const at = (n: number) => n % (t.length + 1);
    if (e.kind === 'cut') t = t.slice(0, at(e.at));
    else if (e.kind === 'insert') t = t.slice(0, at(e.at)) + e.text + t.slice(at(e.at));
    else {
      const from = at(e.from);
      t = t.slice(0, at(e.to)) + t.slice(from, from + e.length) + t.slice(at(e.to));
    }
  }
  return t;
}

// ---- oracles ----------------------------------------------------------------------------------

/** Every number finite; every text and list within the bounds the schema promises. */
function checkRepresentable(plan: Plan): void {
  const L = PLAN_LIMITS;
  const bad = (why: string) => {
    throw new OracleViolation(`a plan the schema accepts cannot be represented: ${why}`);
  };
  const walk = (v: unknown, where: string) => {
    if (typeof v === 'number' && !Number.isFinite(v)) bad(`${where} is ${v}`);
    if (typeof v === 'bigint' || typeof v === 'function' || typeof v === 'symbol') bad(`${where} is a ${typeof v}`);
    if (v && typeof v === 'object') for (const [k, x] of Object.entries(v)) walk(x, `${where}.${k}`);
  };
  walk(plan, 'plan');
  if (!Number.isInteger(plan.bake) || plan.bake < 0 || plan.bake > L.maxBakeMs) bad(`bake is ${plan.bake} ms (an integer from 0 to ${L.maxBakeMs})`);
  if (!Number.isInteger(plan.concurrency) || plan.concurrency < 1 || plan.concurrency > L.maxConcurrency) bad(`concurrency is ${plan.concurrency}`);
  if (plan.waves.length < 1 || plan.waves.length > L.maxWaves) bad(`${plan.waves.length} waves`);
  if (plan.payloads.length < 1 || plan.payloads.length > L.maxPayloads) bad(`${plan.payloads.length} payloads`);
  for (const w of plan.waves) {
    if (typeof w.hosts === 'number' && (!Number.isInteger(w.hosts) || w.hosts < 1 || w.hosts > L.maxWaveHosts)) bad(`wave ${w.name} has hosts ${w.hosts}`);
    if (typeof w.hosts === 'string' && !(parseFloat(w.hosts) > 0 && parseFloat(w.hosts) <= 100)) bad(`wave ${w.name} has hosts "${w.hosts}"`);
    if (w.concurrency !== undefined && (!Number.isInteger(w.concurrency) || w.concurrency < 1 || w.concurrency > L.maxConcurrency)) bad(`wave ${w.name} has concurrency ${w.concurrency}`);
  }
  for (const [k, b] of Object.entries(plan.budget)) {
    if (!b) continue;
    if (b.kind === 'count' && (!Number.isSafeInteger(b.count) || b.count < 0 || b.count > L.maxBudgetCount)) bad(`budget.${k} is ${b.count}`);
    if (b.kind === 'percent' && !(b.percent >= 0 && b.percent <= 100)) bad(`budget.${k} is ${b.percent}%`);
  }
  if ((plan.hosts.ids?.length ?? 0) > L.maxHostIds) bad(`${plan.hosts.ids!.length} host ids`);
  const json = JSON.stringify(plan);
  if (json.length > 2 * 1024 * 1024) bad(`the plan is ${json.length} characters of JSON, past Temporal's 2 MiB input`);
  const same = (a: unknown, b: unknown): boolean => {
    if (a === b) return true;
    if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false;
    const ka = Object.keys(a).filter((k) => (a as Record<string, unknown>)[k] !== undefined);
    const kb = Object.keys(b).filter((k) => (b as Record<string, unknown>)[k] !== undefined);
    return ka.length === kb.length && ka.every((k) => same((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k]));
  };
  if (!same(JSON.parse(json), plan)) bad('it does not survive JSON unchanged');
  if (!same(structuredClone(plan), plan)) bad('it does not survive structuredClone unchanged');
}

interface Issue {
  path: string[];
  message: string;
}

/** A refusal is one line, says which file, and says where in the plan each problem is. */
function checkRefusal(e: FleetpatchError, source: string, text: string): void {
  if (e.code !== 'PLAN_INVALID') throw new OracleViolation(`a plan was refused with ${e.code}, not PLAN_INVALID: ${e.message}`);
  if (!e.message.startsWith(`${source}: `)) throw new OracleViolation(`the refusal does not start with the plan file's name: ${e.message.slice(0, 200)}`);
  if (/[\n\r]/.test(e.message)) throw new OracleViolation(`the refusal is not one line: ${JSON.stringify(e.message.slice(0, 300))}`);
  const issues = (e.details.issues ?? []) as Issue[];
  // Text that is not YAML, or not a mapping, is refused as a whole, by design.
  if (issues.length === 0) {
    if (/not valid YAML or JSON|a plan is a mapping/.test(e.message)) return;
    throw new OracleViolation(`a refusal without issues: ${e.message.slice(0, 300)}`);
  }
  for (const i of issues) {
    if (!i.message) throw new OracleViolation(`an issue at ${i.path.join('.')} has no message`);
    if (i.path.length === 0 && !/nrecognized key/.test(i.message)) throw new OracleViolation(`an issue names no field: "${i.message}" (plan ${JSON.stringify(text.slice(0, 200))})`);
  }
}

// ---- the target -------------------------------------------------------------------------------

const figures = { accepted: 0, viaFile: 0, longestText: 0 };
let dir = '';
let readPlanFile: ((file: string) => Promise<{ plan: Plan }>) | null = null;
let n = 0;

export const planTarget: FuzzTarget<PlanInput> = {
  name: 'plan',
  extension: '.yaml',

  async setup() {
    dir = mkdtempSync(path.join(os.tmpdir(), 'fleetpatch-fuzz-plan-'));
    readPlanFile = (await import('../../src/control/rollouts.ts')).readPlanFile;
  },

  arbitrary() {
    const edits = fc.oneof({ weight: 2, arbitrary: fc.constant([] as Edit[]) }, { weight: 5, arbitrary: fc.array(edit, { minLength: 1, maxLength: 4 }) });
    const structured = fc.tuple(planObject, edits, fc.constantFrom('yaml' as const, 'flow' as const, 'json' as const)).map(([p, edits, style]) => ({ how: `${style} ${edits.map((e) => e.kind).join('+') || 'plain'}`, text: write(applyEdits(p, edits), style) }));
    return fc.oneof(
      { weight: 8, arbitrary: structured },
      { weight: 3, arbitrary: fc.tuple(structured, fc.array(textEdit, { minLength: 1, maxLength: 4 })).map(([s, edits]) => ({ how: `text-mutated ${s.how}`, text: applyTextEdits(s.text, edits) })) },
      { weight: 1, arbitrary: fc.oneof(fc.string({ maxLength: 200 }), fc.string({ unit: 'binary', maxLength: 200 }), fc.array(fc.constantFrom(...YAML_TOKENS), { maxLength: 20 }).map((t) => t.join(''))).map((text) => ({ how: 'random text', text })) },
    );
  },

  async run({ text }) {
    figures.longestText = Math.max(figures.longestText, text.length);
    const source = 'plan.yaml';
    // Plan files are read up to 1 MiB (FILE_LIMITS.plan); a longer text never reaches the parser
    // through a file, so it is parsed here without the hang limit (and readPlanFile must refuse it).
    const tooBig = Buffer.byteLength(text) > FILE_LIMITS.plan;
    const attempt = (): { plan: Plan } | { error: FleetpatchError } => {
      try {
        return { plan: tooBig ? parsePlan(text, source) : timed('parsePlan', () => parsePlan(text, source), text.length) };
      } catch (e) {
        refusal(e); // rethrows anything that is not the catalogue's
        return { error: e as FleetpatchError };
      }
    };
    const first = attempt();
    const again = attempt();
    if ('plan' in first !== 'plan' in again) throw new OracleViolation('the same text was accepted once and refused once');
    if ('error' in first && 'error' in again && first.error.message !== again.error.message) throw new OracleViolation(`the same text was refused differently: ${first.error.message} / ${again.error.message}`);
    if ('plan' in first && 'plan' in again && JSON.stringify(first.plan) !== JSON.stringify(again.plan)) throw new OracleViolation('the same text gave two different plans');

    // The real reader, now and then: a file on disk, stat, a bounded read, the same parse.
    if (readPlanFile && tooBig) {
      const file = path.join(dir, source);
      writeFileSync(file, text);
      let code = 'accepted';
      try {
        await readPlanFile(file);
      } catch (e) {
        refusal(e);
        code = (e as FleetpatchError).code;
      }
      if (code !== 'FILE_TOO_LARGE') throw new OracleViolation(`readPlanFile read a ${Buffer.byteLength(text)}-byte plan (${code}), past the 1 MiB limit`);
    } else if (readPlanFile && n++ % 16 === 0) {
      figures.viaFile++;
      const file = path.join(dir, source);
      writeFileSync(file, text);
      let viaFile: string;
      try {
        const r = await timedAsync('readPlanFile', () => readPlanFile!(file), text.length);
        viaFile = JSON.stringify(r.plan);
      } catch (e) {
        refusal(e);
        const err = e as FleetpatchError;
        viaFile = `refused ${err.message.replace(file, source)}`;
      }
      const direct = 'plan' in first ? JSON.stringify(first.plan) : `refused ${first.error.message}`;
      if (viaFile !== direct) throw new OracleViolation(`readPlanFile and parsePlan disagree: ${viaFile.slice(0, 200)} / ${direct.slice(0, 200)}`);
    }

    if ('error' in first) {
      checkRefusal(first.error, source, text);
      const issues = (first.error.details.issues ?? []) as Issue[];
      // Outcome: the first field the schema complained about (its top-level key), or the reason.
      const yamlWhy = /not valid YAML or JSON: (.*)$/.exec(first.error.message)?.[1]?.replace(/ at line \d+.*$/, '').replace(/:.*$/, '');
      const where = issues[0]?.path[0] ?? (yamlWhy !== undefined ? `(not YAML: ${yamlWhy})` : '(not a mapping)');
      return `refused PLAN_INVALID ${where}`;
    }
    checkRepresentable(first.plan);
    figures.accepted++;
    return 'accepted';
  },

  encode: ({ text }) => new TextEncoder().encode(text),
  decode: (bytes) => ({ how: 'corpus', text: new TextDecoder().decode(bytes) }),
  figures: () => ({ ...figures }),
  async teardown() {
    if (dir) rmSync(dir, { recursive: true, force: true });
  },
};
