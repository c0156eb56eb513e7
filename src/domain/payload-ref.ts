/**
 * How a payload is named everywhere outside the payload library: its name on the host and its
 * build-id (its identity). A stack is a list of these, bottom first. Pure (zod only).
 */
import { z } from 'zod';
import { StorableString } from './text.ts';

/** Build-ids travel as lowercase hex, the way `readelf -n` and xen-livepatch print them. */
export const BuildIdSchema = StorableString.regex(/^(?:[0-9a-f]{2})+$/, 'must be a build-id in lowercase hex');

/** Xen's payload names: 1..127 characters. */
export const PayloadNameSchema = StorableString.min(1).max(127);

/** A payload on a host's stack, in a record, in a plan: its name and build-id. */
export const PayloadRefSchema = z.object({ name: PayloadNameSchema, buildId: BuildIdSchema });
export type PayloadRef = z.infer<typeof PayloadRefSchema>;
/** An entry of an applied stack (bottom first) is a payload reference. */
export type StackEntry = PayloadRef;

/** A payload loaded on a host, and whether it is applied. */
export const LoadedPayloadSchema = PayloadRefSchema.extend({ state: z.enum(['CHECKED', 'APPLIED']) });
export type LoadedPayload = z.infer<typeof LoadedPayloadSchema>;

/** What a rollout knows of a payload it carries: what it depends on and what it was built for. */
export const PayloadMetaSchema = PayloadRefSchema.extend({
  depends: BuildIdSchema,
  /** null when the payload has no .livepatch.xen_depends (Xen refuses it at upload). */
  xenDepends: BuildIdSchema.nullable(),
});
export type PayloadMeta = z.infer<typeof PayloadMetaSchema>;
