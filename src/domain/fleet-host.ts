/**
 * A host as the fleet registry lists it, for selecting and planning: its id, labels, and the
 * hypervisor build it runs (the live state is authoritative). Pure (zod only).
 */
import { z } from 'zod';
import { BuildIdSchema } from './payload-ref.ts';
import { StorableString } from './text.ts';

export const FleetHostSchema = z.object({ id: StorableString.min(1), labels: z.record(StorableString, StorableString), buildId: BuildIdSchema });
export type FleetHost = z.infer<typeof FleetHostSchema>;

/** The registry's view of any host record that has at least these fields. */
export function fleetHostOf(h: { id: string; labels: Readonly<Record<string, string>>; buildId: string }): FleetHost {
  return { id: h.id, labels: { ...h.labels }, buildId: h.buildId };
}

/**
 * A host's value for one label, or undefined: only its own labels count. A label a user names
 * `__proto__`, `constructor` or `toString` must not read the object's prototype (a wave grouped
 * by `__proto__` would otherwise group every host under "{}").
 */
export function labelOf(labels: Readonly<Record<string, string>>, key: string): string | undefined {
  return Object.hasOwn(labels, key) ? labels[key] : undefined;
}
