/**
 * Deterministic event ids. A retried activity must not record a fact twice, so an event's id is a
 * name-based UUID (RFC 4122 version 5, SHA-1) of what identifies the step that records it: the
 * workflow, its run, the activity and a step name. A retry has the same workflow id, run id and
 * activity id (the attempt differs and is left out on purpose), so it computes the same id and the
 * store answers "already recorded". The run id matters: activity ids restart at 1 after
 * continue-as-new, and a reset run really does the work again.
 */
import { createHash, randomUUID } from 'node:crypto';
import { oneShotHash } from './hash-chain.ts';

/** The namespace of every fleetpatch event id (a random UUID fixed once; never change it). */
export const EVENT_ID_NAMESPACE = '4f1c2d8e-5b7a-4c3e-9d10-6a2b8e7f3c51';

function uuidBytes(uuid: string): Buffer {
  return Buffer.from(uuid.replaceAll('-', ''), 'hex');
}

function formatUuid(bytes: Buffer): string {
  const hex = bytes.toString('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20, 32)}`;
}

const NAMESPACE_BYTES = uuidBytes(EVENT_ID_NAMESPACE);

/** UUID v5 of `name` in `namespace`. */
export function uuidV5(name: string, namespace = EVENT_ID_NAMESPACE): string {
  // Every recorded event gets its id here: the one-shot hash and the namespace's bytes computed
  // once keep it cheap.
  const ns = namespace === EVENT_ID_NAMESPACE ? NAMESPACE_BYTES : uuidBytes(namespace);
  const digest = oneShotHash
    ? (oneShotHash('sha1', Buffer.concat([ns, Buffer.from(name, 'utf8')]), 'buffer') as Buffer)
    : createHash('sha1').update(ns).update(name, 'utf8').digest();
  const bytes = Buffer.from(digest.subarray(0, 16));
  bytes[6] = (bytes[6]! & 0x0f) | 0x50;
  bytes[8] = (bytes[8]! & 0x3f) | 0x80;
  return formatUuid(bytes);
}

/** The id of an event identified by a caller-chosen idempotency key (e.g. "approve:<rollout>:<wave>:<request>"). */
export function eventIdFromKey(key: string): string {
  if (key.length === 0) throw new TypeError('an idempotency key must not be empty');
  return uuidV5(`key\u0000${key}`);
}

export interface ActivityStep {
  workflowId: string;
  /** Left out only where continue-as-new and resets cannot happen. */
  runId?: string;
  activityId: string;
  /** Distinguishes several events recorded by one activity, e.g. "checked:<build-id>". */
  step: string;
}

/** The id of an event recorded by a Temporal activity: the same on every retry of that activity. */
export function activityEventId(s: ActivityStep): string {
  return uuidV5(['activity', s.workflowId, s.runId ?? '', s.activityId, s.step].join('\u0000'));
}

/** For facts with no natural identity (a person's command typed twice is two facts). */
export function randomEventId(): string {
  return randomUUID();
}

export const UUID_PATTERN = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
