/**
 * webhookDeliveryWorkflow: one per rollout (`webhooks-<rollout id>`), started or signalled each
 * time a rollout event is queued for its webhook (activities/webhooks.ts). It drains the rollout's
 * outbox in order through a delivery activity that Temporal retries with backoff, so notifications
 * are neither lost nor reordered when the receiver is away, and ends after a quiet spell (a later
 * event starts it again).
 */
import { allHandlersFinished, condition, continueAsNew, defineSignal, proxyActivities, setHandler } from '@temporalio/workflow';
import type { Activities } from '../activities/index.ts';

export const outboxSignal = defineSignal('outbox');

const delivery = proxyActivities<Activities>({
  startToCloseTimeout: '10m',
  heartbeatTimeout: '1m',
  // A receiver away for a minute (or a day) still gets everything: retried every 30 s at most,
  // for up to a week, never skipping ahead.
  scheduleToCloseTimeout: '7d',
  retry: { initialInterval: '1s', backoffCoefficient: 2, maximumInterval: '30s' },
});

/** Rounds of delivery before continuing as new, to keep the history short. */
const ROUNDS_PER_RUN = 200;

export async function webhookDeliveryWorkflow(input: { rolloutId: string }): Promise<{ delivered: number }> {
  let pending = true;
  setHandler(outboxSignal, () => {
    pending = true;
  });
  let delivered = 0;
  for (let round = 0; round < ROUNDS_PER_RUN; round++) {
    if (!pending && !(await condition(() => pending, '10m'))) break;
    pending = false;
    delivered += (await delivery.deliverWebhooks({ rolloutId: input.rolloutId })).delivered;
  }
  await condition(allHandlersFinished);
  // Something was queued meanwhile (or the run is long): go on in a fresh run.
  if (pending) return continueAsNew<typeof webhookDeliveryWorkflow>(input);
  return { delivered };
}
