/** Statements of the projections: checkpoints, host stacks with payload placements, rollout summaries. */
import type { HostStackState } from '../projections/host-stack.ts';
import type { PayloadPlacement } from '../projections/payload-placement.ts';
import type { RolloutSummary } from '../projections/rollout-summary.ts';
import type { GlobalCursor } from './read-events.ts';
import type { Queryable } from './event-row.ts';

/** Advisory-lock class of projectors (two-key form), so two projectors never write the same batch. */
const PROJECTOR_LOCK_CLASS = 0x6670706a; // "fppj"

export async function lockProjector(db: Queryable, name: string): Promise<void> {
  await db.query('SELECT pg_advisory_xact_lock($1::int4, hashtext($2))', [PROJECTOR_LOCK_CLASS, name]);
}

export async function selectCheckpoint(db: Queryable, name: string): Promise<GlobalCursor | null> {
  const { rows } = await db.query<{ transaction_id: string; global_position: string }>(
    'SELECT transaction_id::text, global_position FROM projection_checkpoints WHERE name = $1',
    [name],
  );
  return rows[0] ? { transactionId: rows[0].transaction_id, globalPosition: Number(rows[0].global_position) } : null;
}

export async function saveCheckpoint(db: Queryable, name: string, cursor: GlobalCursor): Promise<void> {
  await db.query(
    `INSERT INTO projection_checkpoints (name, transaction_id, global_position, updated_at) VALUES ($1, $2::xid8, $3, now())
     ON CONFLICT (name) DO UPDATE SET transaction_id = EXCLUDED.transaction_id, global_position = EXCLUDED.global_position, updated_at = now()`,
    [name, cursor.transactionId, cursor.globalPosition],
  );
}

interface HostStackRow {
  host_id: string;
  hypervisor_build_id: string | null;
  loaded: HostStackState['loaded'];
  applied: HostStackState['applied'];
  anomalies: HostStackState['anomalies'];
  stream_position: string;
  updated_at: Date;
}

function toHostStack(r: HostStackRow): HostStackState {
  return {
    hostId: r.host_id,
    hypervisorBuildId: r.hypervisor_build_id,
    loaded: r.loaded,
    applied: r.applied,
    anomalies: r.anomalies,
    streamPosition: Number(r.stream_position),
    updatedAt: r.updated_at.toISOString(),
  };
}

export async function selectHostStacks(db: Queryable, hostIds: string[] | null): Promise<HostStackState[]> {
  const { rows } = await db.query<HostStackRow>(
    `SELECT host_id, hypervisor_build_id, loaded, applied, anomalies, stream_position, updated_at FROM host_stacks
      WHERE $1::text[] IS NULL OR host_id = ANY($1::text[]) ORDER BY host_id`,
    [hostIds],
  );
  return rows.map(toHostStack);
}

/** Writes the hosts' states and replaces their payload placements. */
export async function saveHostStacks(db: Queryable, states: HostStackState[], placements: PayloadPlacement[]): Promise<void> {
  if (states.length === 0) return;
  await db.query(
    `INSERT INTO host_stacks (host_id, hypervisor_build_id, loaded, applied, anomalies, stream_position, updated_at)
     SELECT * FROM unnest($1::text[], $2::text[], $3::jsonb[], $4::jsonb[], $5::jsonb[], $6::bigint[], $7::timestamptz[])
     ON CONFLICT (host_id) DO UPDATE SET hypervisor_build_id = EXCLUDED.hypervisor_build_id, loaded = EXCLUDED.loaded,
       applied = EXCLUDED.applied, anomalies = EXCLUDED.anomalies, stream_position = EXCLUDED.stream_position, updated_at = EXCLUDED.updated_at`,
    [
      states.map((s) => s.hostId),
      states.map((s) => s.hypervisorBuildId),
      states.map((s) => JSON.stringify(s.loaded)),
      states.map((s) => JSON.stringify(s.applied)),
      states.map((s) => JSON.stringify(s.anomalies)),
      states.map((s) => s.streamPosition),
      states.map((s) => s.updatedAt),
    ],
  );
  // Two statements: the sub-statements of one WITH share a snapshot, so an INSERT there would
  // still collide with the rows its DELETE removes.
  await db.query('DELETE FROM payload_placements WHERE host_id = ANY($1::text[])', [states.map((s) => s.hostId)]);
  await db.query(
    `INSERT INTO payload_placements (build_id, host_id, name, state, stack_index, stack_height)
     SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int[], $6::int[])`,
    [
      placements.map((p) => p.buildId),
      placements.map((p) => p.hostId),
      placements.map((p) => p.name),
      placements.map((p) => p.state),
      placements.map((p) => p.stackIndex),
      placements.map((p) => p.stackHeight),
    ],
  );
}

export async function selectPlacements(db: Queryable, buildId: string): Promise<PayloadPlacement[]> {
  const { rows } = await db.query<{ build_id: string; host_id: string; name: string; state: 'CHECKED' | 'APPLIED'; stack_index: number | null; stack_height: number }>(
    'SELECT build_id, host_id, name, state, stack_index, stack_height FROM payload_placements WHERE build_id = $1 ORDER BY host_id',
    [buildId],
  );
  return rows.map((r) => ({ buildId: r.build_id, hostId: r.host_id, name: r.name, state: r.state, stackIndex: r.stack_index, stackHeight: r.stack_height }));
}

export async function selectRolloutSummaries(db: Queryable, rolloutIds: string[] | null): Promise<RolloutSummary[]> {
  const { rows } = await db.query<{ summary: RolloutSummary }>(
    `SELECT summary FROM rollout_summaries WHERE $1::text[] IS NULL OR rollout_id = ANY($1::text[])
      ORDER BY started_at DESC NULLS LAST, rollout_id`,
    [rolloutIds],
  );
  return rows.map((r) => r.summary);
}

export async function saveRolloutSummaries(db: Queryable, summaries: RolloutSummary[]): Promise<void> {
  if (summaries.length === 0) return;
  await db.query(
    `INSERT INTO rollout_summaries (rollout_id, plan_name, status, started_at, finished_at, summary, stream_position)
     SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::timestamptz[], $6::jsonb[], $7::bigint[])
     ON CONFLICT (rollout_id) DO UPDATE SET plan_name = EXCLUDED.plan_name, status = EXCLUDED.status, started_at = EXCLUDED.started_at,
       finished_at = EXCLUDED.finished_at, summary = EXCLUDED.summary, stream_position = EXCLUDED.stream_position`,
    [
      summaries.map((s) => s.rolloutId),
      summaries.map((s) => s.planName),
      summaries.map((s) => s.status),
      summaries.map((s) => s.startedAt),
      summaries.map((s) => s.finishedAt),
      summaries.map((s) => JSON.stringify(s)),
      summaries.map((s) => s.streamPosition),
    ],
  );
}

/** Empties every projection table of a projector (a rebuild starts from zero). */
export async function clearProjection(db: Queryable, tables: readonly string[], checkpoint: string): Promise<void> {
  for (const table of tables) await db.query(`DELETE FROM ${table}`);
  await db.query('DELETE FROM projection_checkpoints WHERE name = $1', [checkpoint]);
}
