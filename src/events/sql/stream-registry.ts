/** The stream registry (migration 0011), as the verifier and the token check read it. */
import type { Queryable } from './event-row.ts';

export interface RegistryRow {
  position: number;
  streamId: string;
  hash: string;
  transactionId: string;
  /** The transaction that wrote this row version (xmin), to compare with transaction_id. */
  rowXid: string;
}

export interface RegistryHeadRow {
  position: number;
  lastHash: string;
  rowXid: string;
}

/** Every registration in position order, or the one of `onlyStream`. */
export async function selectRegistry(db: Queryable, onlyStream: string | null): Promise<RegistryRow[]> {
  const { rows } = await db.query<{ position: string; stream_id: string; hash: Buffer; transaction_id: string; row_xid: string }>(
    `SELECT registry_position AS position, stream_id, hash, transaction_id, xmin::text AS row_xid FROM stream_registry
      WHERE $1::text IS NULL OR stream_id = $1 ORDER BY registry_position`,
    [onlyStream],
  );
  return rows.map((r) => ({ position: Number(r.position), streamId: r.stream_id, hash: r.hash.toString('hex'), transactionId: r.transaction_id, rowXid: r.row_xid }));
}

/** The registry's head, or null when its row is gone. */
export async function selectRegistryHead(db: Queryable): Promise<RegistryHeadRow | null> {
  const { rows } = await db.query<{ position: string; last_hash: Buffer; row_xid: string }>('SELECT registry_position AS position, last_hash, xmin::text AS row_xid FROM stream_registry_head');
  const r = rows[0];
  return r ? { position: Number(r.position), lastHash: r.last_hash.toString('hex'), rowXid: r.row_xid } : null;
}
