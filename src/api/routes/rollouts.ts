/**
 * Rollouts: list, dry-run plan, start, status (live, or what the event store recorded), per-host
 * results, and the decisions: pause, resume, abort, approve, roll back. Every decision is recorded
 * by the workflow with the token's name as the actor.
 */
import { z } from 'zod';
import { FleetpatchError } from '../../errors.ts';
import { rolloutReport } from '../../events/audit/rollout-report.ts';
import { listRollouts } from '../../events/audit/projections.ts';
import { PlanSchema, validatePlan, type Plan } from '../../rollout/plan.ts';
import { PreflightSummarySchema, RolloutProgressSchema } from '../../rollout/progress-schema.ts';
import { resolvePlanPayloads, startRollout, rolloutIdOf, workflowIdOf } from '../../control/rollouts.ts';
import { describeRollout, liveProgress, rolloutInput, startRollback, steerRollout, type SteerAction } from '../../control/steer.ts';
import { allowedFailures, describeBudget } from '../../rollout/budget.ts';
import type { RolloutProgress } from '../../rollout/progress.ts';
import type { RolloutInput } from '../../rollout/types.ts';
import { ApiErrorSchema } from '../errors.ts';
import { actorOf } from '../auth.ts';
import type { ApiContext } from '../../app/api-context.ts';
import { ReasonSchema, RolloutIdSchema, RolloutParams, RolloutSummaryOut, type Api } from '../schemas.ts';
import { dryRunPreflight } from '../../control/dry-run.ts';

const errors = { 400: ApiErrorSchema, 401: ApiErrorSchema, 403: ApiErrorSchema, 404: ApiErrorSchema, 409: ApiErrorSchema, 413: ApiErrorSchema, 415: ApiErrorSchema, 422: ApiErrorSchema, 503: ApiErrorSchema };

const PlanBody = z.object({ plan: PlanSchema.describe('a rollout plan (docs/rollouts.md); payloads by build-id: upload them first (POST /api/payloads)') }).strict();
const StartBody = z
  .object({
    plan: PlanSchema.describe('a rollout plan (docs/rollouts.md); payloads by build-id'),
    reason: ReasonSchema.optional(),
    id: RolloutIdSchema.optional().describe('the rollout id (default: the plan name and a hash of the plan)'),
  })
  .strict();

declare module 'fastify' {
  interface FastifyRequest {
    rawPlan?: unknown;
  }
}

/**
 * The plan as the request gave it, checked as the CLI checks a plan file (every problem at once,
 * including the rules between fields), with payloads by build-id only: the API has no files.
 */
function checkedPlan(raw: unknown): Plan {
  const plan = validatePlan(raw, 'body.plan');
  const files = plan.payloads.flatMap((p, i) => ('file' in p ? [i] : []));
  if (files.length > 0) {
    throw new FleetpatchError('PLAN_INVALID', `body.plan: the API takes payloads by build-id; upload the file first (POST /api/payloads) and name its build-id`, {
      issues: files.map((i) => ({ path: ['payloads', String(i), 'file'], message: 'the API takes payloads by build-id (POST /api/payloads stores a file)' })),
    });
  }
  return plan;
}

export function rolloutRoutes(app: Api, ctx: ApiContext): void {
  // A rollout's input never changes: read once from its history.
  const inputs = new Map<string, Promise<RolloutInput | null>>();
  const inputOf = (id: string) => {
    let p = inputs.get(id);
    if (!p) {
      p = rolloutInput(ctx.temporal.client.workflow.getHandle(workflowIdOf(id))).catch(() => null);
      inputs.set(id, p);
      if (inputs.size > 500) inputs.delete(inputs.keys().next().value!);
    }
    return p;
  };
  /** The latest rollback the event store records for the rollout, and the hosts it did not bring back. */
  const recordedRollback = async (id: string) => {
    const report = await rolloutReport(ctx.events, id).catch(() => null);
    const rb = report?.summary.rollback;
    if (!report || !rb) return {};
    const since = Date.parse(rb.startedAt);
    const latest = new Map(report.rollbacks.filter((b) => Date.parse(b.at) >= since).map((b) => [b.hostId, b]));
    return {
      rollback: {
        status: rb.status,
        requestedBy: rb.requestedBy,
        reason: rb.reason,
        hosts: rb.hosts,
        rolledBack: rb.rolledBack,
        nothingToDo: rb.nothingToDo,
        stackGrew: rb.stackGrew,
        unrecoverable: rb.unrecoverable,
        failed: rb.failed,
        notBack: [...latest.values()].filter((b) => b.outcome !== 'rolled-back' && b.outcome !== 'nothing-to-do').slice(0, 200).map((b) => ({ hostId: b.hostId, outcome: b.outcome, reason: b.reason })),
      },
    };
  };
  /** Who started it, its gates, and its failure budgets against the failures so far. */
  const planFacts = async (id: string, p: RolloutProgress) => {
    const input = await inputOf(id);
    if (!input) return {};
    const plan = input.plan;
    const planned = p.waves.reduce((n, w) => n + w.planned, 0);
    const failed = p.waves.reduce((n, w) => n + w.failed, 0);
    return {
      startedBy: input.requestedBy,
      gates: plan.approvalAfter.map((after) => ({ after, requireDifferentApprover: (plan.distinctApproverAfter ?? []).includes(after) })),
      budgets: {
        waves: p.waves.map((w) => ({ name: w.name, failed: w.failed, allowed: allowedFailures(plan.budget.perWave, w.planned), text: describeBudget(plan.budget.perWave, w.planned) })),
        total: { failed, allowed: allowedFailures(plan.budget.total, planned), text: describeBudget(plan.budget.total, planned) },
      },
    };
  };

  // The plan's cross-field rules and error paths need the plan as sent, before zod transforms it.
  app.addHook('preValidation', async (request) => {
    const body = request.body as { plan?: unknown } | undefined;
    if (body && typeof body === 'object' && 'plan' in body) request.rawPlan = body.plan;
  });

  app.get('/api/rollouts', {
    config: { role: 'viewer' },
    schema: { tags: ['rollouts'], summary: 'Every rollout, newest first (from the event store)', response: { 200: z.array(RolloutSummaryOut), ...errors } },
    handler: async () => (await listRollouts(ctx.events)).map((r) => ({ ...r })),
  });

  app.post('/api/rollouts/plan', {
    config: { role: 'operator' },
    schema: {
      tags: ['rollouts'],
      summary: 'Dry run: which hosts the plan selects, which build each gets, the waves; nothing is changed or recorded',
      body: PlanBody,
      response: {
        200: z.object({
          rolloutId: z.string(),
          payloads: z.array(z.object({ name: z.string(), buildId: z.string(), depends: z.string(), xenDepends: z.string().nullable() })),
          summary: PreflightSummarySchema,
          hosts: z.array(z.object({ hostId: z.string(), verdict: z.string(), reason: z.string().optional(), buildIds: z.array(z.string()) })),
        }),
        ...errors,
      },
    },
    handler: async (request) => {
      const plan = checkedPlan(request.rawPlan);
      const resolved = await resolvePlanPayloads(plan, '.', { pool: ctx.pool, actor: actorOf(request), store: false, planFile: 'body.plan', trustedKeys: await ctx.trustedKeys() });
      const fleet = await ctx.fleet();
      if (!fleet) throw new FleetpatchError('FLEET_FILE_INVALID', 'the API has no fleet file (FLEETPATCH_FLEET_FILE) to read the hosts from');
      const result = await dryRunPreflight(resolved, fleet, { pool: ctx.pool });
      const { rolloutId } = result;
      return {
        rolloutId,
        payloads: resolved.payloads.map((p) => ({ name: p.name, buildId: p.buildId, depends: p.depends, xenDepends: p.xenDepends ?? null })),
        summary: result.summary,
        hosts: result.hosts.map((h) => ({ hostId: h.hostId, verdict: h.verdict, ...(h.reason ? { reason: h.reason } : {}), buildIds: h.buildIds })),
      };
    },
  });

  app.post('/api/rollouts', {
    config: { role: 'operator' },
    schema: {
      tags: ['rollouts'],
      summary: 'Start a rollout (the same plan twice finds the first one: started is false)',
      body: StartBody,
      response: { 201: z.object({ rolloutId: z.string(), workflowId: z.string(), started: z.boolean() }), 200: z.object({ rolloutId: z.string(), workflowId: z.string(), started: z.boolean() }), ...errors },
    },
    handler: async (request, reply) => {
      const plan = checkedPlan(request.rawPlan);
      const by = actorOf(request);
      const resolved = await resolvePlanPayloads(plan, '.', { pool: ctx.pool, actor: by, store: true, planFile: 'body.plan', trustedKeys: await ctx.trustedKeys() });
      const s = await startRollout(ctx.temporal.client, ctx.temporal.taskQueue, resolved, { requestedBy: by, ...(request.body.reason ? { reason: request.body.reason } : {}), ...(request.body.id ? { rolloutId: request.body.id } : {}) });
      ctx.logger.info({ rolloutId: s.rolloutId, by: by.id, started: s.started }, 'rollout started through the API');
      return reply.code(s.started ? 201 : 200).send({ rolloutId: s.rolloutId, workflowId: s.workflowId, started: s.started });
    },
  });

  app.get('/api/rollouts/:id', {
    config: { role: 'viewer' },
    schema: {
      tags: ['rollouts'],
      summary: 'A rollout\'s progress: live from its workflow, or (no worker answering, or Temporal has forgotten it) what the event store recorded',
      params: RolloutParams,
      response: {
        200: z.object({
          rolloutId: z.string(),
          live: z.boolean(),
          progress: RolloutProgressSchema.optional(),
          unavailable: z.string().optional(),
          recorded: RolloutSummaryOut.optional(),
          startedBy: z.object({ kind: z.string(), id: z.string() }).optional(),
          gates: z.array(z.object({ after: z.string(), requireDifferentApprover: z.boolean() })).optional(),
          budgets: z
            .object({
              waves: z.array(z.object({ name: z.string(), failed: z.number(), allowed: z.number(), text: z.string() })),
              total: z.object({ failed: z.number(), allowed: z.number(), text: z.string() }),
            })
            .optional()
            .describe('failures so far against what each wave budget and the total budget allow'),
          rollback: z
            .object({
              status: z.enum(['running', 'finished']),
              requestedBy: z.object({ kind: z.string(), id: z.string() }).nullable(),
              reason: z.string(),
              hosts: z.number(),
              rolledBack: z.number(),
              nothingToDo: z.number(),
              stackGrew: z.number(),
              unrecoverable: z.number(),
              failed: z.number(),
              notBack: z.array(z.object({ hostId: z.string(), outcome: z.string(), reason: z.string().nullable() })),
            })
            .optional()
            .describe("the latest rollback as the event store has it (also one asked for after the rollout ended), with the hosts it did not bring back"),
        }),
        ...errors,
      },
    },
    handler: async (request) => {
      const id = rolloutIdOf(request.params.id);
      let unavailable: string | undefined;
      try {
        const live = await liveProgress(ctx.temporal.client, id, 5000);
        if ('progress' in live) return { rolloutId: id, live: true, progress: live.progress, ...(await planFacts(id, live.progress)), ...(await recordedRollback(id)) };
        unavailable = live.unavailable;
      } catch (e) {
        if (!(e instanceof FleetpatchError && (e.code === 'ROLLOUT_NOT_FOUND' || e.code === 'ROLLOUT_STATE'))) throw e;
        unavailable = e.message;
      }
      const report = await rolloutReport(ctx.events, id);
      return { rolloutId: id, live: false, unavailable, recorded: { ...report.summary } };
    },
  });

  app.get('/api/rollouts/:id/hosts', {
    config: { role: 'viewer' },
    schema: {
      tags: ['rollouts'],
      summary: 'Every host\'s outcome in the rollout and its rollback, and the dependency checks that did not match (from the event store)',
      params: RolloutParams,
      response: {
        200: z.object({
          rolloutId: z.string(),
          hosts: z.array(z.looseObject({ hostId: z.string(), wave: z.string(), outcome: z.string() })),
          rollbacks: z.array(z.looseObject({ hostId: z.string(), outcome: z.string() })),
          failedChecks: z.array(z.looseObject({ streamId: z.string(), event: z.looseObject({ hostId: z.string() }) })),
          checksTotal: z.number(),
        }),
        ...errors,
      },
    },
    handler: async (request) => {
      const id = rolloutIdOf(request.params.id);
      const r = await rolloutReport(ctx.events, id);
      return { rolloutId: id, hosts: r.hosts.map((h) => ({ ...h })), rollbacks: r.rollbacks.map((b) => ({ ...b })), failedChecks: r.failedChecks.map((c) => ({ ...c, event: { ...c.event } })), checksTotal: r.checksTotal };
    },
  });

  const steer = (action: SteerAction, body: z.ZodObject, summary: string) =>
    app.post(`/api/rollouts/:id/${action}`, {
      config: { role: 'operator' },
      schema: { tags: ['rollouts'], summary, params: RolloutParams, body, response: { 200: RolloutProgressSchema, ...errors } },
      handler: async (request) => {
        const b = request.body as { reason: string; wave?: string; rollback?: boolean };
        const by = actorOf(request);
        const p = await steerRollout(ctx.temporal.client, request.params.id, action, { by, reason: b.reason, ...(b.wave ? { wave: b.wave } : {}), ...(b.rollback ? { rollback: true } : {}) });
        ctx.logger.info({ rolloutId: p.rolloutId, action, by: by.id }, 'rollout steered through the API');
        return p;
      },
    });
  steer('pause', z.object({ reason: ReasonSchema }).strict(), 'Pause: hosts in flight finish, no new host starts');
  steer('resume', z.object({ reason: ReasonSchema }).strict(), 'Resume a paused rollout');
  steer('abort', z.object({ reason: ReasonSchema, rollback: z.boolean().optional().describe('also restore every host it touched') }).strict(), 'Abort: stop scheduling hosts (and roll back if asked)');
  steer(
    'approve',
    z.object({ reason: ReasonSchema, wave: z.string().max(63).optional().describe('the wave whose gate is approved (guards against approving the wrong gate)') }).strict(),
    'Approve going on past the gate the rollout waits at (a plan may require someone other than who started it)',
  );

  app.post('/api/rollouts/:id/rollback', {
    config: { role: 'operator' },
    schema: {
      tags: ['rollouts'],
      summary: 'Roll back a finished rollout: every host it patched back to its former stack (watch it with GET /api/rollouts/{id}/hosts)',
      params: RolloutParams,
      body: z.object({ reason: ReasonSchema }).strict(),
      response: { 202: z.object({ rolloutId: z.string(), workflowId: z.string() }), ...errors },
    },
    handler: async (request, reply) => {
      const id = rolloutIdOf(request.params.id);
      await describeRollout(ctx.temporal.client, id);
      const rb = await startRollback(ctx.temporal.client, ctx.temporal.taskQueue, id, actorOf(request), request.body.reason);
      return reply.code(202).send({ rolloutId: id, workflowId: rb.workflowId });
    },
  });
}
