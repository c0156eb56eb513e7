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
  ActivityFailure,
  ApplicationFailure,
  CancellationScope,
  ChildWorkflowFailure,
  ContinueAsNew,
  condition,
  continueAsNew,
  executeChild,
  allHandlersFinished,
  isCancellation,
  patched,
  proxyLocalActivities,
  setHandler,
  workflowInfo,
  ParentClosePolicy,
} from '@temporalio/workflow';
import {
  acceptFailures,
  applyCounts,
  applyPreflight,
  FAILURE_SAMPLE,
  budgetVerdict,
  FINAL_STATUSES,
  initialProgress,
  rollbackProgress,
  totals,
  type FinalRolloutStatus,
  type RolloutProgress,
  type RolloutStatus,
} from '../src/rollout/progress.ts';
import { batchLanes } from '../src/rollout/batches.ts';
import type { Actor, RolloutInput } from '../src/rollout/types.ts';
import type { Activities } from '../activities/index.ts';
import type { EventBody } from '../activities/recording.ts';
import { batchOps, bookkeeping, liveView, preflightOps } from './activities.ts';
import { hostFailure } from './failures.ts';
import { abortUpdate, approveUpdate, EXPIRED_REQUEST, pauseUpdate, progressQuery, resumeUpdate, type AbortRequest, type ControlRequest } from './messages.ts';
import { rollbackWorkflow } from './rollback.ts';

export interface RolloutCarry {
  progress: RolloutProgress;
  abort?: AbortRequest;
  approvedAfter?: string[];
  /** Set when the plan's onFailure=pause stopped on an exceeded budget. */
  budgetPaused?: boolean;
}

const SYSTEM: Actor = { kind: 'system', id: 'fleetpatch' };

/**
 * Recording how a rollout ended after an error: a bounded number of tries (about two minutes), so
 * a store that stays away, or an event it refuses, cannot hold the workflow forever.
 */
const lastWord = proxyLocalActivities<Activities>({
  startToCloseTimeout: '1m',
  retry: { initialInterval: '1s', backoffCoefficient: 2, maximumInterval: '30s', maximumAttempts: 7 },
});

/** A recorded reason is at most 2000 characters (the catalogue): an error's words are cut well before. */
const MAX_ERROR_WORDS = 1200;

export async function rolloutWorkflow(input: RolloutInput, carry?: RolloutCarry): Promise<RolloutProgress> {
  const { plan, rolloutId } = input;
  const info = workflowInfo();
  const p: RolloutProgress = carry?.progress ?? initialProgress(rolloutId, plan, new Date().toISOString());
  if (carry) p.generation++;
  let abort: AbortRequest | undefined = carry?.abort;
  const approvedAfter = new Set(carry?.approvedAfter ?? []);
  let pausedBeforeStatus: RolloutStatus | undefined = p.status === 'paused' ? 'running' : undefined;

  const record = (key: string, body: EventBody, actor: Actor = SYSTEM, ops: Pick<Activities, 'recordRolloutEvent'> = bookkeeping) =>
    ops.recordRolloutEvent({ rolloutId, key, body, actor, ...(plan.notifyWebhook ? { webhook: plan.notifyWebhook } : {}) });
  const decide = async (action: 'paused' | 'resumed' | 'aborted' | 'approved', by: Actor, reason: string, wave?: string) => {
    const n = p.decisions.length;
    p.decisions.push({ action, by, reason, at: new Date().toISOString(), wave: wave ?? null });
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
  // Each handler records first and changes the rollout's state last, so the main loop never moves
  // on while a handler's own activity is in flight (their commands would interleave differently on
  // replay). `steering` refuses a second request while one is being handled.
  let steering: string | undefined;
  const steer = <T,>(what: string, fn: () => Promise<T>) => async (): Promise<T> => {
    steering = what;
    try {
      return await fn();
    } finally {
      steering = undefined;
    }
  };
  const notSteering = () => {
    if (steering) throw new Error(`another request (${steering}) is being handled; try again in a moment`);
  };
  setHandler(
    pauseUpdate,
    (req) =>
      steer('pause', async () => {
        // Every batch, on every worker, stops claiming hosts; hosts in flight finish.
        await bookkeeping.setRolloutHold({ rolloutId, hold: 'paused', reason: req.reason });
        await refresh();
        await decide('paused', req.by, req.reason, currentWave());
        pausedBeforeStatus = p.status;
        p.status = 'paused';
        return p;
      })(),
    {
      validator: (req) => {
        refuseExpired(req);
        notSteering();
        refuseUnless(!isFinal() && p.status !== 'paused' && p.status !== 'rolling-back', `cannot pause a rollout that is ${p.status}`, req.reason);
      },
    },
  );
  setHandler(
    resumeUpdate,
    (req) =>
      steer('resume', async () => {
        await bookkeeping.clearRolloutHold({ rolloutId });
        await decide('resumed', req.by, req.reason);
        p.status = pausedBeforeStatus ?? 'running';
        pausedBeforeStatus = undefined;
        return p;
      })(),
    {
      validator: (req) => {
        refuseExpired(req);
        notSteering();
        refuseUnless(p.status === 'paused', `cannot resume a rollout that is ${p.status}, not paused`, req.reason);
      },
    },
  );
  setHandler(
    abortUpdate,
    (req) =>
      steer('abort', async () => {
        await bookkeeping.setRolloutHold({ rolloutId, hold: 'aborted', reason: req.reason });
        await decide('aborted', req.by, req.rollback ? `${req.reason} (and roll back)` : req.reason);
        abort = req;
        return p;
      })(),
    {
      validator: (req) => {
        refuseExpired(req);
        notSteering();
        refuseUnless(!isFinal() && !abort, isFinal() ? `the rollout already ended (${p.status})` : 'the rollout is already being aborted', req.reason);
      },
    },
  );
  setHandler(
    approveUpdate,
    (req) =>
      steer('approve', async () => {
        const wave = p.awaitingApprovalAfter!;
        await decide('approved', req.by, req.reason, wave);
        approvedAfter.add(wave);
        return p;
      })(),
    {
      validator: (req) => {
        refuseExpired(req);
        notSteering();
        refuseUnless(p.status === 'awaiting-approval' && p.awaitingApprovalAfter !== undefined, `no approval is pending: the rollout is ${p.status}`, req.reason);
        if (req.wave && req.wave !== p.awaitingApprovalAfter) throw new Error(`the pending gate is after wave "${p.awaitingApprovalAfter}", not "${req.wave}"`);
        if (plan.distinctApproverAfter?.includes(p.awaitingApprovalAfter!) && req.by.id === input.requestedBy.id) {
          throw new Error(`the gate after wave "${p.awaitingApprovalAfter}" needs approval by someone other than ${req.by.id}, who started the rollout`);
        }
      },
    },
  );

  const carryNow = (): RolloutCarry => ({ progress: p, ...(abort ? { abort } : {}), approvedAfter: [...approvedAfter] });

  /** Waits out a pause (and a request being handled); false when the rollout must stop scheduling (abort). */
  const mayContinue = async (): Promise<boolean> => {
    await condition(() => (p.status !== 'paused' && steering === undefined) || abort !== undefined);
    return abort === undefined;
  };

  const startedBody: EventBody = {
    type: 'RolloutStarted',
    rolloutId,
    planName: plan.name,
    mode: plan.mode,
    payloads: plan.payloads,
    waves: plan.waves.map((w) => ({ name: w.name })),
    ...(input.reason ? { reason: input.reason } : {}),
  };
  // A continued run's first run recorded the start.
  let startRecorded = carry !== undefined;
  /** Set once the rollout has decided how it ends, before that is recorded. */
  let ending: { status: FinalRolloutStatus; reason?: string } | undefined;

  try {
    if (!carry) {
      await record('started', startedBody, input.requestedBy);
      startRecorded = true;
    }

    // ---- preflight -----------------------------------------------------------------------------
    if (!p.preflight) {
      const preflight = await preflightOps.preflight({ rolloutId, plan });
      Object.assign(p, applyPreflight(p, preflight));
      if (preflight.selected === 0) {
        return await finish('failed', 'the plan selects no host of the fleet: check hosts.labels and hosts.ids');
      }
      if (preflight.unknownHostIds.length > 0) {
        return await finish('failed', `the plan names hosts the fleet does not have: ${preflight.unknownHostIds.slice(0, 10).join(', ')}`);
      }
    }

    // ---- waves ---------------------------------------------------------------------------------
    const waves = p.preflight!.waves;
    while (p.cursor.wave < waves.length) {
      const w = p.cursor.wave;
      const wave = waves[w]!;
      const progress = p.waves[w]!;
      if (!(await mayContinue())) return await stopForAbort();
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
        for (;;) {
          if (!(await mayContinue())) return await stopForAbort();
          const stopped = await runStep(w, s, wave.name, wave.concurrency);
          if (stopped.kind === 'budget') {
            const outcome = await onBudgetExceeded(w, stopped.reason);
            if (outcome) return outcome;
            continue; // resumed past the budget: the step goes on
          }
          if (stopped.kind === 'aborted' || abort) return await stopForAbort();
          if (stopped.kind === 'paused') continue; // mayContinue waits for the resume
          if ((await bookkeeping.unfinishedHosts({ rolloutId, wave: w, step: s })) === 0) break;
          // Hosts still held by a batch whose worker vanished: their lease lapses, then a batch takes them.
          await condition(() => abort !== undefined, '10s');
        }
        p.cursor = { wave: w, step: s + 1, offset: 0 };
        if (workflowInfo().continueAsNewSuggested) {
          await condition(allHandlersFinished);
          return await continueAsNew<typeof rolloutWorkflow>(input, carryNow());
        }
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
        if (patched('approval-requested-event')) {
          await record(`wave-${w}-awaiting-approval`, { type: 'ApprovalRequested', rolloutId, wave: wave.name, ...(plan.distinctApproverAfter?.includes(wave.name) ? { requireDifferentApprover: true } : {}) });
        }
        await condition(() => approvedAfter.has(wave.name) || abort !== undefined);
        p.awaitingApprovalAfter = undefined;
        if (abort) return await stopForAbort();
        p.status = 'running';
      }
      if (plan.bakeMs > 0) {
        p.status = 'baking';
        p.bakingUntil = new Date(Date.now() + plan.bakeMs).toISOString();
        await condition(() => abort !== undefined, plan.bakeMs);
        p.bakingUntil = undefined;
        if (abort) return await stopForAbort();
        if (p.status === 'baking') p.status = 'running';
      }
      // A continue-as-new between waves keeps each run's history to one wave at most.
      if (workflowInfo().continueAsNewSuggested) {
        await condition(allHandlersFinished);
        return await continueAsNew<typeof rolloutWorkflow>(input, carryNow());
      }
    }

    const t = totals(p);
    return await finish('succeeded', t.failed > 0 ? `${t.failed} host(s) failed within the failure budget` : undefined);
  } catch (err) {
    // Whatever stops the rollout, the store ends with how it ended. A history recorded before this
    // path existed failed its workflow here, and replays that way.
    if (err instanceof ContinueAsNew || !patched('rollout-end-recorded-after-error')) throw err;
    return await endAfterError(err);
  }

  // ---- helpers (closures over this run's state) ----------------------------------------------

  /**
   * Runs one wave step as batches (activities) sharing the work list, and keeps the live view
   * fresh meanwhile. Returns why the batches stopped: the step is done, or the rollout is held.
   */
  async function runStep(w: number, s: number, waveName: string, concurrency: number): Promise<{ kind: 'done' | 'paused' | 'aborted' } | { kind: 'budget'; reason: string }> {
    const started = Date.now();
    const batchInput = {
      rolloutId,
      wave: w,
      waveName,
      step: s,
      mode: plan.mode,
      payloads: plan.payloads,
      ...(plan.verify ? { verify: plan.verify } : {}),
      budget: plan.budget,
      waves: p.waves.map((x) => ({ name: x.name, planned: x.planned })),
      ...(p.accepted ? { accepted: p.accepted } : {}),
    };
    let finished = false;
    const batches = Promise.allSettled(batchLanes(concurrency).map((lanes) => batchOps.patchBatch({ ...batchInput, lanes }))).finally(() => (finished = true));
    while (!finished) {
      // Twice a second at first, then less often on long steps, to keep the history short.
      const every = Math.min(10_000, Math.max(500, Math.floor((Date.now() - started) / 60)));
      if (!(await condition(() => finished, every))) await refresh();
    }
    const results = await batches;
    await refresh();
    const failedBatch = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failedBatch) {
      // A batch gave up (after its retries): its hosts stay claimable; say so and try again shortly.
      p.waiting = `a batch of wave "${waveName}" failed and is started again: ${hostFailure('apply', failedBatch.reason).reason}`;
      await condition(() => abort !== undefined, '30s');
      return { kind: 'done' };
    }
    const done = results.map((r) => (r as PromiseFulfilledResult<Awaited<ReturnType<typeof batchOps.patchBatch>>>).value);
    const budget = done.find((r) => r.stopped === 'budget');
    if (budget) return { kind: 'budget', reason: budgetVerdict(p, plan, w).exceeded ? (budgetVerdict(p, plan, w) as { reason: string }).reason : (budget.budgetReason ?? 'the failure budget is exceeded') };
    if (done.some((r) => r.stopped === 'aborted')) return { kind: 'aborted' };
    if (done.some((r) => r.stopped === 'paused')) return { kind: 'paused' };
    return { kind: 'done' };
  }

  /** The live view from the work list: counts per wave, failures with their reasons. */
  async function refresh(): Promise<void> {
    let c;
    try {
      c = await liveView.rolloutCounts({ rolloutId, failures: FAILURE_SAMPLE });
    } catch (e) {
      p.waiting = `the work list cannot be read: ${hostFailure('read', e).reason}`;
      return;
    }
    if (c.unavailable) {
      p.waiting ??= c.unavailable;
      return;
    }
    p.waiting = undefined;
    applyCounts(p, c.waves, c.failures);
  }

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
      await bookkeeping.clearRolloutHold({ rolloutId });
      return undefined;
    }
    p.waves[w]!.status = 'failed';
    await record(`wave-${w}-finished`, { type: 'WaveFinished', rolloutId, wave: p.waves[w]!.name, waveIndex: w, outcome: 'failed', reason, ...counts(p.waves[w]!) });
    const restored = await rollback(reason, SYSTEM);
    return finish(restored ? 'rolled-back' : 'rollback-incomplete', restored ? reason : `${reason}; ${incompleteReason()}`);
  }

  async function stopForAbort(): Promise<RolloutProgress> {
    // Batches may see the abort's hold before its handler is done recording it.
    await condition(() => abort !== undefined);
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

  async function finish(status: FinalRolloutStatus, reason?: string): Promise<RolloutProgress> {
    p.status = status;
    if (reason) p.stopReason = reason;
    p.finishedAt = new Date().toISOString();
    ending = { status, ...(reason ? { reason } : {}) };
    await record('finished', { type: 'RolloutFinished', rolloutId, status, ...(reason ? { reason } : {}) });
    await condition(allHandlersFinished);
    return p;
  }

  /**
   * The rollout stopped on an error (an activity or the rollback gave up, the workflow was
   * cancelled): it ends `failed` (`aborted` when cancelled), recorded with the error in words. If
   * the error came while recording an end already decided, that end is recorded instead. The
   * hosts it patched stay as they are; `fleetpatch rollout rollback` restores them.
   */
  async function endAfterError(err: unknown): Promise<RolloutProgress> {
    const cancelled = isCancellation(err);
    const words = clip(describeError(err));
    const end = ending ?? {
      status: cancelled ? ('aborted' as const) : ('failed' as const),
      reason: cancelled ? `the rollout's workflow was cancelled in Temporal (not by fleetpatch rollout abort): ${words}` : `the rollout stopped on an error: ${words}`,
    };
    p.status = end.status;
    if (end.reason) p.stopReason = end.reason;
    p.finishedAt ??= new Date().toISOString();
    p.waiting = undefined;
    const notRecorded = await CancellationScope.nonCancellable(() => recordEnd(end));
    if (notRecorded) p.stopReason = `${p.stopReason ?? end.status}; this end could not be recorded in the event store: ${clip(notRecorded)}`;
    if (cancelled) throw err;
    return p;
  }

  /**
   * Records the start (when its own record failed: without the free-text reason, the one part a
   * plan's validation does not bound) and the end, each with a bounded number of tries; an end
   * whose reason the store refuses is recorded with a plain one. Returns why nothing could be
   * recorded, or undefined once the end is.
   */
  async function recordEnd(end: { status: FinalRolloutStatus; reason?: string }): Promise<string | undefined> {
    if (!startRecorded) {
      const { reason: _left, ...plain } = startedBody as Extract<EventBody, { type: 'RolloutStarted' }>;
      await record('started', plain, input.requestedBy, lastWord).then(
        () => (startRecorded = true),
        () => undefined,
      );
    }
    const body = (reason?: string): EventBody => ({ type: 'RolloutFinished', rolloutId, status: end.status, ...(reason ? { reason } : {}) });
    try {
      await record('finished', body(end.reason), SYSTEM, lastWord);
      return undefined;
    } catch (first) {
      try {
        await record('finished', body(`the rollout ended ${end.status}; why could not be recorded (${clip(describeError(first), 300)}); its workflow's history in Temporal has it`), SYSTEM, lastWord);
        return undefined;
      } catch (second) {
        return describeError(second);
      }
    }
  }
}

function counts(w: { planned: number; patched: number; already: number; failed: number; unreachable: number }) {
  return { planned: w.planned, patched: w.patched, already: w.already, failed: w.failed, unreachable: w.unreachable };
}

/** A request whose caller stopped waiting is refused, so it never takes effect after its caller was told it did not. */
function refuseExpired(req: ControlRequest): void {
  if (req.notAfter !== undefined && Date.now() > Date.parse(req.notAfter)) {
    throw new Error(`${EXPIRED_REQUEST} at ${req.notAfter}, before the rollout could take it; nothing was changed`);
  }
}

/** An error as words: which activity or child workflow failed, and the failure's own message. */
function describeError(err: unknown): string {
  if (err instanceof ActivityFailure) return `${err.activityType ?? 'an activity'} failed: ${describeError(err.cause ?? err.message)}`;
  if (err instanceof ChildWorkflowFailure) return `the workflow ${err.execution.workflowId} failed: ${describeError(err.cause ?? err.message)}`;
  if (err instanceof ApplicationFailure) return err.type && !err.message.startsWith(err.type) ? `${err.type}: ${err.message}` : err.message;
  if (err instanceof Error) return err.cause ? `${err.message}: ${describeError(err.cause)}` : `${err.name}: ${err.message}`;
  return String(err);
}

function clip(text: string, max = MAX_ERROR_WORDS): string {
  return text.length <= max ? text : `${text.slice(0, max - 1)}…`;
}

function refuseUnless(ok: boolean, message: string, reason: string): void {
  if (!ok) throw new Error(message);
  if (!reason || !reason.trim()) throw new Error('say why: a reason is required and is recorded');
}
