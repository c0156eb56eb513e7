/**
 * The recording thread: runs the group committer's appends (hash chains, the INSERT's text, the
 * PostgreSQL protocol and its system calls) on a core of its own, with a pool of its own, so that
 * a worker's one JavaScript thread spends its time on the hosts. Started by RecorderThread
 * (recorder/client.ts) through entry.mjs.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { createPool } from '../../runtime/database.ts';
import { adoptParsedEvent, type DomainEvent } from '../catalogue.ts';
import { EventStore } from '../store.ts';
import { toWireError, type AppendReply, type AppendRequest } from './protocol.ts';

const port = parentPort;
if (!port) throw new Error('recorder/thread.ts runs as a worker thread (recorder/client.ts starts it)');
const { databaseUrl, poolMax } = workerData as { databaseUrl: string; poolMax: number };
const pool = createPool(databaseUrl, { max: poolMax, applicationName: 'fleetpatch-recorder' });
const store = new EventStore(pool);

port.on('message', (msg: AppendRequest | { close: true }) => {
  if ('close' in msg) {
    void pool.end().finally(() => port.close());
    return;
  }
  // RecorderThread validated every event before it sent them (client.ts).
  for (const b of msg.batches) for (const e of b.events) adoptParsedEvent(e.event as DomainEvent);
  store.appendWithRows(msg.batches, msg.writes).then(
    ({ rowCounts }) => port.postMessage({ id: msg.id, ok: true, rowCounts } satisfies AppendReply),
    (e: unknown) => port.postMessage({ id: msg.id, ok: false, error: toWireError(e) } satisfies AppendReply),
  );
});
