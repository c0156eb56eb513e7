/**
 * Reboot-aware stacks. Xen's live-patch stack is lost on reboot, and nothing tells fleetpatch: it
 * finds out by reading the host's boot identity (a new id on every boot, as a real host agent
 * reads /proc/sys/kernel/random/boot_id). Whoever reads hosts (the preflight, every host step of
 * the batch engine, `audit replay`) hands the boot ids it saw to `noticeBoots`; a host whose boot id
 * differs from the one fleetpatch saw last gets a HostRebooted event, with the stack the record
 * says it lost, before anything else is decided for it. The host-stack projection then replays to
 * an empty stack, as the host really is.
 */
import { FleetpatchError } from '../errors.ts';
import type { Actor, Correlation } from './catalogue.ts';
import { eventIdFromKey } from './event-id.ts';
import { foldHostStack } from './projections/host-stack.ts';
import { selectChangedBoots, upsertBoots } from './sql/host-boots.ts';
import type { EventStore } from './store.ts';
import { hostStream } from './streams.ts';

export interface SeenBoot {
  hostId: string;
  bootId: string;
  /** ISO instant the host came up, when it says. */
  bootedAt: string | null;
  hypervisorBuildId?: string;
}

/**
 * Records a HostRebooted for every host whose boot differs from the last one seen, then remembers
 * the boots seen. The event comes first, so a crash in between repeats the notice (same event id:
 * recorded once) instead of forgetting it. Returns the hosts that rebooted.
 */
export async function noticeBoots(store: EventStore, seen: readonly SeenBoot[], who: { actor: Actor; correlation?: Correlation }): Promise<Set<string>> {
  if (seen.length === 0) return new Set();
  const changed = await selectChangedBoots(store.pool, seen);
  const rebooted = new Set<string>();
  for (const c of changed) {
    const boot = seen.find((s) => s.hostId === c.hostId)!;
    const recorded = foldHostStack(c.hostId, await store.readStream(hostStream(c.hostId)));
    try {
      await store.append(hostStream(c.hostId), [
        {
          eventId: eventIdFromKey(`reboot/${c.hostId}/${boot.bootId}`),
          event: {
            type: 'HostRebooted',
            schemaVersion: 1,
            occurredAt: boot.bootedAt ?? new Date().toISOString(),
            actor: who.actor,
            correlation: who.correlation ?? {},
            hostId: c.hostId,
            ...(boot.hypervisorBuildId ? { hypervisorBuildId: boot.hypervisorBuildId } : {}),
            bootId: boot.bootId,
            ...(boot.bootedAt ? { bootedAt: boot.bootedAt } : {}),
            lostStack: recorded.applied.map((p) => ({ name: p.name, buildId: p.buildId })),
            lostLoaded: recorded.loaded.map((p) => ({ name: p.name, buildId: p.buildId, state: p.state })),
            reason: `fleetpatch found boot ${boot.bootId} where it last saw boot ${c.previous}: a reboot loses every live patch`,
          },
        },
      ]);
    } catch (e) {
      // A concurrent reader recorded the same reboot first: it is recorded, which is what counts.
      if (!(e instanceof FleetpatchError && e.code === 'STREAM_VERSION_CONFLICT')) throw e;
    }
    rebooted.add(c.hostId);
  }
  await upsertBoots(store.pool, seen);
  return rebooted;
}
