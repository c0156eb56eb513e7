/** The content-addressed payload store: bytes by build-id, idempotent, conflicts refused, recorded. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PayloadStore } from '../../src/events/payload-store.ts';
import { EventStore } from '../../src/events/store.ts';
import { buildPayload } from '../../src/payload/builder.ts';
import { DEFAULT_IMAGE } from '../../src/payload/image.ts';
import { buildIdToHex } from '../../src/payload/build-id.ts';
import { parsePayload } from '../../src/payload/model.ts';
import { generateSigningKey, signPayload } from '../../src/payload/signing.ts';
import { createTestDatabase, type TestDatabase } from '../support/database.ts';
import { ALICE } from './support/events.ts';

let db: TestDatabase;
let store: EventStore;
let payloads: PayloadStore;
const key = generateSigningKey();

function built(name: string, returns: string) {
  const bytes = buildPayload({ name, funcs: [{ target: 'xen_extra_version', returns }] }, { image: DEFAULT_IMAGE });
  const parsed = parsePayload(bytes);
  return { name, bytes, buildId: buildIdToHex(parsed.buildId), depends: buildIdToHex(parsed.depends), xenDepends: parsed.xenDepends ? buildIdToHex(parsed.xenDepends) : null };
}

beforeAll(async () => {
  db = await createTestDatabase();
  store = new EventStore(db.pool);
  payloads = new PayloadStore(store);
});
afterAll(async () => {
  await db?.drop();
});

describe('PayloadStore', () => {
  it('stores bytes by build-id with sha256, size, dependencies and signature, and records it once', async () => {
    const p = built('hello', 'Hello');
    const signature = signPayload(p.bytes, key, p.buildId);
    const first = await payloads.put({ ...p, signature }, { actor: ALICE, correlation: { rolloutId: 'r1' } });
    expect(first.created).toBe(true);
    expect(first.payload).toMatchObject({
      buildId: p.buildId,
      name: 'hello',
      sha256: signature.sha256,
      size: p.bytes.length,
      depends: p.depends,
      xenDepends: p.xenDepends,
      signature: { algorithm: 'ed25519', keyId: key.keyId, signature: signature.signature },
    });
    const got = await payloads.get(p.buildId);
    expect(Buffer.compare(got.bytes, Buffer.from(p.bytes))).toBe(0);

    // The same payload again: nothing new, nothing recorded twice.
    const again = await payloads.put({ ...p, signature }, { actor: ALICE });
    expect(again).toEqual({ payload: first.payload, created: false });
    const events = await store.readStream(`payload-${p.buildId}`);
    expect(events).toHaveLength(1);
    expect(events[0]!.event).toMatchObject({
      type: 'PayloadStored',
      actor: ALICE,
      correlation: { rolloutId: 'r1' },
      payload: { name: 'hello', buildId: p.buildId },
      sha256: signature.sha256,
      size: p.bytes.length,
      signature: { algorithm: 'ed25519', keyId: key.keyId },
    });
  });

  it('refuses other bytes, another name or another signature under a stored build-id', async () => {
    const p = built('bye', 'Bye');
    await payloads.put(p, { actor: ALICE });
    const other = built('bye', 'Other');
    await expect(payloads.put({ ...other, buildId: p.buildId }, { actor: ALICE })).rejects.toMatchObject({ code: 'PAYLOAD_CONFLICT', message: expect.stringMatching(/other bytes are stored/) });
    await expect(payloads.put({ ...p, name: 'bye2' }, { actor: ALICE })).rejects.toMatchObject({ code: 'PAYLOAD_CONFLICT', message: expect.stringMatching(/stored under the name bye, not bye2/) });
    await expect(payloads.put({ ...p, signature: signPayload(p.bytes, key) }, { actor: ALICE })).rejects.toMatchObject({ code: 'PAYLOAD_CONFLICT', message: expect.stringMatching(/stored unsigned/) });
    expect(await store.readStream(`payload-${p.buildId}`)).toHaveLength(1);
  });

  it('refuses a signature made for other bytes', async () => {
    const p = built('sig', 'Sig');
    const elsewhere = signPayload(built('sig', 'Elsewhere').bytes, key);
    await expect(payloads.put({ ...p, signature: elsewhere }, { actor: ALICE })).rejects.toMatchObject({ code: 'SIGNATURE_INVALID' });
    expect(await payloads.meta(p.buildId)).toBeNull();
  });

  it('settles concurrent stores of one payload: one creates, the others find it, one event', async () => {
    const p = built('race', 'Race');
    const results = await Promise.all(Array.from({ length: 6 }, () => payloads.put(p, { actor: ALICE })));
    expect(results.filter((r) => r.created)).toHaveLength(1);
    expect(await store.readStream(`payload-${p.buildId}`)).toHaveLength(1);
    // Concurrent stores of different bytes under one build-id: exactly one wins, nothing half-written.
    const q = built('race2', 'One');
    const r = built('race2', 'Two');
    const settled = await Promise.allSettled([payloads.put(q, { actor: ALICE }), payloads.put({ ...r, buildId: q.buildId }, { actor: ALICE })]);
    expect(settled.map((s) => s.status).sort()).toEqual(['fulfilled', 'rejected']);
    expect(await store.readStream(`payload-${q.buildId}`)).toHaveLength(1);
  });

  it('answers PAYLOAD_NOT_FOUND, and notices bytes altered behind its back (trigger disabled by a superuser)', async () => {
    await expect(payloads.get('ee'.repeat(20))).rejects.toMatchObject({ code: 'PAYLOAD_NOT_FOUND' });
    const p = built('tampered', 'Tampered');
    await payloads.put(p, { actor: ALICE });
    await expect(db.pool.query(`UPDATE payloads SET bytes = overlay(bytes placing '\\x00'::bytea from 100) WHERE build_id = $1`, [p.buildId])).rejects.toThrow(/append-only/);
    await db.pool.query('ALTER TABLE payloads DISABLE TRIGGER payloads_append_only');
    await db.pool.query(`UPDATE payloads SET bytes = overlay(bytes placing '\\x00'::bytea from 100) WHERE build_id = $1`, [p.buildId]);
    await db.pool.query('ALTER TABLE payloads ENABLE TRIGGER payloads_append_only');
    await expect(payloads.get(p.buildId)).rejects.toMatchObject({ code: 'PAYLOAD_TAMPERED', message: expect.stringMatching(/the bytes were swapped after they were stored/) });
  });
});
