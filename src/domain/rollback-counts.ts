/**
 * What a rollback did, counted by host outcome: the workflow's result, the rollout's live view and
 * the audit's summary all use these counts. Pure (zod only).
 */
import { z } from 'zod';
import { PayloadRefSchema } from './payload-ref.ts';
import { StorableString } from './text.ts';

const Count = z.number().int().min(0);

export const RollbackCountsSchema = z.object({
  /** Hosts the rollout touched. */
  hosts: Count,
  rolledBack: Count,
  nothingToDo: Count,
  stackGrew: Count,
  unrecoverable: Count,
  failed: Count,
});
export type RollbackCounts = z.infer<typeof RollbackCountsSchema>;

/** A host a rollback could not bring back: where it stands, where it should, and why. */
export const RollbackProblemSchema = z.object({
  hostId: StorableString,
  outcome: z.enum(['rolled-back', 'nothing-to-do', 'stack-grew', 'unrecoverable', 'failed']),
  reason: StorableString,
  stackNow: z.array(PayloadRefSchema),
  formerStack: z.array(PayloadRefSchema),
});
export type RollbackProblem = z.infer<typeof RollbackProblemSchema>;

/** Every touched host is back to its former stack. */
export function allBack(c: Pick<RollbackCounts, 'stackGrew' | 'unrecoverable' | 'failed'>): boolean {
  return c.stackGrew + c.unrecoverable + c.failed === 0;
}
