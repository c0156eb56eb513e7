/**
 * Every activity fleetpatch registers, built from its dependencies. Workflows import only the TYPE
 * `Activities`; the worker calls createActivities once per process.
 */
import type { ActivityDeps } from './deps.ts';
import { classified } from './failure.ts';
import { batchActivities } from './batch.ts';
import { rolloutActivities } from './rollout.ts';
import { webhookActivities } from './webhooks.ts';

export type { ActivityDeps };

export function createActivities(deps: ActivityDeps) {
  return classified({ ...batchActivities(deps), ...rolloutActivities(deps), ...webhookActivities(deps) });
}

export type Activities = ReturnType<typeof createActivities>;
