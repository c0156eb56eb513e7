/**
 * `fleetpatch audit verify`: recomputes every stream's hash chain from the stored rows and reports
 * the first broken link of each stream (altered event, missing position, head that does not match),
 * checks the stream registry's own chain and that every registered stream is still there (a stream
 * deleted whole, events and head, is named) and every stored one registered,
 * re-hashes every stored payload against the digest its PayloadStored event recorded, checks what
 * can be checked of the global order (which the chains do not cover; docs/events.md says exactly
 * what is and is not protected), and prints a digest of all stream heads that an operator can keep
 * elsewhere to notice even a fully recomputed chain. One REPEATABLE READ snapshot, so concurrent
 * appends cannot look like tampering.
 */
import { createHash } from 'node:crypto';
import { FleetpatchError } from '../../errors.ts';
import { canonicalJson, checkRegistry, sha256Hex, StreamChainChecker, type ChainBreak, type RegistryBreak } from '../hash-chain.ts';
import { toChainRecord, type Queryable } from '../sql/event-row.ts';
import { countRewrittenRows, selectChainBatch, selectHeads, selectOrderProblems } from '../sql/audit.ts';
import { selectPayloadBatch, selectRecordedDigests } from '../sql/payload-integrity.ts';
import { REGISTRY_SHARDS, selectRegistry, selectRegistryHeads, selectRegistryOrigin, type RegistryHeadRow, type RegistryRow } from '../sql/stream-registry.ts';
import type { EventStore } from '../store.ts';
import { parseStreamId } from '../streams.ts';

/** A stored payload that is not what its PayloadStored event recorded. */
export interface PayloadBreak {
  kind: 'altered' | 'missing' | 'unrecorded';
  buildId: string;
  name: string;
  /** What PayloadStored recorded (null: nothing records it). */
  expectedSha256: string | null;
  /** What the stored bytes hash to (null: no bytes are stored). */
  foundSha256: string | null;
  description: string;
}

/** An event whose place in the global order does not hold up (see selectOrderProblems). */
export interface OrderBreak {
  kind: 'stream-order' | 'rewritten' | 'head-rewritten' | 'future' | 'aborted';
  streamId: string;
  position: number;
  transactionId: string;
  description: string;
}

/** A problem of the stream registry itself: its chain, its head, a row rewritten (whole verify only). */
export interface RegistryProblem {
  kind: RegistryBreak['kind'] | 'rewritten' | 'head-rewritten';
  /** Which of the registry's chains, and the position in it. */
  shard: number;
  position: number;
  streamId: string | null;
  description: string;
}

export interface VerifyReport {
  ok: boolean;
  streams: number;
  events: number;
  /** The first break of every broken stream, by stream name (deleted and unregistered streams too). */
  breaks: ChainBreak[];
  /** Streams the registry records (every stream the store opened; with --stream, that one's entry). */
  registered: number;
  registryBreaks: RegistryProblem[];
  /** Stored payloads checked against their PayloadStored digest. */
  payloads: number;
  payloadBreaks: PayloadBreak[];
  /** Global-order problems (at most 100 of each kind). */
  orderBreaks: OrderBreak[];
  /** Things worth knowing that are not breaks (e.g. a table restored from a dump). */
  notes: string[];
  /** sha256 of the canonical JSON of [[stream, position, head hash], ...] sorted by stream. */
  headsDigest: string;
}

export async function verifyChains(store: EventStore, options: { streamId?: string; batchSize?: number } = {}): Promise<VerifyReport> {
  const only = options.streamId ?? null;
  const batchSize = options.batchSize ?? 5000;
  const onlyPayload = only === null ? null : only.startsWith('payload-') ? parseStreamId(only).id : undefined;
  const client = await store.pool.connect();
  try {
    await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
    const heads = await selectHeads(client, only);
    const registry = await selectRegistry(client, only);
    const registryHeads = only === null ? await selectRegistryHeads(client) : null;
    const registryOrigin = only === null ? await selectRegistryOrigin(client) : null;
    /** Every stream with events or a head. */
    const stored = new Set<string>();
    const breaks: ChainBreak[] = [];
    const ends: [string, number, string][] = [];
    let events = 0;
    let streams = 0;
    let checker = null as StreamChainChecker | null;
    let lastPosition = 0;
    const finish = () => {
      if (!checker) return;
      const broken = checker.finish(heads.get(checker.streamId) ?? null);
      if (broken) breaks.push(broken);
      ends.push([checker.streamId, lastPosition, checker.headHash]);
      heads.delete(checker.streamId);
      stored.add(checker.streamId);
      streams++;
    };
    let after: { streamId: string; position: number } | null = null;
    for (;;) {
      const rows = await selectChainBatch(client, after, only, batchSize);
      for (const row of rows) {
        const record = toChainRecord(row);
        if (checker?.streamId !== record.streamId) {
          finish();
          checker = new StreamChainChecker(record.streamId);
        }
        checker.push(record, row.hash.toString('hex'));
        lastPosition = record.streamPosition;
        events++;
      }
      if (rows.length < batchSize) break;
      const last = rows[rows.length - 1]!;
      after = { streamId: last.stream_id, position: Number(last.stream_position) };
    }
    finish();
    // Heads left over are streams whose every event is gone.
    for (const [streamId, head] of heads) {
      breaks.push({ kind: 'missing', streamId, position: 1, description: `the stream head says ${head.position} events, none is stored: every event was deleted` });
      ends.push([streamId, 0, '']);
      stored.add(streamId);
      streams++;
    }
    // Existence, checked against the registry: a stream can only vanish from both places at once
    // by breaking the registry's own chain as well.
    const registeredIds = new Set(registry.map((r) => r.streamId));
    for (const r of registry) {
      if (stored.has(r.streamId)) continue;
      breaks.push({ kind: 'deleted', streamId: r.streamId, position: 0, registry: { shard: r.shard, position: r.position }, description: `the stream registry records it (chain ${r.shard}, position ${r.position}), but neither its events nor its head are stored: the whole stream was deleted` });
      streams++;
    }
    for (const streamId of stored) {
      if (!registeredIds.has(streamId)) {
        breaks.push({ kind: 'unregistered', streamId, position: 0, description: 'its events are stored, but the stream registry does not record it: it was written behind the store\'s back, or its registration was deleted' });
      }
    }
    const registryBreaks = registryHeads ? registryProblems(registry, registryHeads, registryOrigin) : [];
    if (only !== null && streams === 0) {
      const payloadRows = onlyPayload ? await selectPayloadBatch(client, null, onlyPayload, 1) : [];
      if (payloadRows.length === 0) throw new FleetpatchError('STREAM_NOT_FOUND', `no stream ${only}: no event and no stream head has that name`, { streamId: only });
    }
    const payloadCheck = onlyPayload === undefined ? { payloads: 0, payloadBreaks: [] } : await verifyPayloads(client, onlyPayload, batchSize);
    const { orderBreaks, notes } = await verifyOrder(client, only);
    await client.query('COMMIT');
    breaks.sort((a, b) => (a.streamId < b.streamId ? -1 : a.streamId > b.streamId ? 1 : 0));
    ends.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
    return {
      ok: breaks.length === 0 && registryBreaks.length === 0 && payloadCheck.payloadBreaks.length === 0 && orderBreaks.length === 0,
      streams,
      events,
      breaks,
      registered: registry.length,
      registryBreaks,
      ...payloadCheck,
      orderBreaks,
      notes,
      headsDigest: sha256Hex(canonicalJson(ends)),
    };
  } catch (e) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw e;
  } finally {
    client.release();
  }
}

/** The xid a row version's xmin shows for an xid8 (its low 32 bits). */
const xmin32 = (xid8: string) => String(BigInt(xid8) % 4294967296n);

/**
 * Each registry chain and its head (checkRegistry), and, as for events, rows written by another
 * transaction than the one they record: a registration UPDATEd, a head that no opening wrote
 * (rewound to hide the newest registrations). A store restored from a dump rewrites every row;
 * verifyOrder notes that, and these checks say nothing then.
 */
function registryProblems(registry: readonly RegistryRow[], heads: ReadonlyMap<number, RegistryHeadRow>, origin: string | null): RegistryProblem[] {
  const problems: RegistryProblem[] = [];
  const rewritten = registry.filter((r) => xmin32(r.transactionId) !== r.rowXid);
  const restored = registry.length > 0 && rewritten.length === registry.length;
  for (let shard = 0; shard < REGISTRY_SHARDS; shard++) {
    const entries = registry.filter((r) => r.shard === shard);
    const head = heads.get(shard) ?? null;
    const chain = checkRegistry(shard, entries, head);
    if (chain) problems.push(chain);
    // A head is written by the opening of its chain's last stream, or, still at 0, by the migration.
    const last = entries.at(-1);
    const writer = head && head.position > 0 && last ? xmin32(last.transactionId) : head?.position === 0 ? origin : null;
    if (!restored && head && writer !== null && writer !== head.rowXid) {
      const by = head.position > 0 ? `the one that registered its last stream (${last!.transactionId})` : `migration 0011 (transaction ${writer}), the only writer of a head no stream moved`;
      problems.push({ kind: 'head-rewritten', shard, position: head.position, streamId: null, description: `the head of registry chain ${shard} was written by transaction ${head.rowXid}, not by ${by}: the head was rewritten` });
    }
  }
  if (!restored) {
    for (const r of rewritten.slice(0, 100)) {
      problems.push({ kind: 'rewritten', shard: r.shard, position: r.position, streamId: r.streamId, description: `the registration of ${r.streamId} was recorded by transaction ${r.transactionId}, but this row version was written by transaction ${r.rowXid}: it was UPDATEd` });
    }
  }
  return problems;
}

/** Re-hashes every stored payload (or one) and compares it with its PayloadStored event. */
async function verifyPayloads(db: Queryable, only: string | null, batchSize: number): Promise<{ payloads: number; payloadBreaks: PayloadBreak[] }> {
  const recorded = await selectRecordedDigests(db, only);
  const breaks: PayloadBreak[] = [];
  let payloads = 0;
  let after: string | null = null;
  // Payloads are up to 2 MiB each: a few at a time.
  const size = Math.max(1, Math.min(batchSize, 16));
  for (;;) {
    const rows = await selectPayloadBatch(db, after, only, size);
    for (const row of rows) {
      payloads++;
      const found = createHash('sha256').update(row.bytes).digest('hex');
      const rec = recorded.get(row.build_id);
      recorded.delete(row.build_id);
      if (!rec) {
        breaks.push({ kind: 'unrecorded', buildId: row.build_id, name: row.name, expectedSha256: null, foundSha256: found, description: `payload ${row.name} (build-id ${row.build_id}) is stored, but no PayloadStored event records it: it was put into the payload store behind the event store's back` });
      } else if (found !== rec.sha256 || row.bytes.length !== rec.size) {
        breaks.push({
          kind: 'altered',
          buildId: row.build_id,
          name: rec.name,
          expectedSha256: rec.sha256,
          foundSha256: found,
          description: `payload ${rec.name} (build-id ${row.build_id}): the stored bytes hash to ${found.slice(0, 16)}… (${row.bytes.length} bytes), PayloadStored recorded ${rec.sha256.slice(0, 16)}… (${rec.size} bytes): the bytes were swapped`,
        });
      } else if (row.sha256.toString('hex') !== found || row.name !== rec.name) {
        breaks.push({ kind: 'altered', buildId: row.build_id, name: rec.name, expectedSha256: rec.sha256, foundSha256: found, description: `payload ${rec.name} (build-id ${row.build_id}): the row's ${row.name !== rec.name ? `name (${row.name})` : 'sha256 column'} was altered; the bytes still match the record` });
      }
    }
    if (rows.length < size) break;
    after = rows[rows.length - 1]!.build_id;
  }
  for (const rec of recorded.values()) {
    breaks.push({ kind: 'missing', buildId: rec.buildId, name: rec.name, expectedSha256: rec.sha256, foundSha256: null, description: `payload ${rec.name} (build-id ${rec.buildId}) was stored (PayloadStored), but its bytes are gone: the row was deleted` });
  }
  breaks.sort((a, b) => (a.buildId < b.buildId ? -1 : a.buildId > b.buildId ? 1 : 0));
  return { payloads, payloadBreaks: breaks };
}

const ORDER_WORDS: Record<OrderBreak['kind'], (r: { transactionId: string; detail: string | null }) => string> = {
  'stream-order': (r) => `recorded in transaction ${r.transactionId}, not after the event before it (transaction ${r.detail}): the global order was rewritten`,
  rewritten: (r) => `recorded by transaction ${r.transactionId}, but this row version was written by transaction ${r.detail}: the row was UPDATEd after it was recorded`,
  'head-rewritten': (r) => `the stream head was written by transaction ${r.detail}, not by the transaction of its last event (${r.transactionId}): the head was rewritten`,
  future: (r) => `transaction ${r.transactionId} has not happened yet: the transaction id was rewritten`,
  aborted: (r) => `transaction ${r.transactionId} was rolled back, so nothing it wrote can be stored: the transaction id was rewritten`,
};

async function verifyOrder(db: Queryable, only: string | null): Promise<{ orderBreaks: OrderBreak[]; notes: string[] }> {
  const notes: string[] = [];
  const counts = await countRewrittenRows(db, only);
  let rows = await selectOrderProblems(db, only, 100);
  if (counts.total > 0 && counts.rewritten === counts.total) {
    // Every row rewritten at once: a restore from a logical dump or a table rewrite, not an edit.
    rows = rows.filter((r) => r.kind !== 'rewritten' && r.kind !== 'head-rewritten');
    notes.push(`every event row was written by another transaction than the one it records (${counts.total} rows): the store was restored from a logical dump or its table rewritten, so row versions cannot show edits; compare the heads digest with one kept from before`);
  }
  const orderBreaks = rows.map((r) => ({
    kind: r.kind,
    streamId: r.stream_id,
    position: Number(r.stream_position),
    transactionId: r.transaction_id,
    description: ORDER_WORDS[r.kind]({ transactionId: r.transaction_id, detail: r.detail }),
  }));
  return { orderBreaks, notes };
}
