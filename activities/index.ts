/**
 * Every activity fleetpatch registers, built from its dependencies. Workflows import only the TYPE
 * `Activities`; the worker calls createActivities once per process.
 */
import type { ActivityDeps } from './deps.ts';
import { classified } from './failure.ts';
import { hostActivities } from './host.ts';
import { restoreActivities } from './restore.ts';
import { rolloutActivities } from './rollout.ts';

export type { ActivityDeps };

export function createActivities(deps: ActivityDeps) {
  return classified({ ...hostActivities(deps), ...restoreActivities(deps), ...rolloutActivities(deps) });
}

export type Activities = ReturnType<typeof createActivities>;
