/**
 * rolloutWorkflow: a staged fleet rollout. Preflight (nothing changes on any host), then waves of
 * hostPatchWorkflow children with bounded concurrency, failure budgets checked after every host,
 * bake timers and approval gates between waves, and on failure an automatic rollback (or a pause,
 * as the plan says). Pause, resume, abort and approve are updates recorded with who and why.
 *
 * Scale: hosts are listed from PostgreSQL in pages, never held in history; after HOSTS_PER_RUN
 * hosts (or when Temporal suggests it) the workflow continues as new, carrying only the compact
 * RolloutProgress, so a 10,000-host rollout stays far from the history limits.
 */
import {
  condition,
  continueAsNew,
  executeChild,
  allHandlersFinished,
  setHandler,
  workflowInfo,
  ParentClosePolicy,
} from '@temporalio/workflow';
import {
  acceptFailures,
  applyPreflight,
  budgetVerdict,
  FINAL_STATUSES,
  initialProgress,
  recordHostResult,
  rollbackProgress,
  totals,
  type FinalRolloutStatus,
  type RolloutProgress,
  type RolloutStatus,
} from '../src/rollout/progress.ts';
import type { Actor, HostPatchResult, RolloutInput } from '../src/rollout/types.ts';
import type { EventBody } from '../activities/recording.ts';
import { bookkeeping, preflightOps } from './activities.ts';
import { hostFailure } from './failures.ts';
import { hostPatchWorkflow } from './host-patch.ts';
import { abortUpdate, approveUpdate, pauseUpdate, progressQuery, resumeUpdate, type AbortRequest } from './messages.ts';
import { runBounded } from './pool.ts';
import { rollbackWorkflow } from './rollback.ts';

/** Hosts handled per workflow run before continuing as new. */
export const HOSTS_PER_RUN = 500;

export interface RolloutCarry {
  progress: RolloutProgress;
  abort?: AbortRequest;
  approvedAfter?: string[];
  /** Set when the plan's onFailure=pause stopped on an exceeded budget. */
  budgetPaused?: boolean;
}

const SYSTEM: Actor = { kind: 'system', id: 'fleetpatch' };

export async function rolloutWorkflow(input: RolloutInput, carry?: RolloutCarry): Promise<RolloutProgress> {
  const { plan, rolloutId } = input;
  const info = workflowInfo();
  const p: RolloutProgress = carry?.progress ?? initialProgress(rolloutId, plan, new Date().toISOString());
  if (carry) p.generation++;
  let abort: AbortRequest | undefined = carry?.abort;
  const approvedAfter = new Set(carry?.approvedAfter ?? []);
  let pausedBeforeStatus: RolloutStatus | undefined = p.status === 'paused' ? 'running' : undefined;
  let hostsThisRun = 0;

  const record = (key: string, body: EventBody, actor: Actor = SYSTEM) =>
    bookkeeping.recordRolloutEvent({ rolloutId, key, body, actor, ...(plan.notifyWebhook ? { webhook: plan.notifyWebhook } : {}) });
  const decide = async (action: 'paused' | 'resumed' | 'aborted' | 'approved', by: Actor, reason: string, wave?: string) => {
    const n = p.decisions.length;
    p.decisions.push({ action, by, reason, at: new Date().toISOString(), ...(wave ? { wave } : {}) });
    const body: EventBody =
      action === 'paused'
        ? { type: 'RolloutPaused', rolloutId, reason, ...(wave ? { wave } : {}) }
        : action === 'resumed'
          ? { type: 'RolloutResumed', rolloutId, reason }
          : action === 'aborted'
            ? { type: 'RolloutAborted', rolloutId, reason }
            : { type: 'ApprovalGiven', rolloutId, wave: wave!, reason };
    await record(`decision-${n}`, body, by);
  };
  const currentWave = () => p.waves[p.cursor.wave]?.name;
  const isFinal = () => FINAL_STATUSES.includes(p.status);

  setHandler(progressQuery, () => p);
  setHandler(
    pauseUpdate,
    async (req) => {
      pausedBeforeStatus = p.status;
      p.status = 'paused';
      await decide('paused', req.by, req.reason, currentWave());
      return p;
    },
    { validator: (req) => refuseUnless(!isFinal() && p.status !== 'paused' && p.status !== 'rolling-back', `cannot pause a rollout that is ${p.status}`, req.reason) },
  );
  setHandler(
    resumeUpdate,
    async (req) => {
      p.status = pausedBeforeStatus ?? 'running';
      pausedBeforeStatus = undefined;
      await decide('resumed', req.by, req.reason);
      return p;
    },
    { validator: (req) => refuseUnless(p.status === 'paused', `cannot resume a rollout that is ${p.status}, not paused`, req.reason) },
  );
  setHandler(
    abortUpdate,
    async (req) => {
      abort = req;
      await decide('aborted', req.by, req.rollback ? `${req.reason} (and roll back)` : req.reason);
      return p;
    },
    { validator: (req) => refuseUnless(!isFinal() && !abort, isFinal() ? `the rollout already ended (${p.status})` : 'the rollout is already being aborted', req.reason) },
  );
  setHandler(
    approveUpdate,
    async (req) => {
      const wave = p.awaitingApprovalAfter!;
      approvedAfter.add(wave);
      await decide('approved', req.by, req.reason, wave);
      return p;
    },
    {
      validator: (req) => {
        refuseUnless(p.status === 'awaiting-approval' && p.awaitingApprovalAfter !== undefined, `no approval is pending: the rollout is ${p.status}`, req.reason);
        if (req.wave && req.wave !== p.awaitingApprovalAfter) throw new Error(`the pending gate is after wave "${p.awaitingApprovalAfter}", not "${req.wave}"`);
      },
    },
  );

  const carryNow = (): RolloutCarry => ({ progress: p, ...(abort ? { abort } : {}), approvedAfter: [...approvedAfter] });

  /** Waits out a pause; false when the rollout must stop scheduling (abort). */
  const mayContinue = async (): Promise<boolean> => {
    if (p.status === 'paused') await condition(() => p.status !== 'paused' || abort !== undefined);
    return abort === undefined;
  };

  if (!carry) {
    await record(
      'started',
      {
        type: 'RolloutStarted',
        rolloutId,
        planName: plan.name,
        mode: plan.mode,
        payloads: plan.payloads,
        waves: plan.waves.map((w) => ({ name: w.name })),
        ...(input.reason ? { reason: input.reason } : {}),
      },
      input.requestedBy,
    );
  }

  // ---- preflight -----------------------------------------------------------------------------
  if (!p.preflight) {
    const preflight = await preflightOps.preflight({ rolloutId, plan });
    Object.assign(p, applyPreflight(p, preflight));
    if (preflight.selected === 0) {
      return finish('failed', 'the plan selects no host of the fleet: check hosts.labels and hosts.ids');
    }
    if (preflight.unknownHostIds.length > 0) {
      return finish('failed', `the plan names hosts the fleet does not have: ${preflight.unknownHostIds.slice(0, 10).join(', ')}`);
    }
  }

  // ---- waves ---------------------------------------------------------------------------------
  const waves = p.preflight!.waves;
  while (p.cursor.wave < waves.length) {
    const w = p.cursor.wave;
    const wave = waves[w]!;
    const progress = p.waves[w]!;
    if (!(await mayContinue())) return stopForAbort();
    if (progress.planned === 0) {
      progress.status = 'skipped';
      p.cursor = { wave: w + 1, step: 0, offset: 0 };
      continue;
    }
    if (progress.status === 'pending') {
      progress.status = 'running';
      if (p.status !== 'paused') p.status = 'running';
      await record(`wave-${w}-started`, { type: 'WaveStarted', rolloutId, wave: wave.name, waveIndex: w, plannedHosts: progress.planned });
    }

    while (p.cursor.step < wave.steps.length) {
      const s = p.cursor.step;
      const stepSize = wave.steps[s]!.size;
      while (p.cursor.offset < stepSize) {
        // A page holds a few rounds of the wave's concurrency: small activity results, and a
        // continue-as-new check often enough to keep each run's history short.
        const limit = Math.min(Math.max(20, wave.concurrency * 4), 500, HOSTS_PER_RUN - hostsThisRun);
        const hostIds = await bookkeeping.listStepHosts({ rolloutId, wave: w, step: s, offset: p.cursor.offset, limit });
        if (hostIds.length === 0) break; // the stored plan has fewer hosts than the summary: nothing left
        let exceeded: string | undefined;
        const started = await runBounded(
          hostIds,
          wave.concurrency,
          async () => (await mayContinue()) && exceeded === undefined,
          async (hostId) => {
            const result = await runHost(input, hostId, w, wave.name);
            recordHostResult(p, w, result);
            const verdict = budgetVerdict(p, plan, w);
            if (verdict.exceeded && exceeded === undefined) exceeded = verdict.reason;
          },
        );
        p.cursor.offset += started;
        hostsThisRun += started;
        if (exceeded !== undefined) {
          // Hosts in flight when the budget tripped have finished since: say it with the final counts.
          const now = budgetVerdict(p, plan, w);
          const outcome = await onBudgetExceeded(w, now.exceeded ? now.reason : exceeded);
          if (outcome) return outcome;
        }
        if (abort) return stopForAbort();
        if (hostsThisRun >= HOSTS_PER_RUN || workflowInfo().continueAsNewSuggested) {
          await condition(allHandlersFinished);
          return continueAsNew<typeof rolloutWorkflow>(input, carryNow());
        }
      }
      p.cursor = { wave: w, step: s + 1, offset: 0 };
    }

    const verdict = budgetVerdict(p, plan, w);
    progress.status = verdict.exceeded ? 'failed' : 'succeeded';
    await record(`wave-${w}-finished`, { type: 'WaveFinished', rolloutId, wave: wave.name, waveIndex: w, outcome: progress.status, ...counts(progress) });
    p.cursor = { wave: w + 1, step: 0, offset: 0 };
    const more = p.waves.slice(w + 1).some((x) => x.planned > 0);
    if (!more) break;

    if (plan.approvalAfter.includes(wave.name) && !approvedAfter.has(wave.name)) {
      p.status = 'awaiting-approval';
      p.awaitingApprovalAfter = wave.name;
      await condition(() => approvedAfter.has(wave.name) || abort !== undefined);
      p.awaitingApprovalAfter = undefined;
      if (abort) return stopForAbort();
      p.status = 'running';
    }
    if (plan.bakeMs > 0) {
      p.status = 'baking';
      p.bakingUntil = new Date(Date.now() + plan.bakeMs).toISOString();
      await condition(() => abort !== undefined, plan.bakeMs);
      p.bakingUntil = undefined;
      if (abort) return stopForAbort();
      if (p.status === 'baking') p.status = 'running';
    }
    // A continue-as-new between waves keeps each run's history to one wave at most.
    if (workflowInfo().continueAsNewSuggested) {
      await condition(allHandlersFinished);
      return continueAsNew<typeof rolloutWorkflow>(input, carryNow());
    }
  }

  const t = totals(p);
  return finish('succeeded', t.failed > 0 ? `${t.failed} host(s) failed within the failure budget` : undefined);

  // ---- helpers (closures over this run's state) ----------------------------------------------

  async function onBudgetExceeded(w: number, reason: string): Promise<RolloutProgress | undefined> {
    p.stopReason = reason;
    if (plan.onFailure === 'pause') {
      pausedBeforeStatus = 'running';
      p.status = 'paused';
      await decide('paused', SYSTEM, `failure budget exceeded: ${reason}`, p.waves[w]!.name);
      if (!(await mayContinue())) return stopForAbort();
      // Resumed: the person accepted these failures; only a further one pauses again.
      acceptFailures(p, w);
      p.stopReason = undefined;
      return undefined;
    }
    p.waves[w]!.status = 'failed';
    await record(`wave-${w}-finished`, { type: 'WaveFinished', rolloutId, wave: p.waves[w]!.name, waveIndex: w, outcome: 'failed', reason, ...counts(p.waves[w]!) });
    const restored = await rollback(reason, SYSTEM);
    return finish(restored ? 'rolled-back' : 'rollback-incomplete', restored ? reason : `${reason}; ${incompleteReason()}`);
  }

  async function stopForAbort(): Promise<RolloutProgress> {
    const req = abort!;
    const reason = `aborted by ${req.by.id}: ${req.reason}`;
    if (req.rollback && !(await rollback(reason, req.by))) return finish('rollback-incomplete', `${reason}; ${incompleteReason()}`);
    return finish('aborted', reason);
  }

  /** Restores every host the rollout touched; true when all of them are back. */
  async function rollback(reason: string, by: Actor): Promise<boolean> {
    p.status = 'rolling-back';
    p.rollback = { status: 'running', requestedBy: by, reason, hosts: 0, rolledBack: 0, nothingToDo: 0, stackGrew: 0, unrecoverable: 0, failed: 0, problems: [] };
    const summary = await executeChild(rollbackWorkflow, {
      workflowId: `${info.workflowId}/rollback`,
      args: [
        {
          rolloutId,
          requestedBy: by,
          reason,
          ours: plan.payloads.map((x) => x.buildId),
          ...(plan.verify ? { verifyCall: plan.verify.call } : {}),
          concurrency: plan.concurrency,
          ...(plan.notifyWebhook ? { webhook: plan.notifyWebhook } : {}),
        },
      ],
      parentClosePolicy: ParentClosePolicy.TERMINATE,
    });
    p.rollback = rollbackProgress(summary, by, reason);
    return summary.outcome === 'rolled-back';
  }

  function incompleteReason(): string {
    const r = p.rollback!;
    const notBack = r.stackGrew + r.unrecoverable + r.failed;
    return `the rollback could not restore ${notBack} of ${r.hosts} host(s): ${r.problems.slice(0, 3).map((x) => `${x.hostId} (${x.outcome})`).join(', ')}${notBack > 3 ? ', ...' : ''}`;
  }

  async function finish(status: RolloutStatus, reason?: string): Promise<RolloutProgress> {
    p.status = status;
    if (reason) p.stopReason = reason;
    p.finishedAt = new Date().toISOString();
    await record('finished', { type: 'RolloutFinished', rolloutId, status: status as FinalRolloutStatus, ...(reason ? { reason } : {}) });
    await condition(allHandlersFinished);
    return p;
  }
}

function counts(w: { planned: number; patched: number; already: number; failed: number; unreachable: number }) {
  return { planned: w.planned, patched: w.patched, already: w.already, failed: w.failed, unreachable: w.unreachable };
}

function refuseUnless(ok: boolean, message: string, reason: string): void {
  if (!ok) throw new Error(message);
  if (!reason || !reason.trim()) throw new Error('say why: a reason is required and is recorded');
}

async function runHost(input: RolloutInput, hostId: string, wave: number, waveName: string): Promise<HostPatchResult> {
  try {
    return await executeChild(hostPatchWorkflow, {
      workflowId: `${workflowInfo().workflowId}/host/${hostId}`,
      args: [{ rolloutId: input.rolloutId, hostId, mode: input.plan.mode, payloads: input.plan.payloads, wave, waveName, ...(input.plan.verify ? { verify: input.plan.verify } : {}) }],
      parentClosePolicy: ParentClosePolicy.TERMINATE,
    });
  } catch (e) {
    // The child itself failed (not a host refusal, which it returns as a result): count it as a
    // failed host with the reason, never lose it.
    return { hostId, outcome: 'failed', failure: hostFailure('apply', e), applied: [] };
  }
}

