/**
 * The rollout plan: what an operator writes (YAML or JSON), validated by zod. The schema is the
 * type. `parsePlan` turns file text into a Plan or a PLAN_INVALID error listing every problem with
 * its path ("waves[2].hosts: ..."). Pure: reading files and payload bytes happens at the edges.
 */
import { z } from 'zod';
import { parse as parseYaml } from 'yaml';
import { FleetpatchError } from '../errors.ts';
import { parseBudget, type Budget } from './budget.ts';
import { parseDuration } from './duration.ts';

const percent = /^\s*\d+(\.\d+)?\s*%\s*$/;

const WaveSizeSchema = z.union([
  z.number().int().positive(),
  z.string().regex(percent, 'must be a host count or a percentage such as "10%"').refine((v) => parseFloat(v) > 0 && parseFloat(v) <= 100, 'a percentage must be above 0% and at most 100%'),
]);

const BudgetSchema = z
  .union([z.number(), z.string()])
  .transform((v, ctx): Budget => {
    const b = parseBudget(v);
    if (!b) {
      ctx.addIssue({ code: 'custom', message: `${JSON.stringify(v)} is not a failure budget: use a count (e.g. 3) or a percentage (e.g. "5%")` });
      return z.NEVER;
    }
    return b;
  });

const DurationSchema = z
  .union([z.string(), z.number()])
  .transform((v, ctx) => {
    const ms = parseDuration(v);
    if (ms === undefined) {
      ctx.addIssue({ code: 'custom', message: `${JSON.stringify(v)} is not a duration: use e.g. "30s", "10m", "1h30m" or 0` });
      return z.NEVER;
    }
    return ms;
  });

const BuildIdSchema = z
  .string()
  .regex(/^[0-9a-fA-F]{2,128}$/, 'must be a build-id in hex')
  .transform((v) => v.toLowerCase());

export const PayloadRefSchema = z.union([
  z.object({ file: z.string().min(1), name: z.string().min(1).max(127).optional() }).strict(),
  z.object({ buildId: BuildIdSchema }).strict(),
]);

export const WaveSchema = z
  .object({
    name: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/, 'must be a short name of letters, digits, ".", "_" or "-"'),
    /** Cumulative: after this wave, this many (or this share) of the selected hosts are patched. */
    hosts: WaveSizeSchema,
    /** Patch one value of this host label (e.g. region) at a time within the wave. */
    groupBy: z.string().min(1).optional(),
    concurrency: z.number().int().min(1).max(1000).optional(),
  })
  .strict();

export const PlanSchema = z
  .object({
    name: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/, 'must be a short name of letters, digits, ".", "_" or "-"'),
    description: z.string().optional(),
    payloads: z.array(PayloadRefSchema).min(1, 'name at least one payload'),
    /** apply: on top of each host's stack | replace: one cumulative payload | stack: an ordered list. */
    mode: z.enum(['apply', 'replace', 'stack']).default('apply'),
    hosts: z
      .object({
        labels: z.record(z.string(), z.string()).optional(),
        ids: z.array(z.string().min(1)).optional(),
      })
      .strict()
      .default({}),
    waves: z.array(WaveSchema).min(1, 'name at least one wave'),
    concurrency: z.number().int().min(1).max(1000).default(50),
    budget: z
      .object({ perWave: BudgetSchema.optional(), total: BudgetSchema.optional() })
      .strict()
      .default({}),
    /** Waiting time between waves (a durable timer). */
    bake: DurationSchema.default(0),
    gates: z.array(z.object({ after: z.string(), approval: z.literal(true) }).strict()).default([]),
    verify: z
      .object({
        call: z.string().min(1),
        expect: z.string(),
      })
      .strict()
      .optional(),
    onFailure: z.enum(['rollback', 'pause']).default('rollback'),
    /** POSTed a JSON line for every rollout event (started, wave finished, paused, ...). */
    notify: z.object({ webhook: z.string().url() }).strict().optional(),
  })
  .strict()
  .superRefine((plan, ctx) => {
    const names = new Set<string>();
    plan.waves.forEach((w, i) => {
      if (names.has(w.name)) ctx.addIssue({ code: 'custom', path: ['waves', i, 'name'], message: `wave name "${w.name}" is used twice` });
      names.add(w.name);
    });
    let lastPercent = 0;
    let lastCount = 0;
    plan.waves.forEach((w, i) => {
      if (typeof w.hosts === 'number') {
        if (w.hosts < lastCount) ctx.addIssue({ code: 'custom', path: ['waves', i, 'hosts'], message: `wave sizes are cumulative; ${w.hosts} is smaller than an earlier wave's ${lastCount}` });
        lastCount = w.hosts;
      } else {
        const p = parseFloat(w.hosts);
        if (p < lastPercent) ctx.addIssue({ code: 'custom', path: ['waves', i, 'hosts'], message: `wave sizes are cumulative; ${w.hosts} is smaller than an earlier wave's ${lastPercent}%` });
        lastPercent = p;
      }
    });
    plan.gates.forEach((g, i) => {
      if (!names.has(g.after)) ctx.addIssue({ code: 'custom', path: ['gates', i, 'after'], message: `no wave is named "${g.after}"` });
    });
  });

export type Plan = z.infer<typeof PlanSchema>;
export type PlanInput = z.input<typeof PlanSchema>;
export type Wave = Plan['waves'][number];

function formatIssues(error: z.ZodError): string {
  return error.issues
    .map((i) => {
      const where = i.path.reduce<string>((acc, p) => (typeof p === 'number' ? `${acc}[${p}]` : acc ? `${acc}.${String(p)}` : String(p)), '');
      return `${where || '(plan)'}: ${i.message}`;
    })
    .join('; ');
}

/** Validates an already-parsed object. */
export function validatePlan(value: unknown, source = 'plan'): Plan {
  const parsed = PlanSchema.safeParse(value);
  if (!parsed.success) throw new FleetpatchError('PLAN_INVALID', `${source}: ${formatIssues(parsed.error)}`, { issues: parsed.error.issues });
  return parsed.data;
}

/** Parses YAML (a superset of JSON) plan text. */
export function parsePlan(text: string, source = 'plan'): Plan {
  let value: unknown;
  try {
    value = parseYaml(text);
  } catch (e) {
    throw new FleetpatchError('PLAN_INVALID', `${source}: not valid YAML or JSON: ${(e as Error).message.split('\n')[0]}`);
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw new FleetpatchError('PLAN_INVALID', `${source}: a plan is a mapping with name, payloads and waves`);
  }
  return validatePlan(value, source);
}
