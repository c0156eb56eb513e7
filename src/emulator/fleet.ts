/**
 * A fleet of emulated hosts: N hosts spread over one or more hypervisor images, with stable ids
 * (host-0000, host-0001, ...), labels (region, rack) and a bearer token each.
 *
 * Ids and labels depend only on the host's index, so the same `--hosts N` always gives the same
 * fleet shape; tokens are random (crypto), so a fleet file is the only way in.
 */
import { randomBytes } from 'node:crypto';
import { FleetpatchError } from '../errors.ts';
import { createHost, type Host, type HostImage } from './state-machine.ts';

/** One process serves at most this many hosts (the target, with room to spare). */
export const MAX_FLEET_HOSTS = 100_000;
export const REGIONS = ['eu-west', 'us-east', 'ap-south'] as const;
export const HOSTS_PER_RACK = 20;

export interface FleetMember {
  readonly id: string;
  readonly token: string;
  readonly labels: Readonly<{ region: string; rack: string; [key: string]: string }>;
  readonly image: HostImage;
}

export function hostId(index: number): string {
  return `host-${String(index).padStart(4, '0')}`;
}

/** Racks of 20 hosts; racks take turns over the regions. */
export function hostLabels(index: number): { region: string; rack: string } {
  const rack = Math.floor(index / HOSTS_PER_RACK);
  return { region: REGIONS[rack % REGIONS.length]!, rack: `rack-${String(rack).padStart(3, '0')}` };
}

export function newToken(): string {
  return randomBytes(24).toString('base64url');
}

/** Host i runs image i mod (number of images), so every image appears from two hosts on. */
export function createFleet(opts: { hosts: number; images: readonly HostImage[]; token?: () => string }): FleetMember[] {
  const { hosts, images } = opts;
  if (!Number.isInteger(hosts) || hosts < 1 || hosts > MAX_FLEET_HOSTS) {
    throw new FleetpatchError('ARGUMENT', `the number of hosts must be an integer from 1 to ${MAX_FLEET_HOSTS} (got ${hosts})`);
  }
  if (images.length === 0) throw new FleetpatchError('ARGUMENT', 'a fleet needs at least one hypervisor image');
  const token = opts.token ?? newToken;
  return Array.from({ length: hosts }, (_, i) => ({ id: hostId(i), token: token(), labels: hostLabels(i), image: images[i % images.length]! }));
}

/** A host as the emulator starts it: a fresh boot, with a boot identity no earlier run had. */
export function bootHost(member: FleetMember, boot: { seed: string; now: number }): Host {
  return createHost(member.id, member.image, boot);
}
