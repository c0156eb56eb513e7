/**
 * A build-id dependency check as fleetpatch decides it and records it: which payload, what it needs
 * (its depends, or its xen_depends), what the host had, against which of the host's build-ids, and
 * the outcome. The hypervisor's own report of a check it made is the agent contract's
 * (`HostDependencyCheck` in src/agent/contract.ts). Pure (zod only).
 */
import { z } from 'zod';
import { BuildIdSchema, PayloadNameSchema, PayloadRefSchema } from './payload-ref.ts';
import { StorableString } from './text.ts';

/** Which of the host's build-ids a payload was compared with: the hypervisor's, or a payload's. */
export const AgainstSchema = z.discriminatedUnion('kind', [
  z.object({ kind: z.literal('hypervisor') }),
  z.object({ kind: z.literal('payload'), name: PayloadNameSchema, buildId: BuildIdSchema }),
]);
export type Against = z.infer<typeof AgainstSchema>;

export const DependencyCheckSchema = z.object({
  payload: PayloadRefSchema,
  /** What the payload needs (its depends, or its xen_depends for `on: 'xen_depends'`). */
  expected: StorableString,
  /** What the host has. */
  found: StorableString,
  against: AgainstSchema,
  on: z.enum(['depends', 'xen_depends']),
  outcome: z.enum(['match', 'mismatch']),
});
export type DependencyCheck = z.infer<typeof DependencyCheckSchema>;
