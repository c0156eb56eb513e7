/**
 * `fleetpatch audit verify`: recomputes every stream's hash chain from the stored rows and reports
 * the first broken link of each stream (altered event, missing position, head that does not match),
 * plus a digest of all stream heads that an operator can keep elsewhere to notice even a fully
 * recomputed chain. One REPEATABLE READ snapshot, so concurrent appends cannot look like tampering.
 */
import { canonicalJson, sha256Hex, StreamChainChecker, type ChainBreak } from '../hash-chain.ts';
import { toChainRecord } from '../sql/event-row.ts';
import { selectChainBatch, selectHeads } from '../sql/audit.ts';
import type { EventStore } from '../store.ts';

export interface VerifyReport {
  ok: boolean;
  streams: number;
  events: number;
  /** The first break of every broken stream, by stream name. */
  breaks: ChainBreak[];
  /** sha256 of the canonical JSON of [[stream, position, head hash], ...] sorted by stream. */
  headsDigest: string;
}

export async function verifyChains(store: EventStore, options: { streamId?: string; batchSize?: number } = {}): Promise<VerifyReport> {
  const only = options.streamId ?? null;
  const batchSize = options.batchSize ?? 5000;
  const client = await store.pool.connect();
  try {
    await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
    const heads = await selectHeads(client, only);
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
      streams++;
    }
    await client.query('COMMIT');
    breaks.sort((a, b) => (a.streamId < b.streamId ? -1 : a.streamId > b.streamId ? 1 : 0));
    ends.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
    return { ok: breaks.length === 0, streams, events, breaks, headsDigest: sha256Hex(canonicalJson(ends)) };
  } catch (e) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw e;
  } finally {
    client.release();
  }
}
