/**
 * The payload a rollout ships is the one that was recorded. Rows of the payload store are changed
 * in SQL the way an attacker with database access would (the append-only trigger disabled, bytes,
 * sha256 and size replaced together); every read for an upload or a restore refuses them and
 * records the refusal, `audit verify` names the payload, and signatures are checked against
 * trusted keys. Also: what verify can check of the global order, and an unknown --stream.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { verifyChains } from '../../src/events/audit/verify.ts';
import { PayloadStore } from '../../src/events/payload-store.ts';
import { EventStore } from '../../src/events/store.ts';
import { buildPayload } from '../../src/payload/builder.ts';
import { DEFAULT_IMAGE } from '../../src/payload/image.ts';
import { parsePayload } from '../../src/payload/model.ts';
import { generateSigningKey, signPayload } from '../../src/payload/signing.ts';
import { createTestDatabase, type TestDatabase } from '../support/database.ts';
import { ALICE, withIds, xenTestRun } from './support/events.ts';

let db: TestDatabase;
let store: EventStore;
let payloads: PayloadStore;
const trusted = generateSigningKey();
const stranger = generateSigningKey();

function built(name: string, returns: string) {
  const bytes = buildPayload({ name, funcs: [{ target: 'xen_extra_version', returns }] }, { image: DEFAULT_IMAGE });
  const parsed = parsePayload(bytes);
  return { name, bytes, buildId: parsed.buildIdHex, depends: parsed.dependsHex, xenDepends: parsed.xenDependsHex };
}

const sql = (text: string, params: unknown[] = []) => db.pool.query(text, params);
async function behindTheBack(text: string, params: unknown[] = []) {
  await sql('ALTER TABLE payloads DISABLE TRIGGER USER');
  try {
    await sql(text, params);
  } finally {
    await sql('ALTER TABLE payloads ENABLE TRIGGER USER');
  }
}

async function refusals(buildId: string) {
  return (await store.readStream(`payload-${buildId}`)).map((e) => e.event).filter((e) => e.type === 'PayloadRefused');
}

beforeAll(async () => {
  db = await createTestDatabase();
  store = new EventStore(db.pool);
  payloads = new PayloadStore(store);
});
afterAll(async () => {
  await db?.drop();
});

describe('the payloads table is append-only', () => {
  it('refuses UPDATE, DELETE and TRUNCATE', async () => {
    const p = built('fixed', 'Fixed');
    await payloads.put(p, { actor: ALICE });
    await expect(sql(`UPDATE payloads SET name = 'other' WHERE build_id = $1`, [p.buildId])).rejects.toThrow(/append-only: UPDATE on payloads/);
    await expect(sql(`DELETE FROM payloads WHERE build_id = $1`, [p.buildId])).rejects.toThrow(/append-only: DELETE on payloads/);
    await expect(sql('TRUNCATE payloads')).rejects.toThrow(/append-only: TRUNCATE on payloads/);
    expect((await payloads.get(p.buildId)).name).toBe('fixed');
  });
});

describe('swapped bytes', () => {
  it('bytes, sha256 and size replaced together: refused on read, recorded, named by audit verify, refused when stored again', async () => {
    const good = built('hello', 'Hello');
    const evil = built('hello', 'Owned');
    await payloads.put({ ...good, signature: signPayload(good.bytes, trusted, good.buildId) }, { actor: ALICE });
    expect((await verifyChains(store)).ok).toBe(true);

    // Everything the row says about itself agrees with the new bytes; only the chain remembers.
    const { rows } = await sql(`SELECT sha256(bytes) AS sha FROM (SELECT $1::bytea AS bytes) b`, [Buffer.from(evil.bytes)]);
    await behindTheBack(`UPDATE payloads SET bytes = $2, sha256 = $3, size = $4 WHERE build_id = $1`, [good.buildId, Buffer.from(evil.bytes), rows[0].sha, evil.bytes.length]);

    const e = await payloads.get(good.buildId, { actor: { kind: 'workflow', id: 'rollout-x' }, correlation: { rolloutId: 'x', workflowId: 'wf', runId: 'run', activityId: '7' } }).catch((x: unknown) => x);
    expect(e).toMatchObject({ code: 'PAYLOAD_TAMPERED', message: expect.stringMatching(/payload hello \(build-id [0-9a-f]+\): the stored bytes hash to sha256 [0-9a-f]{16}… \(\d+ bytes\), but PayloadStored recorded/), details: { recorded: true } });
    const [refused] = await refusals(good.buildId);
    expect(refused).toMatchObject({ type: 'PayloadRefused', check: 'digest', code: 'PAYLOAD_TAMPERED', payload: { name: 'hello', buildId: good.buildId }, foundSha256: (rows[0].sha as Buffer).toString('hex'), correlation: { rolloutId: 'x' } });
    // The same activity retried records it once.
    await payloads.get(good.buildId, { correlation: { rolloutId: 'x', workflowId: 'wf', runId: 'run', activityId: '7' } }).catch(() => undefined);
    expect(await refusals(good.buildId)).toHaveLength(1);

    // verify() (what a rollout asks) refuses before any signature matters.
    await expect(payloads.verify(good.buildId, { trustedKeys: [trusted], allowUnsigned: true })).rejects.toMatchObject({ code: 'PAYLOAD_TAMPERED' });
    // Storing the genuine file again does not paper over it.
    await expect(payloads.put({ ...good, signature: signPayload(good.bytes, trusted, good.buildId) }, { actor: ALICE })).rejects.toMatchObject({ code: 'PAYLOAD_TAMPERED' });

    const report = await verifyChains(store);
    expect(report.ok).toBe(false);
    expect(report.breaks).toEqual([]);
    expect(report.payloadBreaks).toEqual([expect.objectContaining({ kind: 'altered', buildId: good.buildId, name: 'hello', expectedSha256: expect.any(String), foundSha256: (rows[0].sha as Buffer).toString('hex') })]);
    expect(report.payloadBreaks[0]!.description).toMatch(/payload hello \(build-id .*\): the stored bytes hash to .*the bytes were swapped/);
    // ... and only that payload when asked about its stream.
    expect((await verifyChains(store, { streamId: `payload-${good.buildId}` })).payloadBreaks).toHaveLength(1);
    expect((await verifyChains(store, { streamId: `payload-${built('fixed', 'Fixed').buildId}` })).ok).toBe(true);
  });

  it('a row deleted, or one put in without a PayloadStored: refused and reported', async () => {
    const gone = built('gone', 'Gone');
    await payloads.put(gone, { actor: ALICE });
    await behindTheBack('DELETE FROM payloads WHERE build_id = $1', [gone.buildId]);
    await expect(payloads.get(gone.buildId)).rejects.toMatchObject({ code: 'PAYLOAD_TAMPERED', message: expect.stringMatching(/its bytes are gone from the payload store/) });

    const smuggled = built('smuggled', 'Smuggled');
    await sql(
      `INSERT INTO payloads (build_id, name, sha256, size, bytes, depends, xen_depends) VALUES ($1, 'smuggled', sha256($2::bytea), $3, $2, $4, $5)`,
      [smuggled.buildId, Buffer.from(smuggled.bytes), smuggled.bytes.length, smuggled.depends, smuggled.xenDepends],
    );
    await expect(payloads.get(smuggled.buildId)).rejects.toMatchObject({ code: 'PAYLOAD_TAMPERED', message: expect.stringMatching(/no PayloadStored event records these bytes/) });

    const report = await verifyChains(store);
    expect(report.payloadBreaks.map((b) => [b.name, b.kind])).toEqual(expect.arrayContaining([['gone', 'missing'], ['smuggled', 'unrecorded']]));
  });
});

describe('signatures against trusted keys', () => {
  it('refuses unsigned payloads unless allowed, keys that are not trusted, and signatures that do not verify; records the key', async () => {
    const unsigned = built('unsigned', 'U');
    await payloads.put(unsigned, { actor: ALICE });
    await expect(payloads.verify(unsigned.buildId, { trustedKeys: [trusted], allowUnsigned: false })).rejects.toMatchObject({ code: 'SIGNATURE_INVALID', message: expect.stringMatching(/is not signed/) });
    expect(await payloads.verify(unsigned.buildId, { trustedKeys: [trusted], allowUnsigned: true })).toMatchObject({ keyId: null });
    expect((await refusals(unsigned.buildId))[0]).toMatchObject({ check: 'signature', code: 'SIGNATURE_INVALID', keyId: null, trustedKeys: [trusted.keyId] });

    const foreign = built('foreign', 'F');
    await payloads.put({ ...foreign, signature: signPayload(foreign.bytes, stranger, foreign.buildId) }, { actor: ALICE });
    await expect(payloads.verify(foreign.buildId, { trustedKeys: [trusted], allowUnsigned: false })).rejects.toMatchObject({ code: 'SIGNATURE_INVALID', message: expect.stringMatching(new RegExp(`signed by key ${stranger.keyId}, which is not among the 1 trusted key`)) });
    expect((await refusals(foreign.buildId))[0]).toMatchObject({ keyId: stranger.keyId, trustedKeys: [trusted.keyId] });

    const signed = built('signed', 'S');
    const sig = signPayload(signed.bytes, trusted, signed.buildId);
    await payloads.put({ ...signed, signature: sig }, { actor: ALICE });
    expect(await payloads.verify(signed.buildId, { trustedKeys: [stranger, trusted], allowUnsigned: false })).toMatchObject({ keyId: trusted.keyId });
    // The signature bytes swapped for another payload's: the digest still matches, the signature does not.
    const other = signPayload(built('x', 'X').bytes, trusted);
    await behindTheBack('UPDATE payloads SET signature = $2 WHERE build_id = $1', [signed.buildId, Buffer.from(other.signature, 'base64')]);
    await expect(payloads.verify(signed.buildId, { trustedKeys: [trusted], allowUnsigned: true })).rejects.toMatchObject({ code: 'SIGNATURE_INVALID', message: expect.stringMatching(/does not verify/) });
  });
});

describe('what audit verify checks of the global order', () => {
  it('an event whose transaction_id was rewritten, and an unknown stream', async () => {
    await store.append('host-o1', withIds('o1', xenTestRun('o1')).slice(0, 3));
    await store.append('host-o1', withIds('o1', xenTestRun('o1')).slice(3, 6));
    expect((await verifyChains(store, { streamId: 'host-o1' })).ok).toBe(true);
    await sql('ALTER TABLE events DISABLE TRIGGER USER');
    try {
      // Moved before the event it follows in its stream: the chain does not cover it, the checks do.
      await sql(`UPDATE events SET transaction_id = '3'::xid8 WHERE stream_id = 'host-o1' AND stream_position = 5`);
    } finally {
      await sql('ALTER TABLE events ENABLE TRIGGER USER');
    }
    const report = await verifyChains(store, { streamId: 'host-o1' });
    expect(report.breaks).toEqual([]);
    expect(report.ok).toBe(false);
    expect(report.orderBreaks.map((b) => [b.kind, b.position])).toEqual(expect.arrayContaining([['stream-order', 5], ['rewritten', 5]]));

    await expect(verifyChains(store, { streamId: 'host-no-such-host' })).rejects.toMatchObject({ code: 'STREAM_NOT_FOUND' });
  });
});
