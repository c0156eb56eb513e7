/**
 * The content-addressed payload store: payload bytes by build-id, with their sha256, size,
 * dependencies and signature. Storing the same payload twice is idempotent; other bytes (or
 * another name or signature) under a build-id already stored is PAYLOAD_CONFLICT: a build-id
 * names exactly one payload. Each first store is recorded as PayloadStored in the payload's
 * stream, in the same transaction as the bytes, so the audit trail and the store never disagree.
 *
 * Every read of the bytes (for an upload, a restore, or a rollout's checks) verifies them against
 * that recorded, hash-chained digest, not against the row's own sha256 column (which whoever
 * swaps the bytes can rewrite too): bytes that do not match, or that no intact PayloadStored
 * records, are refused with PAYLOAD_TAMPERED and the refusal is recorded as PayloadRefused.
 * `verify` adds the signature: an ed25519 signature by a trusted key, unless unsigned payloads
 * are explicitly allowed (SIGNATURE_INVALID otherwise, recorded with the key it names).
 */
import { createHash } from 'node:crypto';
import { FleetpatchError } from '../errors.ts';
import { verifyPayload, type PublicKey } from '../payload/signing.ts';
import { BuildIdSchema, type Actor, type Correlation, type EventOfType } from './catalogue.ts';
import { eventIdFromKey, randomEventId } from './event-id.ts';
import { StreamChainChecker, type ChainBreak } from './hash-chain.ts';
import type { EventStore } from './store.ts';
import { payloadStream } from './streams.ts';
import { toChainRecord, toRecordedEvent } from './sql/event-row.ts';
import { selectStreamWithHead } from './sql/payload-integrity.ts';
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

/** Who reads, for the PayloadRefused a refusal records; `record: false` records nothing (dry runs). */
export interface ReadContext {
  actor?: Actor;
  correlation?: Correlation;
  record?: boolean;
}

export interface VerifyOptions extends ReadContext {
  /** The public keys a signature must verify against (FLEETPATCH_TRUSTED_KEYS). */
  trustedKeys: readonly PublicKey[];
  /** True only when the plan (or deployment) says so explicitly: then a payload may be unsigned. */
  allowUnsigned: boolean;
}

export interface VerifiedPayload {
  payload: StoredPayload;
  /** The trusted key whose signature verified; null for an unsigned payload that was allowed. */
  keyId: string | null;
}

const STORE_ACTOR: Actor = { kind: 'system', id: 'fleetpatch payload store' };

/** What the payload's own stream says about it, and whether that stream's chain holds. */
interface Recorded {
  stored: EventOfType<'PayloadStored'> | null;
  broken: ChainBreak | null;
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
    if (!BuildIdSchema.safeParse(p.buildId).success) throw new FleetpatchError('ARGUMENT', `"${p.buildId}" is not a build-id in lowercase hex`);
    if (p.bytes.length === 0) throw new FleetpatchError('ARGUMENT', `payload ${p.name} is empty`);
    const sha256 = createHash('sha256').update(p.bytes).digest('hex');
    if (p.signature?.sha256 !== undefined && p.signature.sha256 !== sha256) {
      throw new FleetpatchError('SIGNATURE_INVALID', `the signature of ${p.name} is for other bytes (sha256 ${p.signature.sha256.slice(0, 16)}…, the payload is ${sha256.slice(0, 16)}…)`);
    }
    const signature = p.signature ? { algorithm: p.signature.algorithm, keyId: p.signature.keyId, signature: p.signature.signature } : null;

    const existing = await this.meta(p.buildId);
    if (existing) {
      // What is stored must be what was recorded before it can be compared with anything.
      await this.get(p.buildId, { actor: ctx.actor, ...(ctx.correlation ? { correlation: ctx.correlation } : {}) });
      return { payload: this.sameOrConflict(existing, p.name, sha256, signature), created: false };
    }

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

  /**
   * The payload and its bytes, verified against the sha256 and size its PayloadStored event
   * recorded (and that event's chain). PAYLOAD_NOT_FOUND when nothing is stored or recorded under
   * the build-id; PAYLOAD_TAMPERED, recorded as PayloadRefused, when the bytes are not the ones
   * recorded, the row is gone while the event says it was stored, or no intact event records it.
   */
  async get(buildId: string, ctx: ReadContext = {}): Promise<StoredPayload & { bytes: Buffer }> {
    const [row, recorded] = await Promise.all([selectPayloadBytes(this.events.pool, buildId), this.recorded(buildId)]);
    if (!row) {
      if (!recorded.stored) throw new FleetpatchError('PAYLOAD_NOT_FOUND', `no stored payload has build-id ${buildId}`, { buildId });
      return this.refuse(buildId, recorded.stored.payload.name, ctx, {
        check: 'digest',
        reason: `payload ${recorded.stored.payload.name} (build-id ${buildId}) was stored (sha256 ${recorded.stored.sha256.slice(0, 16)}…), but its bytes are gone from the payload store: the row was deleted`,
        expectedSha256: recorded.stored.sha256,
      });
    }
    const found = createHash('sha256').update(row.bytes).digest('hex');
    const problem = integrityProblem(row, found, recorded);
    if (problem) {
      return this.refuse(buildId, recorded.stored?.payload.name ?? row.name, ctx, {
        check: 'digest',
        reason: problem,
        expectedSha256: recorded.stored?.sha256 ?? null,
        foundSha256: found,
      });
    }
    return { ...toStored(row), bytes: row.bytes };
  }

  /**
   * get(), then the signature: an ed25519 signature over exactly these bytes by one of the trusted
   * keys. Unless `allowUnsigned`, a payload without one (or signed by a key that is not trusted)
   * is refused with SIGNATURE_INVALID, recorded with the key its signature names. A signature
   * that names a trusted key must verify, whatever `allowUnsigned` says.
   */
  async verify(buildId: string, opts: VerifyOptions): Promise<VerifiedPayload> {
    const p = await this.get(buildId, opts);
    const trusted = opts.trustedKeys.map((k) => k.keyId);
    const sig = p.signature;
    const refuse = (reason: string, keyId: string | null) =>
      this.refuse(buildId, p.name, opts, { check: 'signature', reason, keyId, trustedKeys: trusted });
    if (!sig) {
      if (opts.allowUnsigned) return { payload: stripBytes(p), keyId: null };
      return refuse(`payload ${p.name} (build-id ${buildId}) is not signed; sign it (fleetpatch payload sign) with a trusted key, or say allowUnsigned: true in the plan`, null);
    }
    const key = opts.trustedKeys.find((k) => k.keyId === sig.keyId);
    if (!key) {
      if (opts.allowUnsigned) return { payload: stripBytes(p), keyId: null };
      return refuse(
        `payload ${p.name} (build-id ${buildId}) is signed by key ${sig.keyId}, which is not among the ${trusted.length} trusted key(s)${trusted.length ? ` (${trusted.join(', ')})` : ' (FLEETPATCH_TRUSTED_KEYS names none)'}`,
        sig.keyId,
      );
    }
    try {
      verifyPayload(p.bytes, { type: 'fleetpatch-payload-signature', version: 1, algorithm: 'ed25519', keyId: sig.keyId, sha256: p.sha256, buildId, signature: sig.signature }, [key]);
    } catch (e) {
      return refuse(`payload ${p.name} (build-id ${buildId}): ${(e as Error).message}`, sig.keyId);
    }
    return { payload: stripBytes(p), keyId: key.keyId };
  }

  /** The payload's stream, its chain checked, and the PayloadStored in it. */
  private async recorded(buildId: string): Promise<Recorded> {
    const { rows, head } = await selectStreamWithHead(this.events.pool, payloadStream(buildId));
    if (rows.length === 0 && !head) return { stored: null, broken: null };
    const checker = new StreamChainChecker(payloadStream(buildId));
    let stored: EventOfType<'PayloadStored'> | null = null;
    for (const row of rows) {
      checker.push(toChainRecord(row), row.hash.toString('hex'));
      if (!stored && row.type === 'PayloadStored') {
        try {
          stored = toRecordedEvent(row).event as EventOfType<'PayloadStored'>;
        } catch {
          // Unreadable: the chain check says why.
        }
      }
    }
    return { stored, broken: checker.finish(head) };
  }

  /** Records the refusal (unless told not to) and throws it. */
  private async refuse(
    buildId: string,
    name: string,
    ctx: ReadContext,
    what: { check: 'digest' | 'signature'; reason: string; expectedSha256?: string | null; foundSha256?: string; keyId?: string | null; trustedKeys?: string[] },
  ): Promise<never> {
    const code = what.check === 'digest' ? 'PAYLOAD_TAMPERED' : 'SIGNATURE_INVALID';
    const reason = what.reason.length > 2000 ? `${what.reason.slice(0, 1990)}…` : what.reason;
    const details: Record<string, unknown> = { buildId, payload: name, check: what.check };
    if (what.expectedSha256 !== undefined) details.expectedSha256 = what.expectedSha256;
    if (what.foundSha256 !== undefined) details.foundSha256 = what.foundSha256;
    if (what.keyId !== undefined) details.keyId = what.keyId;
    if (ctx.record !== false) {
      const actor = ctx.actor ?? STORE_ACTOR;
      const correlation = ctx.correlation ?? {};
      // An activity's retry records the same refusal once; every other reader records its own.
      const eventId = correlation.activityId
        ? eventIdFromKey(`payload-refused:${buildId}:${what.check}:${what.foundSha256 ?? ''}:${correlation.workflowId}:${correlation.runId}:${correlation.activityId}`)
        : randomEventId();
      try {
        await this.events.append(payloadStream(buildId), [
          {
            eventId,
            event: {
              type: 'PayloadRefused',
              schemaVersion: 1,
              occurredAt: new Date().toISOString(),
              actor,
              correlation,
              payload: { name: validName(name, buildId), buildId },
              check: what.check,
              code,
              reason,
              ...(what.expectedSha256 !== undefined ? { expectedSha256: what.expectedSha256 } : {}),
              ...(what.foundSha256 !== undefined ? { foundSha256: what.foundSha256 } : {}),
              ...(what.keyId !== undefined ? { keyId: what.keyId } : {}),
              ...(what.trustedKeys !== undefined ? { trustedKeys: what.trustedKeys } : {}),
            },
          },
        ]);
        details.recorded = true;
      } catch (e) {
        // The refusal stands even if it cannot be recorded; say so.
        details.recorded = false;
        details.recordError = (e as Error).message;
      }
    }
    throw new FleetpatchError(code, reason, details);
  }

  private sameOrConflict(stored: StoredPayload, name: string, sha256: string, signature: StoredPayload['signature']): StoredPayload {
    const conflict = conflictWith(stored, name, sha256, signature);
    if (conflict) throw new FleetpatchError('PAYLOAD_CONFLICT', conflict, { buildId: stored.buildId });
    return stored;
  }
}

function stripBytes(p: StoredPayload & { bytes: Buffer }): StoredPayload {
  const { bytes: _bytes, ...rest } = p;
  return rest;
}

/** A payload name the catalogue accepts, for recording a refusal whatever the row says. */
function validName(name: string, buildId: string): string {
  return name.length >= 1 && name.length <= 127 ? name : `payload-${buildId.slice(0, 16)}`;
}

/** Why the stored row is not what was recorded, in words; null when it is. */
function integrityProblem(row: PayloadRow & { bytes: Buffer }, found: string, recorded: Recorded): string | null {
  const what = `payload ${recorded.stored?.payload.name ?? row.name} (build-id ${row.build_id})`;
  if (recorded.broken) {
    return `${what}: its record cannot be trusted: the payload's event stream fails verification at position ${recorded.broken.position} (${recorded.broken.kind}); run fleetpatch audit verify`;
  }
  const stored = recorded.stored;
  if (!stored) return `${what}: no PayloadStored event records these bytes: they were put into the payload store behind the event store's back`;
  if (found !== stored.sha256 || row.bytes.length !== stored.size) {
    return `${what}: the stored bytes hash to sha256 ${found.slice(0, 16)}… (${row.bytes.length} bytes), but PayloadStored recorded ${stored.sha256.slice(0, 16)}… (${stored.size} bytes): the bytes were swapped after they were stored`;
  }
  if (row.sha256.toString('hex') !== found) return `${what}: the row's sha256 column (${row.sha256.toString('hex').slice(0, 16)}…) was altered; the bytes still match the record`;
  if (row.name !== stored.payload.name) return `${what}: the row's name was changed from ${stored.payload.name} to ${row.name}`;
  const recordedKey = stored.signature?.keyId ?? null;
  if ((row.signature_key_id ?? null) !== recordedKey) {
    return `${what}: the row's signature names key ${row.signature_key_id ?? '(none)'}, PayloadStored recorded ${recordedKey ?? 'no signature'}`;
  }
  return null;
}
