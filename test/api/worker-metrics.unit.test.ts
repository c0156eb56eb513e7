import { afterEach, describe, expect, it } from 'vitest';
import { observe, observers } from '../../src/runtime/observers.ts';
import { serveMetrics, workerMetrics } from '../../src/runtime/worker-metrics.ts';

describe("a worker's metrics", () => {
  afterEach(() => {
    for (const k of Object.keys(observers)) delete observers[k as keyof typeof observers];
  });

  it('serves hypervisor action, append and webhook latencies at /metrics, and nothing else', async () => {
    const server = await serveMetrics(workerMetrics(), 0);
    try {
      observe('hypervisorAction', 'apply', 0.2, 'ok');
      observe('hypervisorAction', 'revert', 3, 'EBUSY');
      observe('eventAppend', 0.004, 12, 'ok');
      observe('webhookDelivery', 0.05, 'failed');
      const text = await (await fetch(server.url)).text();
      expect(text).toContain('fleetpatch_hypervisor_action_seconds_count{action="apply",outcome="ok"} 1');
      expect(text).toContain('fleetpatch_hypervisor_action_seconds_bucket{le="5",action="revert",outcome="EBUSY"} 1');
      expect(text).toContain('fleetpatch_event_append_seconds_count{outcome="ok"} 1');
      expect(text).toContain('fleetpatch_events_appended_total 12');
      expect(text).toContain('fleetpatch_webhook_delivery_seconds_count{outcome="failed"} 1');
      const other = await fetch(server.url.replace('/metrics', '/admin'));
      expect(other.status).toBe(404);
      expect(await other.json()).toMatchObject({ code: 'ROUTE_NOT_FOUND' });
    } finally {
      await server.close();
    }
  });

  it('never lets a broken observer fail the work it measures', () => {
    observers.hypervisorAction = () => {
      throw new Error('broken');
    };
    expect(() => observe('hypervisorAction', 'apply', 1, 'ok')).not.toThrow();
  });
});
