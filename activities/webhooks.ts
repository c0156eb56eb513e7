/**
 * Webhooks, durably: a rollout event that a plan's webhook should hear of is recorded together
 * with its notification (the outbox row, in the same transaction), and the rollout's delivery
 * workflow (`webhooks-<rollout id>`, started or signalled right after) is told there is something
 * to send. Its delivery activity sends the rollout's notifications strictly in order, one at a
 * time, each signed (HMAC-SHA256 over the timestamp and the body), each attempt recorded; a
 * receiver that fails or is away makes the activity fail, and Temporal retries it with backoff for
 * as long as the workflow's policy says (days), so a receiver down for a while gets every
 * notification, in order, once it is back. Receivers dedupe by the event id (X-Fleetpatch-Delivery).
 */
import { createHmac } from 'node:crypto';
import { Context } from '@temporalio/activity';
import { ApplicationFailure } from '@temporalio/common';
import { readFleetFile } from '../src/agent/fleet-file.ts';
import { FleetpatchError } from '../src/errors.ts';
import type { DomainEventInput } from '../src/events/catalogue.ts';
import { eventIdFromKey } from '../src/events/event-id.ts';
import type { EventStore } from '../src/events/store.ts';
import { streamFor } from '../src/events/streams.ts';
import { insertOutbox, recordAttempt, selectNextUndelivered } from '../src/events/sql/webhook-outbox.ts';
import { webhookTargetProblem, type WebhookPolicy } from '../src/rollout/webhook-target.ts';
import { loadConfig } from '../src/runtime/config.ts';
import { observe } from '../src/runtime/observers.ts';
import { maskSecrets } from '../src/secrets.ts';
import { webhookSecret } from '../src/runtime/webhook-secret.ts';
import type { ActivityDeps } from './deps.ts';

export const WEBHOOK_WORKFLOW_PREFIX = 'webhooks-';
/** How long one delivery may take before it counts as failed. */
const DELIVERY_TIMEOUT_MS = 10_000;

/**
 * Records one rollout event under its key and, when the plan has a webhook, its notification in
 * the same transaction; then makes sure the rollout's delivery workflow runs. Retried, it records
 * and queues once, and signals again (harmless).
 */
export async function recordWithOutbox(events: EventStore, key: string, event: DomainEventInput, rolloutId: string, webhook: string | undefined): Promise<void> {
  const eventId = eventIdFromKey(key);
  await events.append(streamFor(event as never), [{ eventId, event }], {
    ...(webhook
      ? {
          withinTransaction: async (client) => {
            const body = { id: eventId, rolloutId, type: event.type, occurredAt: event.occurredAt, actor: event.actor, event };
            await insertOutbox(client, { rolloutId, eventId, url: webhook, eventType: event.type, body });
          },
        }
      : {}),
  });
  if (webhook) await wakeDelivery(rolloutId);
}

/** Starts the rollout's delivery workflow, or tells the running one there is more to send. */
async function wakeDelivery(rolloutId: string): Promise<void> {
  const ctx = Context.current();
  await ctx.client.workflow.signalWithStart('webhookDeliveryWorkflow', {
    workflowId: `${WEBHOOK_WORKFLOW_PREFIX}${rolloutId}`,
    taskQueue: ctx.info.taskQueue,
    args: [{ rolloutId }],
    signal: 'outbox',
    signalArgs: [],
  });
}

/**
 * Where this process's configuration says fleetpatch's services are (config.webhooks), plus the
 * fleet server of the fleet file (`url`, where the emulator's /admin routes are) when there is one.
 */
export async function webhookPolicy(fleetUrl?: string | null): Promise<WebhookPolicy> {
  const config = loadConfig();
  const services = [...config.webhooks.services];
  const fleet = fleetUrl === undefined ? await readFleetFile(config.fleetFile).then((f) => f.url, () => null) : fleetUrl;
  if (fleet) {
    const u = new URL(fleet);
    services.unshift({ port: Number(u.port || (u.protocol === 'https:' ? 443 : 80)), service: "the fleet server's, with its /admin routes (the fleet file's url)" });
  }
  return { services, allow: config.webhooks.allow };
}

/**
 * A plan's webhook checked against this process's configuration (where the plan is validated, by
 * the CLI or the API); PLAN_INVALID naming notify.webhook when it is refused. The plan schema has
 * already refused what no configuration allows (webhookUrlProblem).
 */
export async function checkPlanWebhook(url: string, source: string): Promise<void> {
  const problem = webhookTargetProblem(url, await webhookPolicy());
  if (problem) throw new FleetpatchError('PLAN_INVALID', `${source}: notify.webhook: ${problem}`, { issues: [{ path: ['notify', 'webhook'], message: problem }] });
}

/** `t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`, as docs/api.md#webhooks says. */
export function signWebhook(secret: string, timestamp: number, body: string): string {
  return `t=${timestamp},v1=${createHmac('sha256', secret).update(`${timestamp}.${body}`).digest('hex')}`;
}

export function webhookActivities(deps: ActivityDeps) {
  const { pool, logger } = deps;
  return {
    /**
     * Sends the rollout's undelivered notifications in order. Returns when none is left; fails
     * (to be retried with backoff) at the first the receiver does not take, without skipping it.
     */
    async deliverWebhooks(input: { rolloutId: string }): Promise<{ delivered: number }> {
      const ctx = Context.current();
      const secret = await webhookSecret();
      // This worker's configuration decides, not the one that validated the plan.
      const policy = await webhookPolicy(await deps.fleet().then((f) => f.fleetFile?.url ?? null, () => null));
      let delivered = 0;
      for (;;) {
        const row = await selectNextUndelivered(pool, input.rolloutId);
        if (!row) return { delivered };
        const attempt = row.attempts + 1;
        const shownUrl = maskSecrets(row.url);
        const refused = webhookTargetProblem(row.url, policy);
        if (refused) {
          // Nothing is sent: recorded as an attempt without an answer, and not retried (only a
          // change of the workers' configuration could make it go).
          await recordAttempt(pool, { outboxId: row.id, attempt, httpStatus: null, error: `refused: notify.webhook ${refused}`, durationMs: 0, delivered: false });
          logger.warn({ rolloutId: input.rolloutId, url: shownUrl, type: row.event_type, attempt, err: refused }, 'webhook refused by this worker; not sent');
          throw ApplicationFailure.nonRetryable(`webhook ${shownUrl}: ${row.event_type} (notification ${row.id}) refused: notify.webhook ${refused}`, 'PLAN_INVALID');
        }
        const body = JSON.stringify({ ...row.body, sequence: Number(row.id) });
        const timestamp = Math.floor(Date.now() / 1000);
        const started = performance.now();
        let httpStatus: number | null = null;
        let error: string | null = null;
        try {
          const r = await fetch(row.url, {
            method: 'POST',
            headers: {
              'content-type': 'application/json',
              'user-agent': 'fleetpatch-webhooks',
              'x-fleetpatch-event': row.event_type,
              'x-fleetpatch-delivery': row.event_id,
              'x-fleetpatch-sequence': row.id,
              'x-fleetpatch-attempt': String(attempt),
              'x-fleetpatch-signature': signWebhook(secret, timestamp, body),
            },
            body,
            redirect: 'error',
            signal: AbortSignal.timeout(DELIVERY_TIMEOUT_MS),
          });
          httpStatus = r.status;
          await r.arrayBuffer().catch(() => undefined);
          // Delivered means a 2xx answer: a 1xx, 3xx (redirects are not followed), 4xx or 5xx is not.
          if (r.status < 200 || r.status > 299) error = `the receiver answered HTTP ${r.status}`;
        } catch (e) {
          const cause = (e as { cause?: { code?: string; message?: string } }).cause;
          // fetch's words may quote the URL: masked before they are recorded or sent to Temporal.
          error = maskSecrets(`${(e as Error).name === 'TimeoutError' ? `no answer within ${DELIVERY_TIMEOUT_MS / 1000} s` : (cause?.code ?? cause?.message ?? (e as Error).message)}`).slice(0, 500);
        }
        const durationMs = Math.round(performance.now() - started);
        await recordAttempt(pool, { outboxId: row.id, attempt, httpStatus, error, durationMs, delivered: error === null });
        observe('webhookDelivery', durationMs / 1000, error === null ? 'delivered' : 'failed');
        ctx.heartbeat({ outboxId: row.id, attempt });
        if (error !== null) {
          logger.warn({ rolloutId: input.rolloutId, url: shownUrl, type: row.event_type, attempt, err: error }, 'webhook delivery failed; retried with backoff');
          throw ApplicationFailure.retryable(`webhook ${shownUrl}: ${row.event_type} (notification ${row.id}, attempt ${attempt}): ${error}`, 'WebhookUndelivered');
        }
        delivered++;
      }
    },
  };
}
