/**
 * Batch activities: the rollout's hot path. One `patchBatch` runs `lanes` hosts at a time from one
 * wave step, claiming each host from the work list (PostgreSQL) as a lane frees up, until the step
 * has no host left or the rollout is held (pause, abort, exceeded budget). Several batches, on one
 * worker or several, share a step the same way. Temporal sees one activity per batch, not a child
 * workflow per host.
 *
 * The work list is the truth, never heartbeat details: a retried batch (worker killed, heartbeat
 * lost) first takes back the hosts its earlier attempt held, with a new fence, and the engine
 * reconciles each from the live host before it decides anything. A host whose holder vanished
 * without a retry becomes claimable again when its lease lapses.
 *
 * The budget verdict is taken after every failed host from the shared counts, so every batch stops
 * claiming as soon as one of them sees the budget exceeded.
 */
import { Context } from '@temporalio/activity';
import { GroupCommitter, isConnectionError, waitForDatabase } from '../src/events/group-commit.ts';
import {
  claimHosts,
  claimRollbackHosts,
  clearHold,
  countUnfinished,
  finishRollbackWrites,
  prepareRollback,
  reclaimOwn,
  renewLeases,
  renewRollbackLeases,
  selectFailures,
  selectHold,
  selectRollbackTally,
  selectWaveCounts,
  setHold,
  planRepair,
  releaseClaim,
  selectPatchedHostIds,
  type ClaimedHost,
  type FailureRow,
  type RollbackTally,
  type WaveCounts,
} from '../src/events/sql/claims.ts';
import { noticeBoots } from '../src/events/host-boots.ts';
import { hostStream } from '../src/events/streams.ts';
import { readLiveStates } from '../src/agent/live-state.ts';
import { assignPayload, type PayloadMeta } from '../src/rollout/matching.ts';
import { budgetVerdictOf, type RolloutProgress } from '../src/rollout/progress.ts';
import type { HostPatchResult, HostRollbackResult, ResolvedPlan, RolloutMode, VerifySpec } from '../src/rollout/types.ts';
import type { ActivityDeps } from './deps.ts';
import { HostEngine } from './host-engine.ts';
import type { EngineIdentity } from './host-recorder.ts';
import { Claimer, Coalescer, LaneClaims } from './claimer.ts';

/** A claim lapses this long after its batch last renewed it (renewed every LEASE_MS / 4). */
const LEASE_MS = 60_000;
const HEARTBEAT_MS = 1_000;
/** A work-list query slower than this is logged at warn: lanes were waiting on it. */
const SLOW_QUERY_MS = 2_000;

export interface PatchBatchInput {
  rolloutId: string;
  wave: number;
  waveName: string;
  /** Set by a repair ("repair-1"): the hosts' facts and outcomes are the repair's own records. */
  repair?: string;
  step: number;
  lanes: number;
  mode: RolloutMode;
  payloads: PayloadMeta[];
  verify?: VerifySpec;
  budget: ResolvedPlan['budget'];
  /** Every wave's name and planned size, for the budget verdict. */
  waves: { name: string; planned: number }[];
  accepted?: RolloutProgress['accepted'];
}

export interface PatchBatchResult {
  /** Hosts this batch finished, by outcome. */
  patched: number;
  already: number;
  failed: number;
  /** Why the batch stopped: the step has no host left, the rollout is held, or a budget is exceeded. */
  stopped: 'done' | 'paused' | 'aborted' | 'budget';
  budgetReason?: string;
}

export interface RollbackBatchInput {
  rollbackId: string;
  rolloutId: string;
  lanes: number;
  ours: string[];
  verifyCall?: string;
}

export interface RolloutCounts {
  waves: WaveCounts[];
  failures: FailureRow[];
  hold: { hold: string; reason: string | null } | null;
  /** Set when PostgreSQL could not be read: the rollout waits, it does not fail. */
  unavailable?: string;
}

/**
 * Host outcomes a batch handed to the committer without waiting: counted as each becomes durable,
 * and all of them durable before the batch reports. A flush that failed (a bug, not an outage: the
 * committer waits those out) stops the batch's lanes and fails the batch.
 */
class Outstanding {
  private readonly pending = new Set<Promise<void>>();
  failed: { error: unknown } | undefined;

  track<T>(recorded: Promise<T>, onDurable: (value: T) => unknown): void {
    const settled: Promise<void> = recorded.then(onDurable).then(
      () => void this.pending.delete(settled),
      (error: unknown) => {
        this.failed ??= { error };
        this.pending.delete(settled);
      },
    );
    this.pending.add(settled);
  }

  async settle(): Promise<void> {
    await Promise.all(this.pending);
    if (this.failed) throw this.failed.error;
  }
}

export function batchActivities(deps: ActivityDeps) {
  const { pool, logger } = deps;
  const committer = new GroupCommitter(deps.events, {
    onSlow: (f) => logger.warn(f, `a group commit took ${((f.queuedMs + f.commitMs) / 1000).toFixed(1)} s (${f.queuedMs} ms queued, ${f.commitMs} ms to commit ${f.events} events and ${f.writes} rows): every host in it waited`),
    onOutage: (s) =>
      s.down
        ? logger.warn({ err: s.error.message }, `PostgreSQL unreachable since ${s.since.toISOString()}: recording waits, no host is failed for it`)
        : logger.warn({ downForMs: s.downForMs }, 'PostgreSQL is back: recording goes on'),
  });

  /**
   * A work-list query that waits out a PostgreSQL outage (the batch keeps heartbeating) instead of
   * failing. One that takes more than two seconds is said: lanes wait on it.
   */
  async function db<T>(what: string, fn: () => Promise<T>): Promise<T> {
    const started = performance.now();
    try {
      return await waitForDatabase(fn, (since) => logger.warn({ what }, `PostgreSQL unreachable since ${since.toISOString()}; waiting`));
    } finally {
      saySlow(what, started);
    }
  }

  /** Logs at warn a read of the work list that took longer than SLOW_QUERY_MS since `started`. */
  function saySlow(what: string, started: number): void {
    const ms = Math.round(performance.now() - started);
    if (ms > SLOW_QUERY_MS) logger.warn({ what, ms }, `${what}: the work list took ${(ms / 1000).toFixed(1)} s to answer`);
  }

  function identity(rolloutId: string): { id: EngineIdentity; claimant: string; prefix: string } {
    const info = Context.current().info;
    if (!info.workflowExecution) throw new Error('batch activities run only inside workflows');
    const { workflowId, runId } = info.workflowExecution;
    const prefix = `${workflowId}/${runId}/${info.activityId}#`;
    return {
      id: { actor: { kind: 'workflow', id: workflowId }, correlation: { rolloutId, workflowId, runId, activityId: info.activityId, attempt: info.attempt } },
      claimant: `${prefix}${info.attempt}`,
      prefix,
    };
  }

  /** Heartbeats every second and renews leases; stops when `stop` is called. */
  function keepAlive(details: () => unknown, renew: () => Promise<unknown>): () => void {
    const ctx = Context.current();
    let beats = 0;
    const timer = setInterval(() => {
      ctx.heartbeat(details());
      if (++beats % Math.round(LEASE_MS / 4 / HEARTBEAT_MS) === 0) renew().catch((e) => logger.warn({ err: (e as Error).message }, 'could not renew host leases'));
    }, HEARTBEAT_MS);
    return () => clearInterval(timer);
  }

  return {
    async patchBatch(input: PatchBatchInput): Promise<PatchBatchResult> {
      const ctx = Context.current();
      const { id, claimant, prefix } = identity(input.rolloutId);
      const tally = { patched: 0, already: 0, failed: 0 };
      let stopped: PatchBatchResult['stopped'] | undefined;
      let budgetReason: string | undefined;
      const engine = new HostEngine(deps, committer, id, () => undefined);
      const job = { rolloutId: input.rolloutId, mode: input.mode, payloads: input.payloads, waveName: input.waveName, ...(input.repair ? { repair: input.repair } : {}), ...(input.verify ? { verify: input.verify } : {}) };
      const stopBeating = keepAlive(
        () => ({ ...tally, ...(committer.outageSince ? { waiting: `PostgreSQL unreachable since ${committer.outageSince.toISOString()}` } : {}) }),
        () => renewLeases(pool, input.rolloutId, claimant, LEASE_MS),
      );
      try {
        // The hosts an earlier attempt of this batch held come first: they are ours to finish.
        const queue: ClaimedHost[] = await db('reclaim', () => reclaimOwn(pool, input.rolloutId, prefix, claimant, LEASE_MS));
        if (queue.length > 0) logger.info({ rolloutId: input.rolloutId, hosts: queue.length }, 'batch took back the hosts its earlier attempt held');

        const afterFailure = async () => {
          const counts = await db('budget', () => selectWaveCounts(pool, input.rolloutId));
          const waves = input.waves.map((w, i) => ({ name: w.name, planned: w.planned, failed: counts.find((c) => c.wave === i)?.failed ?? 0 }));
          const verdict = budgetVerdictOf(input.budget, waves, input.wave, input.accepted);
          if (verdict.exceeded) {
            budgetReason = verdict.reason;
            await db('hold', () => setHold(pool, input.rolloutId, 'budget', verdict.reason));
            // This batch's lanes stop now, hosts they claimed ahead included.
            stopped ??= 'budget';
          }
        };

        const claimer = new Claimer(
          (limit) => db('claim', () => claimHosts(pool, { rolloutId: input.rolloutId, wave: input.wave, step: input.step, claimant, leaseMs: LEASE_MS, limit })),
          { kind: 'done' } as const,
        );
        // Outcomes other than failures are committed while their lane goes on (HostEngine.finish);
        // they are counted when durable, and the batch reports only after the last one is.
        const recording = new Outstanding();
        const count = (r: HostPatchResult) => {
          if (!r.lostClaim) tally[r.outcome]++;
          return r;
        };

        // Asked before a lane starts a host it claimed ahead: a hold set since then wins.
        const holdCheck = new Coalescer(async (lanes) => {
          const hold = await db('hold', () => selectHold(pool, input.rolloutId));
          return Array.from({ length: lanes }, () => (hold ? { kind: 'held' as const, hold: hold.hold } : null));
        });
        const going = () => !stopped && !ctx.cancellationSignal.aborted && !recording.failed;
        const lane = async () => {
          const claims = new LaneClaims(
            claimer,
            (h: ClaimedHost) => db('release', () => releaseClaim(pool, 'rollout', input.rolloutId, h.hostId, h.fence)),
            () => holdCheck.next(),
          );
          // The next host is claimed while this one's APPLY runs (claimer.ts), once the hosts an
          // earlier attempt held are all taken.
          const hooks = { acting: () => queue.length === 0 && going() && claims.ahead() };
          try {
            while (going()) {
              let host = queue.shift();
              if (!host) {
                const next = await claims.next();
                if (next.kind === 'done') return;
                if (next.kind === 'held') {
                  stopped ??= next.hold === 'budget' ? 'budget' : (next.hold as 'paused' | 'aborted');
                  return;
                }
                host = next.host;
                // Claimed while the last host ran: a hold (or a stop) seen since then wins.
                if (!going()) {
                  await claims.giveBack(host);
                  return;
                }
              }
              const done = await engine.patch(host, job, hooks);
              if (done.outcome === 'failed') {
                if (!count(await done.recorded).lostClaim) await afterFailure();
                continue;
              }
              recording.track(done.recorded, count);
            }
          } finally {
            await claims.close();
          }
        };
        await Promise.all(Array.from({ length: Math.max(1, input.lanes) }, lane));
        await recording.settle();
        await committer.drain();
        if (!stopped) {
          // A hold set while the last hosts ran still counts: say why the batch ended.
          const hold = await db('hold', () => selectHold(pool, input.rolloutId));
          if (hold) stopped = hold.hold === 'budget' ? 'budget' : (hold.hold as 'paused' | 'aborted');
        }
        return { ...tally, stopped: stopped ?? 'done', ...(budgetReason ? { budgetReason } : {}) };
      } finally {
        stopBeating();
      }
    },

    /** The work list's counts per wave, the failures so far, and any hold: the workflow's live view. */
    async rolloutCounts(input: { rolloutId: string; failures: number }): Promise<RolloutCounts> {
      const started = performance.now();
      try {
        const [waves, failures, hold] = await Promise.all([selectWaveCounts(pool, input.rolloutId), selectFailures(pool, input.rolloutId, input.failures), selectHold(pool, input.rolloutId)]);
        saySlow(`the live view of ${input.rolloutId}`, started);
        return { waves, failures, hold };
      } catch (e) {
        if (!isConnectionError(e)) throw e;
        return { waves: [], failures: [], hold: null, unavailable: `PostgreSQL unreachable since ${new Date().toISOString()}` };
      }
    },

    /** One wave's hosts by outcome, from the work list (a repair's totals, whichever batch attempt finished them). */
    async waveOutcomes(input: { rolloutId: string; wave: number }): Promise<{ patched: number; already: number; failed: number }> {
      const w = (await selectWaveCounts(pool, input.rolloutId)).find((c) => c.wave === input.wave);
      return { patched: w?.patched ?? 0, already: w?.already ?? 0, failed: w?.failed ?? 0 };
    },

    async unfinishedHosts(input: { rolloutId: string; wave: number; step: number }): Promise<number> {
      return countUnfinished(pool, input.rolloutId, input.wave, input.step);
    },

    async setRolloutHold(input: { rolloutId: string; hold: 'paused' | 'aborted' | 'budget'; reason: string }): Promise<void> {
      await setHold(pool, input.rolloutId, input.hold, input.reason);
    },

    async clearRolloutHold(input: { rolloutId: string }): Promise<void> {
      await clearHold(pool, input.rolloutId);
    },

    async prepareRollback(input: { rollbackId: string; rolloutId: string }): Promise<number> {
      return prepareRollback(pool, input.rollbackId, input.rolloutId);
    },

    async rollbackTally(input: { rollbackId: string; problems: number }): Promise<RollbackTally> {
      return selectRollbackTally(pool, input.rollbackId, input.problems);
    },

    /**
     * A repair's work list: reads every host the rollout patched, and every host an earlier repair
     * failed on (waves from `repairsFrom` on), recording any reboot first, and puts back the ones
     * that do not run the payload, in the repair's wave. Nothing is changed on any host here.
     */
    async prepareRepair(input: { rolloutId: string; wave: number; repairsFrom?: number; mode: RolloutMode; payloads: PayloadMeta[] }): Promise<{ checked: number; lost: number }> {
      const ctx = Context.current();
      const { id } = identity(input.rolloutId);
      const hostIds = await db('repair', () => selectPatchedHostIds(pool, input.rolloutId, input.repairsFrom));
      const fleet = await deps.fleet();
      const live = await readLiveStates(fleet, hostIds, { concurrency: 64, onProgress: (n) => n % 100 === 0 && ctx.heartbeat({ read: n }) });
      const boots = [...live].flatMap(([hostId, st]) => (st.ok && st.state.boot ? [{ hostId, bootId: st.state.boot.id, bootedAt: st.state.boot.at, hypervisorBuildId: st.state.hypervisorBuildId }] : []));
      for (let i = 0; i < boots.length; i += 1000) await db('boots', () => noticeBoots(deps.events, boots.slice(i, i + 1000), { actor: id.actor, correlation: id.correlation }));
      const lost = hostIds.filter((h) => {
        const st = live.get(h);
        return st?.ok === true && assignPayload(input.mode, input.payloads, st.state).kind !== 'already';
      });
      const planned = await db('repair', () => planRepair(pool, input.rolloutId, input.wave, lost));
      await db('hold', () => clearHold(pool, input.rolloutId));
      return { checked: hostIds.length, lost: planned };
    },

    /** Restores claimed hosts of a rollback, `lanes` at a time, until none is left. */
    async rollbackBatch(input: RollbackBatchInput): Promise<{ restored: number }> {
      const ctx = Context.current();
      const { id, claimant, prefix } = identity(input.rolloutId);
      const engine = new HostEngine(deps, committer, id, () => undefined);
      let restored = 0;
      const claimer = new Claimer(
        async (limit) => {
          const hosts = await db('claim', () => claimRollbackHosts(pool, { rollbackId: input.rollbackId, rolloutId: input.rolloutId, claimantPrefix: prefix, claimant, leaseMs: LEASE_MS, limit }));
          return hosts.length > 0 ? { kind: 'claimed' as const, hosts } : { kind: 'done' as const };
        },
        { kind: 'done' } as const,
      );
      const stopBeating = keepAlive(
        () => ({ restored }),
        () => renewRollbackLeases(pool, input.rollbackId, claimant, LEASE_MS),
      );
      try {
        const recording = new Outstanding();
        const going = () => !ctx.cancellationSignal.aborted && !recording.failed;
        const lane = async () => {
          const claims = new LaneClaims(claimer, (h: { hostId: string; fence: number }) => db('release', () => releaseClaim(pool, 'rollback', input.rollbackId, h.hostId, h.fence)));
          const hooks = { acting: () => going() && claims.ahead() };
          try {
            while (going()) {
              const next = await claims.next();
              if (next.kind === 'done') return;
              const host = next.host;
              if (!going()) {
                await claims.giveBack(host);
                return;
              }
              const { outcome: r, recorded: restoreRecorded } = await engine.restore(
                {
                  rolloutId: input.rolloutId,
                  rollbackId: input.rollbackId,
                  hostId: host.hostId,
                  former: { formerStack: host.formerStack, formerLoaded: host.formerLoaded, formerResult: host.formerResult },
                  touchedBootId: host.touchedBootId,
                  lastBootId: host.lastBootId,
                  ours: input.ours,
                  ...(input.verifyCall ? { verifyCall: input.verifyCall } : {}),
                },
                hooks,
              );
              const result: HostRollbackResult = {
                hostId: host.hostId,
                outcome: r.outcome === 'restored' ? 'rolled-back' : r.outcome,
                reverted: r.steps.filter((s) => s.kind === 'revert').map((s) => s.payload),
                reapplied: r.steps.filter((s) => s.kind === 'apply').map((s) => s.payload),
                stackNow: r.stackNow,
                formerStack: r.formerStack,
                ...(r.reason ? { reason: r.reason } : {}),
              };
              // The host's rollback outcome is committed while the lane takes its next host; the
              // batch reports after the last one is durable.
              const finished = committer.submit(
                [
                  {
                    key: `host-rollback/${input.rollbackId}/${host.hostId}`,
                    event: {
                      type: 'HostRollbackFinished',
                      schemaVersion: 1,
                      occurredAt: new Date().toISOString(),
                      actor: id.actor,
                      correlation: id.correlation,
                      rolloutId: input.rolloutId,
                      hostId: host.hostId,
                      outcome: result.outcome,
                      reverted: result.reverted,
                      reapplied: result.reapplied,
                      stackNow: result.stackNow,
                      formerStack: result.formerStack,
                      ...(result.reason ? { reason: result.reason } : {}),
                    },
                  },
                ],
                finishRollbackWrites(input.rollbackId, input.rolloutId, host.hostId, host.fence, { outcome: result.outcome, stackNow: result.stackNow, formerStack: result.formerStack, ...(result.reason ? { reason: result.reason } : {}) }),
                { background: true, keys: [hostStream(host.hostId)] },
              );
              recording.track(Promise.all([restoreRecorded, finished]), () => restored++);
            }
          } finally {
            await claims.close();
          }
        };
        await Promise.all(Array.from({ length: Math.max(1, input.lanes) }, lane));
        await recording.settle();
        await committer.drain();
        return { restored };
      } finally {
        stopBeating();
      }
    },
  };
}
