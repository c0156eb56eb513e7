/**
 * The content-addressed payload store: payload bytes by build-id, with their sha256, size,
 * dependencies and signature. Storing the same payload twice is idempotent; other bytes (or
 * another name or signature) under a build-id already stored is PAYLOAD_CONFLICT: a build-id
 * names exactly one payload. Each first store is recorded as PayloadStored in the payload's
 * stream, in the same transaction as the bytes, so the audit trail and the store never disagree.
 */
import { createHash } from 'node:crypto';
import { FleetpatchError } from '../errors.ts';
import { BuildIdSchema, type Actor, type Correlation } from './catalogue.ts';
import { eventIdFromKey } from './event-id.ts';
import type { EventStore } from './store.ts';
import { payloadStream } from './streams.ts';
import { insertPayload, selectPayloadBytes, selectPayloadMeta, type PayloadRow } from './sql/payloads.ts';

/**
 * A detached signature over the payload bytes. src/payload's PayloadSignature fits as it is; when
 * it names a sha256, that must be the sha256 of these bytes.
 */
export interface PayloadSignatureInput {
  algorithm: string;
  keyId: string;
  /** Base64. */
  signature: string;
  sha256?: string;
}

export interface PayloadToStore {
  name: string;
  buildId: string;
  bytes: Uint8Array;
  depends?: string | null;
  xenDepends?: string | null;
  signature?: PayloadSignatureInput | null;
}

export interface StoredPayload {
  buildId: string;
  name: string;
  sha256: string;
  size: number;
  depends: string | null;
  xenDepends: string | null;
  signature: { algorithm: string; keyId: string; signature: string } | null;
  storedAt: string;
}

export interface StoreContext {
  actor: Actor;
  correlation?: Correlation;
  occurredAt?: string;
}

function toStored(row: PayloadRow): StoredPayload {
  return {
    buildId: row.build_id,
    name: row.name,
    sha256: row.sha256.toString('hex'),
    size: row.size,
    depends: row.depends,
    xenDepends: row.xen_depends,
    signature:
      row.signature && row.signature_algorithm && row.signature_key_id
        ? { algorithm: row.signature_algorithm, keyId: row.signature_key_id, signature: row.signature.toString('base64') }
        : null,
    storedAt: row.stored_at.toISOString(),
  };
}

/** Why `stored` is not the payload being stored, in words; null when it is the same. */
function conflictWith(stored: StoredPayload, name: string, sha256: string, signature: StoredPayload['signature']): string | null {
  if (stored.sha256 !== sha256) return `other bytes are stored under build-id ${stored.buildId} (sha256 ${stored.sha256.slice(0, 16)}…, these are ${sha256.slice(0, 16)}…)`;
  if (stored.name !== name) return `build-id ${stored.buildId} is stored under the name ${stored.name}, not ${name}`;
  const a = stored.signature;
  if ((a === null) !== (signature === null) || (a && signature && (a.algorithm !== signature.algorithm || a.keyId !== signature.keyId || a.signature !== signature.signature))) {
    return `build-id ${stored.buildId} is stored ${a ? `with a signature by key ${a.keyId}` : 'unsigned'}, this one is ${signature ? `signed by key ${signature.keyId}` : 'unsigned'}`;
  }
  return null;
}

export class PayloadStore {
  constructor(private readonly events: EventStore) {}

  /** Stores the payload; `created` is false when exactly this payload was stored before. */
  async put(p: PayloadToStore, ctx: StoreContext): Promise<{ payload: StoredPayload; created: boolean }> {
    if (!BuildIdSchema.safeParse(p.buildId).success) throw new FleetpatchError('USAGE', `"${p.buildId}" is not a build-id in lowercase hex`);
    if (p.bytes.length === 0) throw new FleetpatchError('USAGE', `payload ${p.name} is empty`);
    const sha256 = createHash('sha256').update(p.bytes).digest('hex');
    if (p.signature?.sha256 !== undefined && p.signature.sha256 !== sha256) {
      throw new FleetpatchError('SIGNATURE_INVALID', `the signature of ${p.name} is for other bytes (sha256 ${p.signature.sha256.slice(0, 16)}…, the payload is ${sha256.slice(0, 16)}…)`);
    }
    const signature = p.signature ? { algorithm: p.signature.algorithm, keyId: p.signature.keyId, signature: p.signature.signature } : null;

    const existing = await this.meta(p.buildId);
    if (existing) return { payload: this.sameOrConflict(existing, p.name, sha256, signature), created: false };

    let created = false;
    await this.events.append(
      payloadStream(p.buildId),
      [
        {
          eventId: eventIdFromKey(`payload-stored:${p.buildId}:${sha256}`),
          event: {
            type: 'PayloadStored',
            schemaVersion: 1,
            occurredAt: ctx.occurredAt ?? new Date().toISOString(),
            actor: ctx.actor,
            correlation: ctx.correlation ?? {},
            payload: { name: p.name, buildId: p.buildId },
            sha256,
            size: p.bytes.length,
            signature: signature ? { algorithm: signature.algorithm, keyId: signature.keyId } : null,
            ...(p.depends ? { depends: p.depends } : {}),
            ...(p.xenDepends !== undefined ? { xenDepends: p.xenDepends } : {}),
          },
        },
      ],
      {
        withinTransaction: async (client) => {
          created = await insertPayload(client, {
            buildId: p.buildId,
            name: p.name,
            sha256: Buffer.from(sha256, 'hex'),
            bytes: p.bytes,
            depends: p.depends ?? null,
            xenDepends: p.xenDepends ?? null,
            signature: signature ? { algorithm: signature.algorithm, keyId: signature.keyId, value: Buffer.from(signature.signature, 'base64') } : null,
          });
          if (!created) {
            // Stored concurrently since we looked: same payload is fine, anything else rolls back.
            const raced = await selectPayloadMeta(client, p.buildId);
            this.sameOrConflict(toStored(raced!), p.name, sha256, signature);
          }
        },
      },
    );
    return { payload: (await this.meta(p.buildId))!, created };
  }

  async meta(buildId: string): Promise<StoredPayload | null> {
    const row = await selectPayloadMeta(this.events.pool, buildId);
    return row ? toStored(row) : null;
  }

  /** The payload and its bytes; PAYLOAD_NOT_FOUND when no payload has that build-id. */
  async get(buildId: string): Promise<StoredPayload & { bytes: Buffer }> {
    const row = await selectPayloadBytes(this.events.pool, buildId);
    if (!row) throw new FleetpatchError('PAYLOAD_NOT_FOUND', `no stored payload has build-id ${buildId}`, { buildId });
    const sha256 = createHash('sha256').update(row.bytes).digest('hex');
    if (sha256 !== row.sha256.toString('hex')) {
      // Content addressing means the bytes are checked on the way out, not only on the way in.
      throw new FleetpatchError('PAYLOAD_CONFLICT', `the stored bytes of ${buildId} no longer match their sha256: the payload store was altered`, { buildId });
    }
    return { ...toStored(row), bytes: row.bytes };
  }

  private sameOrConflict(stored: StoredPayload, name: string, sha256: string, signature: StoredPayload['signature']): StoredPayload {
    const conflict = conflictWith(stored, name, sha256, signature);
    if (conflict) throw new FleetpatchError('PAYLOAD_CONFLICT', conflict, { buildId: stored.buildId });
    return stored;
  }
}
