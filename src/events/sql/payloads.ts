/** Statements of the content-addressed payload store (payload-store.ts). */
import type { Queryable } from './event-row.ts';

export interface PayloadRow {
  build_id: string;
  name: string;
  sha256: Buffer;
  size: number;
  depends: string | null;
  xen_depends: string | null;
  signature: Buffer | null;
  signature_algorithm: string | null;
  signature_key_id: string | null;
  stored_at: Date;
}

const META_COLUMNS = 'build_id, name, sha256, size, depends, xen_depends, signature, signature_algorithm, signature_key_id, stored_at';

export interface NewPayloadRow {
  buildId: string;
  name: string;
  sha256: Buffer;
  bytes: Uint8Array;
  depends: string | null;
  xenDepends: string | null;
  signature: { algorithm: string; keyId: string; value: Buffer } | null;
}

/** Inserts unless the build-id is taken; true when this call stored it. */
export async function insertPayload(db: Queryable, p: NewPayloadRow): Promise<boolean> {
  const { rowCount } = await db.query(
    `INSERT INTO payloads (build_id, name, sha256, size, bytes, depends, xen_depends, signature, signature_algorithm, signature_key_id)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
     ON CONFLICT (build_id) DO NOTHING`,
    [p.buildId, p.name, p.sha256, p.bytes.length, Buffer.from(p.bytes), p.depends, p.xenDepends, p.signature?.value ?? null, p.signature?.algorithm ?? null, p.signature?.keyId ?? null],
  );
  return rowCount === 1;
}

export async function selectPayloadMeta(db: Queryable, buildId: string): Promise<PayloadRow | null> {
  const { rows } = await db.query<PayloadRow>(`SELECT ${META_COLUMNS} FROM payloads WHERE build_id = $1`, [buildId]);
  return rows[0] ?? null;
}

export async function selectPayloadBytes(db: Queryable, buildId: string): Promise<(PayloadRow & { bytes: Buffer }) | null> {
  const { rows } = await db.query<PayloadRow & { bytes: Buffer }>(`SELECT ${META_COLUMNS}, bytes FROM payloads WHERE build_id = $1`, [buildId]);
  return rows[0] ?? null;
}

/** Which of `buildIds` the store holds bytes for (one round trip for a whole fleet's payloads). */
export async function selectStoredBuildIds(db: Queryable, buildIds: readonly string[]): Promise<Set<string>> {
  if (buildIds.length === 0) return new Set();
  const r = await db.query<{ build_id: string }>('SELECT build_id FROM payloads WHERE build_id = ANY($1::text[])', [buildIds]);
  return new Set(r.rows.map((row) => row.build_id));
}
