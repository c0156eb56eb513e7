/**
 * A decision a person (or fleetpatch) took on a rollout: pause, resume, abort, approve; who, when,
 * why, and for approvals which wave's gate. Pure (zod only).
 */
import { z } from 'zod';
import { ActorSchema } from './actor.ts';
import { StorableString } from './text.ts';

export const DecisionSchema = z.object({
  action: z.enum(['paused', 'resumed', 'aborted', 'approved']),
  by: ActorSchema,
  /** ISO instant. */
  at: StorableString,
  reason: StorableString.nullable(),
  wave: StorableString.nullable(),
});
export type Decision = z.infer<typeof DecisionSchema>;
