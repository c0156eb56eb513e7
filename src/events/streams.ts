/**
 * Stream names. A stream is the consistency boundary of the facts about one thing: a host
 * (`host-<id>`), a rollout (`rollout-<id>`), a stored payload (`payload-<build-id>`). Each event
 * type belongs to exactly one kind of stream, derived from the event itself, so a fact can never
 * land in the wrong stream.
 */
import { FleetpatchError } from '../errors.ts';
import type { DomainEvent } from './catalogue.ts';

export type StreamKind = 'host' | 'rollout' | 'payload' | 'access';

export const hostStream = (hostId: string): string => `host-${hostId}`;
export const rolloutStream = (rolloutId: string): string => `rollout-${rolloutId}`;
export const payloadStream = (buildId: string): string => `payload-${buildId}`;
/** Who may act through the API: an API token's life. */
export const accessStream = (tokenName: string): string => `access-${tokenName}`;

/** The stream an event belongs to. */
export function streamFor(event: DomainEvent): string {
  if (event.type === 'PayloadStored' || event.type === 'PayloadRefused') return payloadStream(event.payload.buildId);
  if (event.type === 'HostPatchStarted') return hostStream(event.hostId);
  if (event.type === 'TokenCreated' || event.type === 'TokenRevoked') return accessStream(event.tokenName);
  if ('rolloutId' in event) return rolloutStream(event.rolloutId);
  return hostStream(event.hostId);
}

export function parseStreamId(streamId: string): { kind: StreamKind; id: string } {
  const match = /^(host|rollout|payload|access)-(.+)$/.exec(streamId);
  if (!match) throw new FleetpatchError('EVENT_INVALID', `"${streamId}" is not a stream name (host-<id>, rollout-<id>, payload-<build-id> or access-<token name>)`);
  return { kind: match[1] as StreamKind, id: match[2]! };
}
