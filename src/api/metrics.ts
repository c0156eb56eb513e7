/**
 * /metrics of the API process (Prometheus text format, prom-client): what the event store says,
 * folded by the live view, computed when scraped. The counts are exact for every event recorded;
 * they start over from the store's first event when the API restarts, so they are gauges of
 * totals (use them as counters: they never go down while the store only grows).
 *
 * Latencies of hypervisor actions and event appends happen in workers, not here: each
 * `fleetpatch worker --metrics-port N` serves them (src/runtime/worker-metrics.ts). When a worker
 * runs in the API's own process (the demo), its metrics are served here too.
 */
import { Gauge, Registry } from 'prom-client';
import type { LiveView } from './live.ts';

export function apiMetrics(view: LiveView, workerRegistry?: Registry): { registry: Registry; text: () => Promise<string>; contentType: string } {
  const registry = new Registry();
  new Gauge({
    name: 'fleetpatch_rollout_hosts',
    help: 'Hosts of a rollout by outcome, as recorded: patched, already (patched before), failed, unreachable (of the failed); by its latest rollback: rolled_back (restored), rollback_nothing_to_do (already as before), not_restored',
    labelNames: ['rollout', 'outcome'],
    registers: [registry],
    collect() {
      this.reset();
      for (const s of view.rollouts.values()) {
        this.set({ rollout: s.rolloutId, outcome: 'patched' }, s.hosts.patched);
        this.set({ rollout: s.rolloutId, outcome: 'already' }, s.hosts.already);
        this.set({ rollout: s.rolloutId, outcome: 'failed' }, s.hosts.failed);
        this.set({ rollout: s.rolloutId, outcome: 'unreachable' }, s.hosts.unreachable);
        this.set({ rollout: s.rolloutId, outcome: 'rolled_back' }, s.rollback ? s.rollback.rolledBack : 0);
        this.set({ rollout: s.rolloutId, outcome: 'rollback_nothing_to_do' }, s.rollback ? s.rollback.nothingToDo : 0);
        this.set({ rollout: s.rolloutId, outcome: 'not_restored' }, s.rollback ? s.rollback.stackGrew + s.rollback.unrecoverable + s.rollback.failed : 0);
      }
    },
  });
  new Gauge({
    name: 'fleetpatch_rollouts',
    help: 'Rollouts by status, as their events say (the most recent 200 rollouts)',
    labelNames: ['status'],
    registers: [registry],
    collect() {
      this.reset();
      const by = new Map<string, number>();
      for (const s of view.rollouts.values()) by.set(s.status, (by.get(s.status) ?? 0) + 1);
      for (const [status, n] of by) this.set({ status }, n);
    },
  });
  new Gauge({
    name: 'fleetpatch_dependency_checks_total',
    help: 'Recorded build-id dependency checks by phase (preflight, upload, apply) and outcome (match, mismatch, unreachable)',
    labelNames: ['phase', 'outcome'],
    registers: [registry],
    collect() {
      this.reset();
      for (const [key, n] of view.checks) {
        const [phase, outcome] = key.split('/') as [string, string];
        this.set({ phase, outcome }, n);
      }
    },
  });
  new Gauge({
    name: 'fleetpatch_events_total',
    help: 'Events in the event store by type',
    labelNames: ['type'],
    registers: [registry],
    collect() {
      this.reset();
      for (const [type, n] of view.eventTypes) this.set({ type }, n);
    },
  });
  new Gauge({
    name: 'fleetpatch_hosts',
    help: 'Hosts of the fleet by the state the dashboard shows (idle, patching, patched, failed, rolled-back, not-restored, drift, ...)',
    labelNames: ['state'],
    registers: [registry],
    collect() {
      this.reset();
      const by = new Map<string, number>();
      for (const h of view.fleet()) by.set(h.state, (by.get(h.state) ?? 0) + 1);
      for (const [state, n] of by) this.set({ state }, n);
    },
  });
  const registries = workerRegistry ? [registry, workerRegistry] : [registry];
  return {
    registry,
    contentType: registry.contentType,
    text: async () => {
      await view.poll();
      return (await Promise.all(registries.map((r) => r.metrics()))).join('\n');
    },
  };
}
