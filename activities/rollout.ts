/**
 * Rollout-level activities: the preflight (reads every selected host, records every dependency
 * comparison, stores the per-host plan), paging hosts for the workflow, host outcomes, and
 * recording the rollout's own events (with webhook notification).
 */
import { Context } from '@temporalio/activity';
import type { DomainEventInput } from '../src/events/catalogue.ts';
import { insertPreflight, selectPreflight } from '../src/events/sql/rollout-targets.ts';
import { selectStoredBuildIds } from '../src/events/sql/payloads.ts';
import { readLiveStates } from '../src/agent/live-state.ts';
import { noticeBoots } from '../src/events/host-boots.ts';
import { preflight as planPreflight, type FleetHost } from '../src/rollout/preflight.ts';
import { fleetHostOf } from '../src/domain/fleet-host.ts';
import type { Actor, PreflightSummary, ResolvedPlan } from '../src/rollout/types.ts';
import { selectHosts } from '../src/rollout/waves.ts';
import type { ActivityDeps } from './deps.ts';
import { recordWithOutbox } from './webhooks.ts';
import { activityIdentity, dependencyCheckEvent, envelope, recordWithKeys, type EventBody } from './recording.ts';

/** Hosts read at once by the preflight. */
const PREFLIGHT_CONCURRENCY = 64;

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
      const fleetHosts: FleetHost[] = fleet.fleet.hosts.map(fleetHostOf);
      const { selected } = selectHosts(fleetHosts, input.plan.hosts);

      const live = await readLiveStates(
        fleet,
        selected.map((h) => h.id),
        { concurrency: PREFLIGHT_CONCURRENCY, onProgress: (read) => read % 100 === 0 && ctx.heartbeat({ read, of: selected.length }) },
      );

      // A host that rebooted since fleetpatch last read it lost its stack: recorded before anything else.
      const boots = [...live].flatMap(([hostId, st]) => (st.ok && st.state.boot ? [{ hostId, bootId: st.state.boot.id, bootedAt: st.state.boot.at, hypervisorBuildId: st.state.hypervisorBuildId }] : []));
      for (let i = 0; i < boots.length; i += 1000) await noticeBoots(events, boots.slice(i, i + 1000), { actor: id.actor, correlation: id.correlation });

      // A REPLACE reverts whole stacks: which payloads could fleetpatch upload again if it had to?
      let storedBytes: Set<string> | undefined;
      if (input.plan.mode === 'replace') {
        const seen = new Set<string>();
        for (const s of live.values()) if (s.ok) for (const p of s.state.loaded) if (p.safeToReapply === false) seen.add(p.buildId);
        storedBytes = await selectStoredBuildIds(pool, [...seen]);
      }
      const result = planPreflight(input.plan, fleetHosts, live, input.rolloutId, storedBytes);
      // Every comparison made, recorded once (keys make a retried preflight a no-op).
      const items: { key: string; event: DomainEventInput }[] = [];
      for (const report of result.hosts) {
        if (report.verdict === 'unreachable') {
          for (const p of input.plan.payloads) {
            items.push({
              key: `preflight/${input.rolloutId}/${report.hostId}/${p.buildId}/unreachable`,
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
            });
          }
          continue;
        }
        report.checks.forEach((check, i) => {
          items.push({ key: `preflight/${input.rolloutId}/${report.hostId}/${i}/${check.on}/${check.payload.buildId}`, event: envelope(id, dependencyCheckEvent(report.hostId, check, 'preflight')) });
        });
      }
      for (let i = 0; i < items.length; i += 500) {
        await recordWithKeys(events, items.slice(i, i + 500));
        ctx.heartbeat({ recorded: Math.min(items.length, i + 500), of: items.length });
      }

      const client = await pool.connect();
      try {
        await client.query('BEGIN');
        const inserted = await insertPreflight(client, input.rolloutId, result.summary, result.targets);
        await client.query('COMMIT');
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
      logger.info({ rolloutId: input.rolloutId, ...sum, waves: undefined, incompatibleSamples: undefined, unrestorableSamples: undefined }, 'preflight done');
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
