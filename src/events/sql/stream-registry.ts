/** The stream registry (migration 0011): 16 hash chains of the streams the store opened. */
import type { Queryable } from './event-row.ts';

export interface RegistryRow {
  shard: number;
  /** The entry's position in its shard's chain. */
  position: number;
  streamId: string;
  hash: string;
  transactionId: string;
  /** The transaction that wrote this row version (xmin), to compare with transaction_id. */
  rowXid: string;
}

export interface RegistryHeadRow {
  shard: number;
  position: number;
  lastHash: string;
  rowXid: string;
}

/** Every registration in (shard, position) order, or the one of `onlyStream`. */
export async function selectRegistry(db: Queryable, onlyStream: string | null): Promise<RegistryRow[]> {
  const { rows } = await db.query<{ shard: number; position: string; stream_id: string; hash: Buffer; transaction_id: string; row_xid: string }>(
    `SELECT shard, registry_position AS position, stream_id, hash, transaction_id, xmin::text AS row_xid FROM stream_registry
      WHERE $1::text IS NULL OR stream_id = $1 ORDER BY shard, registry_position`,
    [onlyStream],
  );
  return rows.map((r) => ({ shard: r.shard, position: Number(r.position), streamId: r.stream_id, hash: r.hash.toString('hex'), transactionId: r.transaction_id, rowXid: r.row_xid }));
}

/** The heads of the registry's chains, by shard (a shard whose head row is gone is missing). */
export async function selectRegistryHeads(db: Queryable): Promise<Map<number, RegistryHeadRow>> {
  const { rows } = await db.query<{ shard: number; position: string; last_hash: Buffer; row_xid: string }>('SELECT shard, registry_position AS position, last_hash, xmin::text AS row_xid FROM stream_registry_head');
  return new Map(rows.map((r) => [r.shard, { shard: r.shard, position: Number(r.position), lastHash: r.last_hash.toString('hex'), rowXid: r.row_xid }]));
}

/**
 * The transaction that made the registry (migration 0011), which wrote every head still at
 * position 0 (no opening has moved it); null when the migration's record is gone.
 */
export async function selectRegistryOrigin(db: Queryable): Promise<string | null> {
  const { rows } = await db.query<{ row_xid: string }>('SELECT xmin::text AS row_xid FROM schema_migrations WHERE version = 11');
  return rows[0]?.row_xid ?? null;
}

/** How many chains the registry keeps (migration 0011). */
export const REGISTRY_SHARDS = 16;
