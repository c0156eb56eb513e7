/**
 * A worker's own metrics (prom-client): how long each hypervisor action took (APPLY, REPLACE,
 * REVERT, until the host reported its outcome), how long each event-store append (a group commit)
 * took and how many events it wrote, and webhook deliveries. Served by `fleetpatch worker
 * --metrics-port N` at http://<listen>:N/metrics; the API's /metrics serves what the event store
 * says (counts), not these.
 */
import http from 'node:http';
import { Counter, Histogram, Registry } from 'prom-client';
import { observers } from './observers.ts';

export function workerMetrics(): Registry {
  const registry = new Registry();
  const action = new Histogram({
    name: 'fleetpatch_hypervisor_action_seconds',
    help: 'Time from asking a host for a live-patch action until it reported the outcome, by action (apply, replace, revert) and outcome (ok or the errno)',
    labelNames: ['action', 'outcome'],
    buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60],
    registers: [registry],
  });
  const append = new Histogram({
    name: 'fleetpatch_event_append_seconds',
    help: 'Time of one event-store append (a group commit of many hosts\' events in one transaction), by outcome',
    labelNames: ['outcome'],
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5],
    registers: [registry],
  });
  const appended = new Counter({ name: 'fleetpatch_events_appended_total', help: 'Events written by this worker\'s group commits', registers: [registry] });
  const webhook = new Histogram({
    name: 'fleetpatch_webhook_delivery_seconds',
    help: 'Time of one webhook delivery attempt, by outcome (delivered, failed)',
    labelNames: ['outcome'],
    buckets: [0.01, 0.05, 0.1, 0.5, 1, 2, 5, 10],
    registers: [registry],
  });
  observers.hypervisorAction = (a, seconds, outcome) => action.observe({ action: a, outcome }, seconds);
  observers.eventAppend = (seconds, events, outcome) => {
    append.observe({ outcome }, seconds);
    if (outcome === 'ok') appended.inc(events);
  };
  observers.webhookDelivery = (seconds, outcome) => webhook.observe({ outcome }, seconds);
  return registry;
}

/** Serves a registry at /metrics; resolves with its URL. */
export async function serveMetrics(registry: Registry, port: number, host = '127.0.0.1'): Promise<{ url: string; close: () => Promise<void> }> {
  const server = http.createServer((req, res) => {
    if (req.method !== 'GET' || (req.url ?? '').split('?')[0] !== '/metrics') {
      res.writeHead(404, { 'content-type': 'application/json' }).end(JSON.stringify({ code: 'ROUTE_NOT_FOUND', reason: 'only GET /metrics is served here', retryable: false }));
      return;
    }
    registry.metrics().then(
      (text) => res.writeHead(200, { 'content-type': registry.contentType }).end(text),
      () => res.writeHead(500, { 'content-type': 'application/json' }).end(JSON.stringify({ code: 'INTERNAL', reason: 'metrics could not be collected', retryable: true })),
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  const address = server.address() as { port: number };
  return { url: `http://${host.includes(':') ? `[${host}]` : host}:${address.port}/metrics`, close: () => new Promise((r) => server.close(() => r())) };
}
