/**
 * The event store: append throughput (one event per append, one after another and 16 at a time;
 * batches of 1,000 events over 100 streams) beside a raw COPY of the same rows into a bare table
 * (no index, no constraint, no hash, no lock: the ceiling of this machine and server), then p50/p95
 * of the host-timeline and stack-as-of queries with more than 1,000,000 events stored.
 *
 * Runs in a database of its own on DATABASE_URL's server (or the embedded one), dropped at the end.
 * The 1,000,000 bulk events are generated in SQL (INSERT ... SELECT generate_series): realistic
 * facts in realistic streams (10,000 hosts, each with 9 patch cycles of 10 events: checks, upload,
 * apply, health, a refused probe payload, unload; plus 10 rollouts of 10,000 host outcomes), in
 * time order as a real fleet would write them, but their hashes are NOT chained (sha256 of the row
 * key): `audit verify` would report them, the queries measured here do not read hashes.
 */
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { percentile, type Bench, type BenchContext } from './report.ts';
import { migrate } from '../src/events/migrate.ts';
import { hostStackAsOf } from '../src/events/audit/stack-as-of.ts';
import { hostTimeline } from '../src/events/audit/timeline.ts';
import type { DomainEventInput } from '../src/events/catalogue.ts';
import { eventIdFromKey } from '../src/events/event-id.ts';
import { EventStore, type StreamAppend } from '../src/events/store.ts';
import { loadConfig } from '../src/runtime/config.ts';
import { createPool, redactUrl } from '../src/runtime/database.ts';
import { startEmbeddedPostgres } from '../src/runtime/embedded-postgres.ts';
import { createLogger } from '../src/runtime/logger.ts';

const HYPERVISOR = 'b48efad4098d4242ea8a36386ea1467ab59cffc9';
const BULK_HOSTS = 10_000;
const BULK_CYCLES = 9;
const BULK_ROLLOUTS = 10;
const QUERY_SAMPLES = 300;

export default (async (ctx) => {
  const config = loadConfig();
  const logger = createLogger('warn', { pretty: false, name: 'bench-events' });
  let serverUrl = config.database.url;
  let stopEmbedded: (() => Promise<void>) | undefined;
  if (!serverUrl) {
    const embedded = await startEmbeddedPostgres({ dataDir: config.dataDir, port: config.database.embeddedPort, logger });
    serverUrl = embedded.url;
    if (embedded.startedHere) stopEmbedded = embedded.stop;
  }
  const name = `fp_bench_${randomBytes(4).toString('hex')}`;
  const admin = new pg.Client({ connectionString: serverUrl });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${name}`);
  const url = new URL(serverUrl);
  url.pathname = `/${name}`;
  const pool = createPool(url.toString(), { max: 20, applicationName: 'fleetpatch-bench' });
  ctx.log(`database ${redactUrl(url.toString())}`);
  try {
    await migrate(pool);
    const store = new EventStore(pool);
    const batchedRows = await appendThroughput(ctx, store);
    await copyCeiling(ctx, pool, batchedRows);
    await queriesAtScale(ctx, store, pool);
  } finally {
    await pool.end();
    await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`).catch(() => undefined);
    await admin.end();
    await stopEmbedded?.();
  }
}) satisfies Bench;

/** A realistic host event: what an apply activity records. */
function hostEvent(host: string, i: number, occurredAt: string): DomainEventInput {
  const payload = { name: `fix_${i % 50}`, buildId: eventIdFromKey(`payload:${i % 50}`).replaceAll('-', '').padEnd(40, '0') };
  const base = {
    schemaVersion: 1 as const,
    occurredAt,
    actor: { kind: 'workflow' as const, id: `host-patch/bench/${host}` },
    correlation: { rolloutId: 'bench', workflowId: `host-patch/bench/${host}`, runId: 'run-1', activityId: String(i), attempt: 1 },
    hostId: host,
  };
  return i % 3 === 0
    ? { ...base, type: 'DependencyChecked', payload, phase: 'apply', expected: HYPERVISOR, found: HYPERVISOR, against: { kind: 'hypervisor' }, outcome: 'match' }
    : { ...base, type: i % 3 === 1 ? 'PayloadUploaded' : 'PayloadApplied', payload };
}

async function timed(fn: () => Promise<void>): Promise<number> {
  const t0 = performance.now();
  await fn();
  return (performance.now() - t0) / 1000;
}

async function appendThroughput(ctx: BenchContext, store: EventStore): Promise<number> {
  const now = new Date().toISOString();
  const SEQUENTIAL = 2_000;
  const seqSeconds = await timed(async () => {
    for (let i = 0; i < SEQUENTIAL; i++) {
      const host = `seq-${i % 200}`;
      await store.append(`host-${host}`, [{ eventId: eventIdFromKey(`seq:${i}`), event: hostEvent(host, i, now) }]);
    }
  });
  ctx.report({ name: 'append, 1 event per append, sequential', value: SEQUENTIAL / seqSeconds, unit: 'events/s', note: `${SEQUENTIAL} appends over 200 host streams, each its own transaction (commit waits for WAL flush)` });

  const WRITERS = 16;
  const PER_WRITER = 250;
  const concSeconds = await timed(async () => {
    await Promise.all(
      Array.from({ length: WRITERS }, async (_, w) => {
        for (let i = 0; i < PER_WRITER; i++) {
          const host = `conc-${(w * 13 + i) % 400}`;
          await store.append(`host-${host}`, [{ eventId: eventIdFromKey(`conc:${w}:${i}`), event: hostEvent(host, i, now) }]);
        }
      }),
    );
  });
  ctx.report({ name: `append, 1 event per append, ${WRITERS} writers`, value: (WRITERS * PER_WRITER) / concSeconds, unit: 'events/s', note: `${WRITERS * PER_WRITER} appends over 400 host streams (streams shared between writers)` });

  const BATCHES = 40;
  const STREAMS = 100;
  const PER_STREAM = 10;
  const batches: StreamAppend[][] = Array.from({ length: BATCHES }, (_, b) =>
    Array.from({ length: STREAMS }, (_, s) => {
      const host = `batch-${s}`;
      return {
        streamId: `host-${host}`,
        events: Array.from({ length: PER_STREAM }, (_, k) => ({ eventId: eventIdFromKey(`batch:${b}:${s}:${k}`), event: hostEvent(host, b * PER_STREAM + k, now) })),
      };
    }),
  );
  const batchSeconds = await timed(async () => {
    for (const batch of batches) await store.appendMany(batch);
  });
  const batched = BATCHES * STREAMS * PER_STREAM;
  ctx.report({ name: 'append, batches of 1,000 events', value: batched / batchSeconds, unit: 'events/s', note: `${batched} events in ${BATCHES} appendMany calls of ${STREAMS} streams x ${PER_STREAM} events (validated, hash-chained, version-checked)` });
  return batched;
}

/**
 * COPY ... FROM STDIN through node-postgres' extension point for custom submittables: pg has no
 * COPY API of its own and pg-copy-streams is not a dependency. Sends the whole text at once.
 */
class CopyIn {
  callback?: (err: Error | null) => void;
  private readonly done: Promise<void>;
  private settle!: (err: Error | null) => void;
  private error: Error | null = null;

  constructor(
    readonly text: string,
    private readonly data: Buffer,
  ) {
    this.done = new Promise((resolve, reject) => {
      this.settle = (err) => (err ? reject(err) : resolve());
    });
  }

  get finished(): Promise<void> {
    return this.done;
  }

  submit(connection: { query(text: string): void }): void {
    connection.query(this.text);
  }

  handleCopyInResponse(connection: { sendCopyFromChunk(b: Buffer): void; endCopyFrom(): void }): void {
    connection.sendCopyFromChunk(this.data);
    connection.endCopyFrom();
  }

  handleCommandComplete(): void {}

  handleError(err: Error): void {
    this.error = err;
  }

  handleReadyForQuery(): void {
    this.settle(this.error);
    this.callback?.(this.error);
  }
}

async function copyIn(client: pg.PoolClient, sql: string, data: Buffer): Promise<void> {
  const copy = new CopyIn(sql, data);
  void client.query(copy as never);
  await copy.finished;
}

/** COPY text format: backslash, newline, carriage return and tab escaped. */
const esc = (s: string) => s.replace(/[\\\n\r\t]/g, (c) => ({ '\\': '\\\\', '\n': '\\n', '\r': '\\r', '\t': '\\t' })[c]!);

async function copyCeiling(ctx: BenchContext, pool: pg.Pool, rows: number): Promise<void> {
  // Exactly the rows the batched appends wrote, every column, into a table with nothing on it.
  const { rows: source } = await pool.query<Record<string, string>>(
    `SELECT global_position::text, transaction_id::text, event_id::text, stream_id, stream_position::text, type, schema_version::text,
            occurred_at::text, recorded_at::text, actor::text, correlation::text, data::text, '\\x' || encode(hash, 'hex') AS hash
       FROM events WHERE stream_id LIKE 'host-batch-%' ORDER BY global_position`,
  );
  if (source.length !== rows) throw new Error(`expected ${rows} batched rows, found ${source.length}`);
  const columns = ['global_position', 'transaction_id', 'event_id', 'stream_id', 'stream_position', 'type', 'schema_version', 'occurred_at', 'recorded_at', 'actor', 'correlation', 'data', 'hash'];
  const lines = source.map((r) => columns.map((c) => esc(r[c]!)).join('\t'));
  await pool.query('CREATE TABLE bench_copy (LIKE events)');
  const client = await pool.connect();
  try {
    const whole = Buffer.from(lines.join('\n') + '\n');
    const oneCopy = await timed(() => copyIn(client, `COPY bench_copy (${columns.join(', ')}) FROM STDIN`, whole));
    ctx.report({ name: 'raw COPY into a bare table, one COPY', value: rows / oneCopy, unit: 'events/s', note: `the same ${rows} rows, ${(whole.length / 1e6).toFixed(1)} MB; the ceiling` });
    await client.query('TRUNCATE bench_copy');
    const chunks = await timed(async () => {
      for (let i = 0; i < lines.length; i += 1000) {
        await copyIn(client, `COPY bench_copy (${columns.join(', ')}) FROM STDIN`, Buffer.from(lines.slice(i, i + 1000).join('\n') + '\n'));
      }
    });
    ctx.report({ name: 'raw COPY into a bare table, 1,000 rows per COPY', value: rows / chunks, unit: 'events/s', note: 'one transaction per 1,000 rows, like the batched appends' });
    const copied = Number((await client.query('SELECT count(*) AS n FROM bench_copy')).rows[0].n);
    if (copied !== rows) throw new Error(`COPY stored ${copied} rows, not ${rows}`);
  } finally {
    client.release();
    await pool.query('DROP TABLE bench_copy');
  }
}

/** Builds a 40-hex build-id from a SQL text expression. */
const buildIdSql = (expr: string) => `(md5(${expr}) || substr(md5('x' || ${expr}), 1, 8))`;

async function queriesAtScale(ctx: BenchContext, store: EventStore, pool: pg.Pool): Promise<void> {
  const host = `'bulk-' || lpad(h::text, 5, '0')`;
  const payload = (k: string) => `jsonb_build_object('name', 'hotfix_' || ${k}, 'buildId', ${buildIdSql(`'hotfix' || ${k}`)})`;
  const probe = `jsonb_build_object('name', 'probe_' || (c + 1), 'buildId', ${buildIdSql(`'probe' || (c + 1)`)})`;
  const below = `CASE WHEN c = 0 THEN '${HYPERVISOR}' ELSE ${buildIdSql(`'hotfix' || c`)} END`;
  const againstBelow = `CASE WHEN c = 0 THEN '{"kind":"hypervisor"}'::jsonb ELSE ${payload('c')} || '{"kind":"payload"}'::jsonb END`;
  const check = (phase: string) =>
    `jsonb_build_object('hostId', ${host}, 'payload', ${payload('(c + 1)')}, 'phase', '${phase}', 'on', 'depends', 'expected', ${below}, 'found', ${below}, 'against', ${againstBelow}, 'outcome', 'match')`;
  const health = `jsonb_build_object('hostId', ${host}, 'outcome', 'healthy', 'check', jsonb_build_object('call', 'xen_extra_version', 'expect', 'hotfix-' || (c + 1)), 'observed', 'hotfix-' || (c + 1))`;
  const refusal = `'check against hotfix_' || (c + 1) || ' build-id failed'`;

  const t0 = performance.now();
  for (let cycle = 0; cycle < BULK_CYCLES; cycle++) {
    await pool.query(
      `INSERT INTO events (event_id, stream_id, stream_position, type, schema_version, occurred_at, recorded_at, actor, correlation, data, hash)
       SELECT md5('bulk:' || h || ':' || p)::uuid, 'host-' || ${host}, p, type, 1, ts, ts + interval '5 milliseconds',
              jsonb_build_object('kind', 'workflow', 'id', 'host-patch/bulk-' || c || '/' || ${host}),
              jsonb_build_object('rolloutId', 'bulk-' || c, 'workflowId', 'host-patch/bulk-' || c || '/' || ${host}, 'runId', 'run-1', 'activityId', (s + 1)::text, 'attempt', 1),
              data, sha256(convert_to(h || ':' || p, 'UTF8'))
         FROM (SELECT $1::int AS c) cy, generate_series(1, ${BULK_HOSTS}) h, generate_series(0, 9) s,
              LATERAL (SELECT c * 10 + s + 1 AS p, timestamptz '2025-01-01 00:00:00Z' + c * interval '1 day' + h * interval '1 second' + s * interval '100 milliseconds' AS ts) x,
              LATERAL (SELECT
                (ARRAY['DependencyChecked', 'PayloadUploaded', 'DependencyChecked', 'PayloadApplied', 'HealthChecked',
                       'PayloadUploaded', 'DependencyChecked', 'PayloadActionFailed', 'PayloadUnloaded', 'HealthChecked'])[s + 1] AS type,
                CASE s
                  WHEN 0 THEN ${check('preflight')}
                  WHEN 1 THEN jsonb_build_object('hostId', ${host}, 'payload', ${payload('(c + 1)')})
                  WHEN 2 THEN ${check('apply')}
                  WHEN 3 THEN jsonb_build_object('hostId', ${host}, 'payload', ${payload('(c + 1)')})
                  WHEN 5 THEN jsonb_build_object('hostId', ${host}, 'payload', ${probe})
                  WHEN 6 THEN jsonb_build_object('hostId', ${host}, 'payload', ${probe}, 'phase', 'apply', 'on', 'depends',
                    'expected', ${buildIdSql(`'elsewhere' || c`)}, 'found', ${buildIdSql(`'hotfix' || (c + 1)`)}, 'against', ${payload('(c + 1)')} || '{"kind":"payload"}'::jsonb,
                    'outcome', 'mismatch', 'errno', 'EINVAL', 'reason', ${refusal})
                  WHEN 7 THEN jsonb_build_object('hostId', ${host}, 'action', 'apply', 'payload', ${probe}, 'code', 'EINVAL', 'errno', 'EINVAL', 'reason', ${refusal})
                  WHEN 8 THEN jsonb_build_object('hostId', ${host}, 'payload', ${probe})
                  ELSE ${health}
                END AS data) e
        ORDER BY ts`,
      [cycle],
    );
    ctx.log(`bulk: host events of cycle ${cycle + 1}/${BULK_CYCLES} stored (${((performance.now() - t0) / 1000).toFixed(0)} s)`);
  }
  await pool.query(
    `INSERT INTO events (event_id, stream_id, stream_position, type, schema_version, occurred_at, recorded_at, actor, correlation, data, hash)
     SELECT md5('bulk-rollout:' || r || ':' || h)::uuid, 'rollout-bulk-' || r, h, 'HostPatchFinished', 1, ts, ts + interval '5 milliseconds',
            jsonb_build_object('kind', 'workflow', 'id', 'rollout/bulk-' || r),
            jsonb_build_object('rolloutId', 'bulk-' || r, 'workflowId', 'host-patch/bulk-' || r || '/' || ${host}, 'runId', 'run-1'),
            jsonb_build_object('rolloutId', 'bulk-' || r, 'hostId', ${host}, 'wave', 'wave-' || (h * 4 / ${BULK_HOSTS + 1}),
              'outcome', CASE WHEN r < ${BULK_CYCLES} THEN 'patched' ELSE 'already' END,
              'applied', CASE WHEN r < ${BULK_CYCLES} THEN jsonb_build_array(${payload('(r + 1)')}) ELSE '[]'::jsonb END),
            sha256(convert_to(r || ':' || h, 'UTF8'))
       FROM generate_series(0, ${BULK_ROLLOUTS - 1}) r, generate_series(1, ${BULK_HOSTS}) h,
            LATERAL (SELECT timestamptz '2025-01-01 00:00:00Z' + r * interval '1 day' + h * interval '1 second' + interval '1.5 seconds' AS ts) x
      ORDER BY ts`,
  );
  await pool.query(
    `INSERT INTO streams (stream_id, stream_position, last_hash, last_recorded_at)
     SELECT DISTINCT ON (stream_id) stream_id, stream_position, hash, recorded_at FROM events
      WHERE stream_id LIKE 'host-bulk-%' OR stream_id LIKE 'rollout-bulk-%' ORDER BY stream_id, stream_position DESC`,
  );
  await pool.query('VACUUM ANALYZE events');
  await pool.query('VACUUM ANALYZE streams');
  const stored = Number((await pool.query('SELECT count(*) AS n FROM events')).rows[0].n);
  const loadSeconds = (performance.now() - t0) / 1000;
  ctx.log(`bulk: ${stored.toLocaleString('en-US')} events stored in ${loadSeconds.toFixed(0)} s (INSERT ... SELECT, all indexes live)`);

  const hosts = Array.from({ length: QUERY_SAMPLES }, (_, i) => `bulk-${String(1 + ((i * 7919) % BULK_HOSTS)).padStart(5, '0')}`);
  const measure = async (fn: (host: string, i: number) => Promise<unknown>) => {
    for (let i = 0; i < 20; i++) await fn(hosts[i]!, i);
    const ms: number[] = [];
    for (const [i, h] of hosts.entries()) {
      const t = performance.now();
      await fn(h, i);
      ms.push(performance.now() - t);
    }
    return ms.sort((a, b) => a - b);
  };

  let timelineEvents = 0;
  const timeline = await measure(async (h) => {
    timelineEvents = (await hostTimeline(store, h)).length;
  });
  const scale = `${stored.toLocaleString('en-US')} events stored`;
  ctx.report({ name: 'host timeline p50', value: percentile(timeline, 50), unit: 'ms', note: `${timelineEvents} events per host (its stream + its rollout outcomes), parsed; ${scale}` });
  ctx.report({ name: 'host timeline p95', value: percentile(timeline, 95), unit: 'ms', note: `${QUERY_SAMPLES} random hosts` });

  let depth = 0;
  const stack = await measure(async (h, i) => {
    // A time somewhere in the host's 9-day history.
    const at = new Date(Date.parse('2025-01-01T00:00:00Z') + ((i * 104_729) % (BULK_CYCLES * 86_400)) * 1000).toISOString();
    depth = (await hostStackAsOf(store, h, { at })).applied.length;
  });
  ctx.report({ name: 'stack as of a time p50', value: percentile(stack, 50), unit: 'ms', note: `replays the host's stream up to that time (last sample: ${depth} applied); ${scale}` });
  ctx.report({ name: 'stack as of a time p95', value: percentile(stack, 95), unit: 'ms', note: `${QUERY_SAMPLES} random hosts and times` });
}
