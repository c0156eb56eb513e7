/**
 * Rollout-level activities: the preflight (reads every selected host, records every dependency
 * comparison, stores the per-host plan), paging hosts for the workflow, host outcomes, and
 * recording the rollout's own events (with webhook notification).
 */
import { Context } from '@temporalio/activity';
import type { DomainEventInput } from '../src/events/catalogue.ts';
import { insertPreflight, refreshWorkListStatistics, selectPreflight } from '../src/events/sql/rollout-targets.ts';
import { selectStoredBuildIds } from '../src/events/sql/payloads.ts';
import { readLiveStates } from '../src/agent/live-state.ts';
import { noticeBoots } from '../src/events/host-boots.ts';
import { hostReport, preflight as planPreflight, type FleetHost, type LiveState, type PreflightHostReport } from '../src/rollout/preflight.ts';
import { fleetHostOf } from '../src/domain/fleet-host.ts';
import type { Actor, PreflightSummary, ResolvedPlan } from '../src/rollout/types.ts';
import { selectHosts } from '../src/rollout/waves.ts';
import type { ActivityDeps } from './deps.ts';
import { recordWithOutbox } from './webhooks.ts';
import { activityIdentity, dependencyCheckEvent, envelope, recordWithKeys, type ActivityIdentity, type EventBody } from './recording.ts';

/** Hosts read at once by the preflight. */
const PREFLIGHT_CONCURRENCY = 64;
/** Hosts whose preflight facts go in one append, at most. */
const PREFLIGHT_CHUNK = 500;

/** What the preflight records of one host: each dependency comparison, or that it could not be read. */
function preflightFacts(rolloutId: string, id: Pick<ActivityIdentity, 'actor' | 'correlation'>, plan: ResolvedPlan, report: PreflightHostReport): { key: string; event: DomainEventInput }[] {
  if (report.verdict === 'unreachable') {
    return plan.payloads.map((p) => ({
      key: `preflight/${rolloutId}/${report.hostId}/${p.buildId}/unreachable`,
      event: envelope(id, {
        type: 'DependencyChecked',
        hostId: report.hostId,
        payload: { name: p.name, buildId: p.buildId },
        phase: 'preflight',
        on: 'depends',
        expected: p.depends,
        found: null,
        against: { kind: 'hypervisor' },
        outcome: 'unreachable',
        reason: `the host could not be read at preflight: ${report.reason}`,
      }),
    }));
  }
  return report.checks.map((check, i) => ({ key: `preflight/${rolloutId}/${report.hostId}/${i}/${check.on}/${check.payload.buildId}`, event: envelope(id, dependencyCheckEvent(report.hostId, check, 'preflight')) }));
}

/**
 * Hands items to `run` in chunks of at most `size`, one chunk at a time, in the order they were
 * added: whatever arrived while a chunk ran goes in the next. `drain` waits for the last chunk and
 * throws the first error (after which nothing more runs).
 */
function chunked<T>(size: number, run: (chunk: T[]) => Promise<void>): { add(item: T): void; drain(): Promise<void> } {
  const queue: T[] = [];
  let running: Promise<void> | null = null;
  let failed: { error: unknown } | null = null;
  const pump = async () => {
    while (queue.length > 0 && !failed) {
      const chunk = queue.splice(0, size);
      try {
        await run(chunk);
      } catch (error) {
        failed = { error };
      }
    }
    running = null;
  };
  return {
    add(item) {
      queue.push(item);
      running ??= pump();
    },
    async drain() {
      while (running) await running;
      if (failed) throw failed.error;
    },
  };
}

export function rolloutActivities(deps: ActivityDeps) {
  const { events, pool, logger } = deps;

  return {
    /**
     * Reads every selected host (nothing is changed on any), chooses each one's build, plans the
     * waves and stores the per-host plan. Idempotent: a retried preflight returns what the first
     * one stored, so the rollout never sees two different plans.
     */
    async preflight(input: { rolloutId: string; plan: ResolvedPlan }): Promise<PreflightSummary> {
      const stored = await selectPreflight<PreflightSummary>(pool, input.rolloutId);
      if (stored) return stored;
      const ctx = Context.current();
      const id = activityIdentity(input.rolloutId);
      // Before any host is read: each payload is the one recorded when it was stored, signed by a
      // trusted key unless the plan allows unsigned ones. A refusal is recorded (PayloadRefused)
      // and fails the rollout here, non-retryable, before it touches a host.
      const trustedKeys = deps.trustedKeys ? await deps.trustedKeys() : [];
      for (const p of input.plan.payloads) {
        await deps.payloads.verify(p.buildId, { trustedKeys, allowUnsigned: input.plan.allowUnsigned === true, actor: id.actor, correlation: id.correlation });
      }
      const fleet = await deps.fleet();
      const fleetHosts: FleetHost[] = fleet.hosts.map(fleetHostOf);
      const { selected } = selectHosts(fleetHosts, input.plan.hosts);

      // Each host's boot notice and checks are recorded while the hosts after it are still being
      // read: a chunk at a time, in the order the hosts were read, one chunk after another.
      let read = 0;
      let recorded = 0;
      const recorder = chunked<[string, LiveState]>(PREFLIGHT_CHUNK, async (chunk) => {
        // A host that rebooted since fleetpatch last read it lost its stack: recorded before its checks.
        const boots = chunk.flatMap(([hostId, st]) => (st.ok && st.state.boot ? [{ hostId, bootId: st.state.boot.id, bootedAt: st.state.boot.at, hypervisorBuildId: st.state.hypervisorBuildId }] : []));
        await noticeBoots(events, boots, { actor: id.actor, correlation: id.correlation });
        // Every comparison made, recorded once (keys make a retried preflight a no-op).
        await recordWithKeys(events, chunk.flatMap(([hostId, st]) => preflightFacts(input.rolloutId, id, input.plan, hostReport(input.plan, hostId, st))));
        recorded += chunk.length;
        ctx.heartbeat({ read, recorded, of: selected.length });
      });
      // Where a large fleet's preflight spends its time, for the log: reading and recording the
      // hosts (overlapped), planning, then writing the work list and PreflightCompleted.
      const began = performance.now();
      const live = await readLiveStates(
        fleet,
        selected.map((h) => h.id),
        {
          concurrency: PREFLIGHT_CONCURRENCY,
          onRead: (hostId, st) => recorder.add([hostId, st]),
          onProgress: (n) => (read = n) % 100 === 0 && ctx.heartbeat({ read, recorded, of: selected.length }),
        },
      );
      await recorder.drain();
      const readDone = performance.now();

      // A REPLACE reverts whole stacks: which payloads could fleetpatch upload again if it had to?
      let storedBytes: Set<string> | undefined;
      if (input.plan.mode === 'replace') {
        const seen = new Set<string>();
        for (const s of live.values()) if (s.ok) for (const p of s.state.loaded) if (p.safeToReapply === false) seen.add(p.buildId);
        storedBytes = await selectStoredBuildIds(pool, [...seen]);
      }
      const result = planPreflight(input.plan, fleetHosts, live, input.rolloutId, storedBytes);
      const planned = performance.now();

      const client = await pool.connect();
      try {
        await client.query('BEGIN');
        const inserted = await insertPreflight(client, input.rolloutId, result.summary, result.targets);
        await client.query('COMMIT');
        // The planner must know this rollout's rows before the batches write them
        // (rollout-targets.ts); also when an earlier attempt wrote them and died before this.
        await refreshWorkListStatistics(pool).catch((e: Error) => logger.warn({ err: e.message }, 'could not refresh the work list\'s statistics: host writes may be slower'));
        if (!inserted) return (await selectPreflight<PreflightSummary>(pool, input.rolloutId))!;
      } catch (e) {
        await client.query('ROLLBACK').catch(() => undefined);
        throw e;
      } finally {
        client.release();
      }
      const sum = result.summary;
      await recordWithKeys(events, [
        {
          key: `rollout/${input.rolloutId}/preflight-completed`,
          event: envelope(id, {
            type: 'PreflightCompleted',
            rolloutId: input.rolloutId,
            selected: sum.selected,
            targets: sum.targets,
            alreadyPatched: sum.alreadyPatched,
            incompatible: sum.incompatible,
            unreachable: sum.unreachable,
            ...(sum.unrestorable !== undefined ? { unrestorable: sum.unrestorable } : {}),
            waves: sum.waves.map((w) => ({ name: w.name, planned: w.steps.reduce((n, st) => n + st.size, 0) })),
          }),
        },
      ]);
      const timings = { readMs: Math.round(readDone - began), planMs: Math.round(planned - readDone), writeMs: Math.round(performance.now() - planned) };
      logger.info({ rolloutId: input.rolloutId, ...sum, waves: undefined, incompatibleSamples: undefined, unrestorableSamples: undefined, ...timings }, 'preflight done');
      return sum;
    },

    /**
     * One of the rollout's own events. `key` is unique within the rollout workflow (e.g.
     * "wave-1-started"), so retries and replays record it once. When the plan has a webhook, its
     * notification is queued in the same transaction and delivered durably, in order
     * (activities/webhooks.ts); a receiver that is away never stops the rollout.
     */
    async recordRolloutEvent(input: { rolloutId: string; key: string; actor: Actor; body: EventBody; webhook?: string }): Promise<void> {
      const id = activityIdentity(input.rolloutId);
      const event = envelope({ actor: input.actor, correlation: { rolloutId: input.rolloutId, workflowId: id.workflowId, runId: id.runId } }, input.body);
      await recordWithOutbox(events, `rollout/${input.rolloutId}/${input.key}`, event, input.rolloutId, input.webhook);
    },
  };
}
