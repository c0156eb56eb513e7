/**
 * The rollout plan: what an operator writes (YAML or JSON), validated by zod. The schema is the
 * type. `parsePlan` turns file text into a Plan or a PLAN_INVALID error listing every problem with
 * its path ("waves[2].hosts: ..."). Pure: reading files and payload bytes happens at the edges.
 */
import { z } from 'zod';
import { Lexer, LineCounter, Parser, isScalar, parseDocument, visit } from 'yaml';
import { FleetpatchError } from '../errors.ts';
import { findUnstorable, formatPath, printable, StorableString, unstorable } from '../domain/text.ts';
import { parseBudget, type Budget } from './budget.ts';
import { parseDuration } from './duration.ts';
import { webhookUrlProblem } from './webhook-target.ts';

/**
 * The bounds of every number and text in a plan: what the workflow, Temporal and the event
 * catalogue can honour, so no plan that validates can make a rollout fail later on its own data
 * (docs/rollouts.md, "Limits").
 */
export const PLAN_LIMITS = {
  /** The longest bake: 30 days. A Temporal timer and a JS Date both take far more; a rollout that
   * must wait longer waits at an approval gate, which holds as long as it takes. */
  maxBakeMs: 30 * 86_400_000,
  /** Hosts in flight at once, per plan or per wave. */
  maxConcurrency: 1000,
  /** A wave size given as a host count (larger counts mean "every host" anyway). */
  maxWaveHosts: 1_000_000,
  /** A failure budget given as a count. */
  maxBudgetCount: 1_000_000,
  maxWaves: 100,
  maxPayloads: 64,
  maxGates: 100,
  /** hosts.ids: the plan travels in the workflow's input, which Temporal caps at 2 MiB (and in a 1 MiB plan file). */
  maxHostIds: 5_000,
  hostIdLength: 128,
  maxLabels: 32,
  labelLength: 128,
  /** A payload name: Xen's, 1 to 127 bytes. */
  payloadNameBytes: 127,
  fileLength: 4096,
  /** verify.call is recorded as a function name (at most 127 characters). */
  verifyCallLength: 127,
  verifyExpectLength: 200,
  descriptionLength: 2000,
  webhookLength: 2000,
  /** A duration or budget written as text. */
  textNumberLength: 32,
} as const;

const L = PLAN_LIMITS;
/**
 * Every text of a plan: what PostgreSQL cannot store (NUL, a lone surrogate) is refused here,
 * naming the field, not when a rollout records it.
 */
const Text = StorableString;
const percent = /^\s*\d+(\.\d+)?\s*%\s*$/;
const utf8Length = (v: string) => new TextEncoder().encode(v).length;

const WaveSizeSchema = z.union([
  z.number().int().positive().max(L.maxWaveHosts, `a host count is at most ${L.maxWaveHosts} (use "100%" for every host)`),
  Text.max(L.textNumberLength)
    .regex(percent, 'must be a host count or a percentage such as "10%"')
    .refine((v) => parseFloat(v) > 0 && parseFloat(v) <= 100, 'a percentage must be above 0% and at most 100%'),
]);

const BudgetSchema = z
  .union([z.number(), Text.max(L.textNumberLength)])
  .transform((v, ctx): Budget => {
    const b = parseBudget(v);
    if (!b) {
      ctx.addIssue({ code: 'custom', message: `${JSON.stringify(v)} is not a failure budget: use a count (e.g. 3) or a percentage (e.g. "5%")` });
      return z.NEVER;
    }
    if (b.kind === 'count' && b.count > L.maxBudgetCount) {
      ctx.addIssue({ code: 'custom', message: `a failure budget count is at most ${L.maxBudgetCount} (use "100%" to tolerate every failure)` });
      return z.NEVER;
    }
    return b;
  });

const DurationSchema = z
  .union([Text.max(L.textNumberLength), z.number()])
  .transform((v, ctx) => {
    const ms = parseDuration(v);
    if (ms === undefined) {
      ctx.addIssue({ code: 'custom', message: `${JSON.stringify(v)} is not a duration: use e.g. "30s", "10m", "1h30m" or 0` });
      return z.NEVER;
    }
    if (ms > L.maxBakeMs) {
      ctx.addIssue({ code: 'custom', message: `${JSON.stringify(v)} is longer than the longest bake, 30d; hold the rollout with an approval gate instead` });
      return z.NEVER;
    }
    return ms;
  });

const BuildIdSchema = Text.regex(/^[0-9a-fA-F]{2,128}$/, 'must be a build-id in hex')
  .transform((v) => v.toLowerCase());

/** Xen's payload name: 1 to 127 bytes, no NUL (Text refuses it). */
export const PayloadNameSchema = Text.min(1).refine((v) => utf8Length(v) <= L.payloadNameBytes, `a payload name is 1 to ${L.payloadNameBytes} bytes (Xen's limit) without NUL`);

export const PayloadRefSchema = z.union([
  z.object({ file: Text.min(1).max(L.fileLength), name: PayloadNameSchema.optional(), signature: Text.min(1).max(L.fileLength).optional() }).strict(),
  z.object({ buildId: BuildIdSchema }).strict(),
]);

const WebhookSchema = StorableString.max(L.webhookLength).superRefine((v, ctx) => {
  // Text too long or unstorable has its refusal already: one reason per field.
  if (v.length > L.webhookLength || unstorable(v)) return;
  const problem = webhookUrlProblem(v);
  if (problem) ctx.addIssue({ code: 'custom', message: problem });
});

const ShortName = Text.regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/, 'must be a short name of letters, digits, ".", "_" or "-"');
const Label = Text.min(1).max(L.labelLength);

export const WaveSchema = z
  .object({
    name: ShortName,
    /** Cumulative: after this wave, this many (or this share) of the selected hosts are patched. */
    hosts: WaveSizeSchema,
    /** Patch one value of this host label (e.g. region) at a time within the wave. */
    groupBy: Label.optional(),
    concurrency: z.number().int().min(1).max(L.maxConcurrency).optional(),
  })
  .strict();

export const PlanSchema = z
  .object({
    name: ShortName,
    description: Text.max(L.descriptionLength).optional(),
    payloads: z.array(PayloadRefSchema).min(1, 'name at least one payload').max(L.maxPayloads),
    /**
     * Payloads must carry an ed25519 signature (`<file>.sig`, or `signature:`) by a trusted key
     * (FLEETPATCH_TRUSTED_KEYS) unless this says `true`, explicitly.
     */
    allowUnsigned: z.boolean().default(false),
    /** apply: on top of each host's stack | replace: one cumulative payload | stack: an ordered list. */
    mode: z.enum(['apply', 'replace', 'stack']).default('apply'),
    hosts: z
      .object({
        labels: z
          .record(Label, Label)
          .refine((r) => Object.keys(r).length <= L.maxLabels, `at most ${L.maxLabels} labels`)
          .optional(),
        ids: z.array(Text.min(1).max(L.hostIdLength)).max(L.maxHostIds).optional(),
      })
      .strict()
      .default({}),
    waves: z.array(WaveSchema).min(1, 'name at least one wave').max(L.maxWaves),
    concurrency: z.number().int().min(1).max(L.maxConcurrency).default(50),
    budget: z
      .object({ perWave: BudgetSchema.optional(), total: BudgetSchema.optional() })
      .strict()
      .default({}),
    /** Waiting time between waves (a durable timer), at most 30 days. */
    bake: DurationSchema.default(0),
    gates: z
      .array(
        z
          .object({
            after: Text.max(64),
            approval: z.literal(true),
            /** The approval must come from someone other than who started the rollout (enforced by the workflow). */
            requireDifferentApprover: z.boolean().optional(),
          })
          .strict(),
      )
      .max(L.maxGates)
      .default([]),
    verify: z
      .object({
        call: Text.min(1).max(L.verifyCallLength),
        expect: Text.max(L.verifyExpectLength),
      })
      .strict()
      .optional(),
    onFailure: z.enum(['rollback', 'pause']).default('rollback'),
    /**
     * POSTed a JSON line for every rollout event (started, wave finished, paused, ...): http(s)
     * only, without credentials (webhook-target.ts); the ports of fleetpatch's own services are
     * refused where the configuration is known (the CLI, the API, the sending worker).
     */
    notify: z.object({ webhook: WebhookSchema }).strict().optional(),
  })
  .strict();

interface Issue {
  path: PropertyKey[];
  message: string;
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/**
 * The rules between fields (wave names unique, sizes cumulative, gates after a wave), checked on
 * the raw plan so they are reported together with every other problem, not once those are fixed.
 */
function crossFieldIssues(value: unknown): Issue[] {
  if (!isRecord(value)) return [];
  const issues: Issue[] = [];
  const waves = Array.isArray(value.waves) ? value.waves : [];
  const names = new Set<string>();
  waves.forEach((w, i) => {
    if (!isRecord(w) || typeof w.name !== 'string') return;
    if (names.has(w.name)) issues.push({ path: ['waves', i, 'name'], message: `wave name "${w.name.slice(0, 64)}" is used twice` });
    names.add(w.name);
  });
  let lastPercent = 0;
  let lastCount = 0;
  waves.forEach((w, i) => {
    if (!isRecord(w)) return;
    const size = WaveSizeSchema.safeParse(w.hosts);
    if (!size.success) return;
    if (typeof size.data === 'number') {
      if (size.data < lastCount) issues.push({ path: ['waves', i, 'hosts'], message: `wave sizes are cumulative; ${size.data} is smaller than an earlier wave's ${lastCount}` });
      lastCount = Math.max(lastCount, size.data);
    } else {
      const p = parseFloat(size.data);
      if (p < lastPercent) issues.push({ path: ['waves', i, 'hosts'], message: `wave sizes are cumulative; ${size.data.trim()} is smaller than an earlier wave's ${lastPercent}%` });
      lastPercent = Math.max(lastPercent, p);
    }
  });
  if (Array.isArray(value.gates)) {
    value.gates.forEach((g, i) => {
      if (isRecord(g) && typeof g.after === 'string' && !names.has(g.after)) {
        issues.push({ path: ['gates', i, 'after'], message: `no wave is named "${g.after.slice(0, 64)}"` });
      }
    });
  }
  return issues;
}

export type Plan = z.infer<typeof PlanSchema>;
export type PlanInput = z.input<typeof PlanSchema>;
export type Wave = Plan['waves'][number];

/** Control characters (a key with a newline in it, found by fuzzing) and lone surrogates as escapes: the sentence stays one line. */
function formatIssues(issues: readonly Issue[]): string {
  return issues.map((i) => `${i.path.length > 0 ? formatPath(i.path) : '(plan)'}: ${printable(i.message)}`).join('; ');
}

/**
 * zod's issues as the plan reports them. A label name that cannot be stored is an `invalid_key`
 * whose own message is only "Invalid key in record": the reason is in its inner issues. A field
 * that takes one of several shapes (a count or a percentage, a file or a build-id) fails as an
 * `invalid_union` ("Invalid input"): when one shape was the one meant (its type and keys fit),
 * its own issues say what is wrong.
 */
function planIssues(issues: readonly z.core.$ZodIssue[], prefix: readonly PropertyKey[] = []): Issue[] {
  return issues.flatMap((i): Issue[] => {
    const path = [...prefix, ...i.path];
    if (i.code === 'invalid_key') return [{ path, message: `its name ${i.issues.map((inner) => inner.message).join('; ')}` }];
    if (i.code === 'invalid_union') {
      const meant = i.errors.find((branch) => branch.length > 0 && branch.every((b) => b.code !== 'invalid_type' && b.code !== 'unrecognized_keys' && b.code !== 'invalid_union'));
      if (meant) return planIssues(meant, path);
    }
    return [{ path, message: i.message }];
  });
}

/**
 * Any text of the plan that cannot be stored and that no field's schema refused already (a field
 * whose schema is not built on Text): the plan as a whole is held to it, so that no plan that
 * validates can make a rollout fail later when it records what it was given.
 */
function unstorableIssues(value: unknown, reported: readonly Issue[]): Issue[] {
  const found = findUnstorable(value);
  if (!found) return [];
  const at = formatPath(found.path);
  return reported.some((i) => formatPath(i.path) === at) ? [] : [{ path: found.path, message: found.problem }];
}

/** Validates an already-parsed object; PLAN_INVALID lists every problem at once, with its path. */
export function validatePlan(value: unknown, source = 'plan'): Plan {
  const parsed = PlanSchema.safeParse(value);
  const fields: Issue[] = [...(parsed.success ? [] : planIssues(parsed.error.issues)), ...crossFieldIssues(value)];
  const issues = [...fields, ...unstorableIssues(value, fields)];
  if (issues.length > 0 || !parsed.success) throw new FleetpatchError('PLAN_INVALID', `${printable(source)}: ${formatIssues(issues)}`, { issues: issues.map((i) => ({ path: i.path.map((p) => printable(String(p))), message: printable(i.message) })) });
  return parsed.data;
}

/** A plan nests four levels deep; YAML's composer recurses once per level, so a limit keeps it off the stack's end. */
const MAX_NESTING = 64;
const TOO_DEEP = `it nests too deeply (at most ${MAX_NESTING} levels)`;

/**
 * Whether a YAML text nests deeper than MAX_NESTING, from yaml's own parser, which keeps its open
 * collections on a stack of its own (no recursion) and is stopped as soon as it is too deep.
 * Checked first, so that nesting is refused in the same words whatever the caller's stack: left to
 * the stack, a text was refused as too deep once and for a syntax error further on the next time
 * (found by fuzzing).
 */
function nestsTooDeeply(text: string): boolean {
  const parser = new Parser();
  for (const lexeme of new Lexer().lex(text)) {
    for (const _token of parser.next(lexeme)) {
      // documents are not kept: only the depth matters here
    }
    // The stack holds the document, every collection still open, and the node being read.
    if (parser.stack.length > MAX_NESTING + 2) return true;
  }
  return false;
}

/**
 * YAML text to a value, as yaml's parse() does, with its duplicate-key check made linear: yaml's
 * own compares every pair of keys of a mapping, so a plan of a few hundred KiB with tens of
 * thousands of keys took seconds, and a 1 MiB one most of a minute (found by fuzzing).
 */
function parseYaml(text: string): unknown {
  if (nestsTooDeeply(text)) throw new Error(TOO_DEEP);
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { uniqueKeys: false, lineCounter });
  if (doc.errors.length > 0) throw doc.errors[0];
  let duplicate: string | null = null;
  visit(doc, {
    Map(_key, map) {
      const seen = new Set<string>();
      for (const pair of map.items) {
        // Scalar keys are equal when their values are (yaml's rule); other keys never are.
        if (!isScalar(pair.key)) continue;
        const key = `${typeof pair.key.value}:${String(pair.key.value)}`;
        if (seen.has(key)) {
          const at = lineCounter.linePos(pair.key.range?.[0] ?? 0);
          duplicate = `Map keys must be unique at line ${at.line}, column ${at.col}: ${JSON.stringify(String(pair.key.value)).slice(0, 80)} appears twice`;
          return visit.BREAK;
        }
        seen.add(key);
      }
      return undefined;
    },
  });
  if (duplicate) throw new Error(duplicate);
  return doc.toJS();
}

/** Parses YAML (a superset of JSON) plan text. */
export function parsePlan(text: string, source = 'plan'): Plan {
  let value: unknown;
  try {
    value = parseYaml(text);
  } catch (e) {
    // Nesting deeper than the parser's stack ends where the stack does, and that depends on the
    // caller: say so without the position, so the same text always gets the same refusal.
    const why = /Maximum call stack size exceeded/.test((e as Error).message) ? TOO_DEEP : (e as Error).message.split('\n')[0];
    throw new FleetpatchError('PLAN_INVALID', `${source}: not valid YAML or JSON: ${why}`);
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw new FleetpatchError('PLAN_INVALID', `${source}: a plan is a mapping with name, payloads and waves`);
  }
  return validatePlan(value, source);
}
