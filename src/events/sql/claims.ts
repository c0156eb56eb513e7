/**
 * Claims on the rollout's work list (migration 0007), each statement with its typed caller.
 *
 * A batch claims a host by bumping its fence and taking a lease; every later write for the host is
 * conditioned on that fence (a row count of 0 means another holder has it now). A hold in
 * rollout_control (pause, abort, exceeded budget) stops every claim, on every worker.
 */
import type pg from 'pg';
import type { StackEntry } from '../../rollout/matching.ts';
import type { CallOutcome } from '../../rollout/types.ts';
import type { RowWrite } from './row-writes.ts';

type Db = pg.Pool | pg.PoolClient;

export interface ClaimedHost {
  hostId: string;
  fence: number;
  wave: number;
  assignment: 'apply' | 'replace' | 'unreachable';
  buildIds: string[];
  /** Set once the rollout changed (or was about to change) the host: a re-claim continues from it. */
  formerStack: StackEntry[] | null;
  formerLoaded: StackEntry[] | null;
  formerResult: CallOutcome | null;
  targetStack: StackEntry[] | null;
  /** What the previous holder was about to do when it lost the host (null: nothing yet). */
  intent: string | null;
  /** The boot fleetpatch last saw the host in (null: never seen), and the boot the rollout first changed it in. */
  lastBootId: string | null;
  touchedBootId: string | null;
}

const CLAIM_COLUMNS =
  't.host_id, t.fence, t.wave, t.assignment, t.build_ids, t.former_stack, t.former_loaded, t.former_result, t.target_stack, t.intent, t.touched_boot_id, (SELECT hb.boot_id FROM host_boots hb WHERE hb.host_id = t.host_id) AS last_boot_id';

interface ClaimRow {
  host_id: string;
  fence: number;
  wave: number;
  assignment: ClaimedHost['assignment'];
  build_ids: string[];
  former_stack: StackEntry[] | null;
  former_loaded: StackEntry[] | null;
  former_result: CallOutcome | null;
  target_stack: StackEntry[] | null;
  intent: string | null;
  touched_boot_id: string | null;
  last_boot_id: string | null;
}

const toClaim = (r: ClaimRow): ClaimedHost => ({
  hostId: r.host_id,
  fence: r.fence,
  wave: r.wave,
  assignment: r.assignment,
  buildIds: r.build_ids,
  formerStack: r.former_stack,
  formerLoaded: r.former_loaded,
  formerResult: r.former_result,
  targetStack: r.target_stack,
  intent: r.intent,
  lastBootId: r.last_boot_id,
  touchedBootId: r.touched_boot_id,
});

/**
 * Takes back the hosts an earlier attempt of this batch (`claimantPrefix` + any attempt) held and
 * did not finish: they are this batch's to finish first.
 */
export async function reclaimOwn(db: Db, rolloutId: string, claimantPrefix: string, claimant: string, leaseMs: number): Promise<ClaimedHost[]> {
  const r = await db.query<ClaimRow>(
    `UPDATE rollout_targets t SET fence = t.fence + 1, claimed_by = $3, lease_until = now() + $4 * interval '1 millisecond', updated_at = now()
      WHERE t.rollout_id = $1 AND t.status = 'running' AND t.claimed_by LIKE $2 || '%' AND t.claimed_by <> $3
      RETURNING ${CLAIM_COLUMNS}`,
    [rolloutId, claimantPrefix, claimant, leaseMs],
  );
  return r.rows.map(toClaim);
}

/**
 * Two index range scans, lapsed claims first, each on a partial index of the hosts a claim can
 * take (migration 0010): one query with `status = 'planned' OR (running and lapsed)` walked every
 * finished host of the step on every claim, and so did each scan alone once the planner's
 * statistics (taken when every host was planned) steered it to the position-order index.
 *
 * The UPDATE finds the picked rows by their ctid (a TID scan), not by joining the work list on
 * host id: with statistics from before the rollout's rows existed, the planner joined by walking
 * the rollout's whole work list for each claim (10,000 rows at 10,000 hosts). Nothing else in the
 * WHERE clause, or the planner prefers that walk again, filtering on ctid. A row locked by the
 * pick cannot move before the UPDATE of the same statement reaches it.
 * k: lapsed (0) or planned (1); position: the host's place in its step.
 * $1 rollout, $2 wave, $3 step, $4 claimant, $5 lease ms, $6 limit.
 */
export const CLAIM_HOSTS_SQL = `WITH lapsed AS (
     SELECT ctid AS row, host_id, 0 AS k, position FROM rollout_targets
      WHERE rollout_id = $1 AND wave = $2 AND step = $3 AND status = 'running' AND lease_until < now()
      ORDER BY position LIMIT $6 FOR UPDATE SKIP LOCKED),
   planned AS (
     SELECT ctid AS row, host_id, 1 AS k, position FROM rollout_targets
      WHERE rollout_id = $1 AND wave = $2 AND step = $3 AND status = 'planned'
      ORDER BY position LIMIT $6 FOR UPDATE SKIP LOCKED),
   pick AS (
     SELECT row, host_id, k FROM (SELECT * FROM lapsed UNION ALL SELECT * FROM planned) c
      WHERE NOT EXISTS (SELECT 1 FROM rollout_control r WHERE r.rollout_id = $1 AND r.hold IS NOT NULL)
      ORDER BY k, position LIMIT $6)
   UPDATE rollout_targets t SET status = 'running', fence = t.fence + 1, claimed_by = $4,
          lease_until = now() + $5 * interval '1 millisecond', updated_at = now()
    WHERE t.ctid = ANY(ARRAY(SELECT row FROM pick))
   RETURNING ${CLAIM_COLUMNS}, (SELECT p.k FROM pick p WHERE p.host_id = t.host_id) AS k, t.position`;

/**
 * The next hosts of a step, up to `limit`: planned ones, or ones whose holder's lease lapsed (a
 * worker that died without Temporal retrying its batch yet), lapsed first. `held` when the rollout
 * is held; `done` when the step has no host left to claim.
 */
export async function claimHosts(
  db: Db,
  q: { rolloutId: string; wave: number; step: number; claimant: string; leaseMs: number; limit: number },
): Promise<{ kind: 'claimed'; hosts: ClaimedHost[] } | { kind: 'held'; hold: string } | { kind: 'done' }> {
  const r = await db.query<ClaimRow & { k: number; position: number }>(
    CLAIM_HOSTS_SQL,
    [q.rolloutId, q.wave, q.step, q.claimant, q.leaseMs, Math.max(1, q.limit)],
  );
  if (r.rows.length > 0) {
    const rows = [...r.rows].sort((a, b) => a.k - b.k || a.position - b.position);
    return { kind: 'claimed', hosts: rows.map(toClaim) };
  }
  const hold = await selectHold(db, q.rolloutId);
  return hold ? { kind: 'held', hold: hold.hold } : { kind: 'done' };
}

/**
 * Keeps this batch's claims alive; returns how many rows it renewed.
 *
 * The batch's own group commit updates these rows too, several per transaction, in the order its
 * lanes submitted them. A plain multi-row UPDATE here locks them in whatever order it scans them,
 * and the two deadlocked (PostgreSQL aborted the commit, and the hosts in it failed: seen at
 * 10,000 hosts, where a step outlasts the first renewal). So the renewal skips a row a commit holds
 * right now: that commit is writing the host's intent or outcome, and the next renewal, a quarter
 * of a lease later, catches the row.
 */
export function renewLeases(db: Db, rolloutId: string, claimant: string, leaseMs: number): Promise<number> {
  return renewHeld(db, WORK_LISTS.rollout, rolloutId, claimant, leaseMs);
}

/** The two work lists a batch holds hosts of; the names are ours, never input. */
const WORK_LISTS = {
  rollout: { table: 'rollout_targets', id: 'rollout_id' },
  rollback: { table: 'rollback_targets', id: 'rollback_id' },
} as const;

/**
 * Gives back a host a lane claimed ahead and never started (the rollout was held meanwhile, or
 * the batch is stopping): planned again, for any batch to claim, its fence kept so that its next
 * holder reconciles it from the live host first. Conditioned on the fence like every write; false
 * when the host is no longer this claim's.
 */
export async function releaseClaim(db: Db, list: keyof typeof WORK_LISTS, id: string, hostId: string, fence: number): Promise<boolean> {
  const { table, id: idColumn } = WORK_LISTS[list];
  const r = await db.query(
    `UPDATE ${table} SET status = 'planned', claimed_by = NULL, lease_until = NULL, updated_at = now()
      WHERE ${idColumn} = $1 AND host_id = $2 AND fence = $3 AND status = 'running'`,
    [id, hostId, fence],
  );
  return (r.rowCount ?? 0) > 0;
}

async function renewHeld(db: Db, list: (typeof WORK_LISTS)[keyof typeof WORK_LISTS], id: string, claimant: string, leaseMs: number): Promise<number> {
  // By ctid, as the claims (CLAIM_HOSTS_SQL): no join the planner could turn into a walk of the
  // whole work list per renewal.
  const r = await db.query(
    `UPDATE ${list.table} t SET lease_until = now() + $3 * interval '1 millisecond'
      WHERE t.ctid = ANY(ARRAY(SELECT ctid FROM ${list.table}
                                WHERE ${list.id} = $1 AND claimed_by = $2 AND status = 'running'
                                ORDER BY host_id FOR UPDATE SKIP LOCKED))`,
    [id, claimant, leaseMs],
  );
  return r.rowCount ?? 0;
}

/** Hosts of a step nobody finished yet (planned, or claimed and running). */
export async function countUnfinished(db: Db, rolloutId: string, wave: number, step: number): Promise<number> {
  const r = await db.query<{ n: string }>(`SELECT count(*) AS n FROM rollout_targets WHERE rollout_id = $1 AND wave = $2 AND step = $3 AND status IN ('planned', 'running')`, [
    rolloutId,
    wave,
    step,
  ]);
  return Number(r.rows[0]?.n ?? 0);
}

// ---- fenced writes, committed with the host's events (group commit) -----------------------------

/** The host's former state and target, kept at its first change (first write wins), with the intent. */
export function touchWrite(
  rolloutId: string,
  hostId: string,
  fence: number,
  t: { formerStack: StackEntry[]; formerLoaded: StackEntry[]; formerResult: CallOutcome | null; targetStack: StackEntry[]; intent: string; bootId: string | null },
): RowWrite {
  return {
    text: `UPDATE rollout_targets SET former_stack = COALESCE(former_stack, $4), former_loaded = COALESCE(former_loaded, $5), former_result = COALESCE(former_result, $6),
             target_stack = COALESCE(target_stack, $7), touched_at = COALESCE(touched_at, now()), touched_boot_id = COALESCE(touched_boot_id, $9), intent = $8, updated_at = now()
            WHERE rollout_id = $1 AND host_id = $2 AND fence = $3`,
    values: [rolloutId, hostId, fence, JSON.stringify(t.formerStack), JSON.stringify(t.formerLoaded), t.formerResult ? JSON.stringify(t.formerResult) : null, JSON.stringify(t.targetStack), t.intent, t.bootId],
  };
}

/** After a reboot lost what the rollout did: the former state and target start again from now. */
export function retouchWrite(
  rolloutId: string,
  hostId: string,
  fence: number,
  t: { formerStack: StackEntry[]; formerLoaded: StackEntry[]; formerResult: CallOutcome | null; targetStack: StackEntry[]; intent: string; bootId: string | null },
): RowWrite {
  return {
    text: `UPDATE rollout_targets SET former_stack = $4, former_loaded = $5, former_result = $6, target_stack = $7, touched_at = COALESCE(touched_at, now()), touched_boot_id = $9, intent = $8, updated_at = now()
            WHERE rollout_id = $1 AND host_id = $2 AND fence = $3`,
    values: [rolloutId, hostId, fence, JSON.stringify(t.formerStack), JSON.stringify(t.formerLoaded), t.formerResult ? JSON.stringify(t.formerResult) : null, JSON.stringify(t.targetStack), t.intent, t.bootId],
  };
}

export function intentWrite(rolloutId: string, hostId: string, fence: number, intent: string): RowWrite {
  return { text: 'UPDATE rollout_targets SET intent = $4 WHERE rollout_id = $1 AND host_id = $2 AND fence = $3', values: [rolloutId, hostId, fence, intent] };
}

export function finishWrite(
  rolloutId: string,
  hostId: string,
  fence: number,
  o: { status: 'patched' | 'already' | 'failed'; applied: StackEntry[]; failure?: unknown; restore?: unknown },
): RowWrite {
  return {
    text: `UPDATE rollout_targets SET status = $4, applied = $5, failure = $6, restore = COALESCE($7, restore), intent = NULL, claimed_by = NULL, lease_until = NULL, updated_at = now()
            WHERE rollout_id = $1 AND host_id = $2 AND fence = $3`,
    values: [rolloutId, hostId, fence, o.status, JSON.stringify(o.applied), o.failure ? JSON.stringify(o.failure) : null, o.restore ? JSON.stringify(o.restore) : null],
  };
}

// ---- holds -------------------------------------------------------------------------------------

export async function selectHold(db: Db, rolloutId: string): Promise<{ hold: string; reason: string | null } | null> {
  const r = await db.query<{ hold: string; reason: string | null }>('SELECT hold, reason FROM rollout_control WHERE rollout_id = $1 AND hold IS NOT NULL', [rolloutId]);
  return r.rows[0] ?? null;
}

/**
 * Sets a hold. A budget hold never replaces a person's (pause, abort); an abort replaces anything.
 */
export async function setHold(db: Db, rolloutId: string, hold: 'paused' | 'aborted' | 'budget', reason: string): Promise<void> {
  await db.query(
    `INSERT INTO rollout_control (rollout_id, hold, reason) VALUES ($1, $2, $3)
     ON CONFLICT (rollout_id) DO UPDATE SET hold = EXCLUDED.hold, reason = EXCLUDED.reason, updated_at = now()
      WHERE rollout_control.hold IS NULL OR EXCLUDED.hold = 'aborted' OR (EXCLUDED.hold = 'paused' AND rollout_control.hold = 'budget')`,
    [rolloutId, hold, reason],
  );
}

export async function clearHold(db: Db, rolloutId: string): Promise<void> {
  await db.query('UPDATE rollout_control SET hold = NULL, reason = NULL, updated_at = now() WHERE rollout_id = $1', [rolloutId]);
}

// ---- progress ----------------------------------------------------------------------------------

export interface WaveCounts {
  wave: number;
  done: number;
  patched: number;
  already: number;
  failed: number;
  unreachable: number;
}

/** Per wave: hosts finished, by outcome (the work list is the truth; the workflow shows it). */
export async function selectWaveCounts(db: Db, rolloutId: string): Promise<WaveCounts[]> {
  const r = await db.query<{ wave: number; patched: string; already: string; failed: string; unreachable: string }>(
    `SELECT wave,
            count(*) FILTER (WHERE status = 'patched') AS patched,
            count(*) FILTER (WHERE status = 'already') AS already,
            count(*) FILTER (WHERE status = 'failed') AS failed,
            count(*) FILTER (WHERE status = 'failed' AND (failure->>'unreachable')::boolean) AS unreachable
       FROM rollout_targets WHERE rollout_id = $1 GROUP BY wave ORDER BY wave`,
    [rolloutId],
  );
  return r.rows.map((row) => {
    const patched = Number(row.patched);
    const already = Number(row.already);
    const failed = Number(row.failed);
    return { wave: row.wave, done: patched + already + failed, patched, already, failed, unreachable: Number(row.unreachable) };
  });
}

export interface FailureRow {
  hostId: string;
  wave: number;
  failure: { stage: string; code: string; reason: string; unreachable: boolean };
  restore: { outcome: string; stackNow: StackEntry[]; formerStack: StackEntry[]; reason?: string } | null;
}

export async function selectFailures(db: Db, rolloutId: string, limit: number): Promise<FailureRow[]> {
  const r = await db.query<{ host_id: string; wave: number; failure: FailureRow['failure']; restore: FailureRow['restore'] }>(
    "SELECT host_id, wave, failure, restore FROM rollout_targets WHERE rollout_id = $1 AND status = 'failed' ORDER BY updated_at, host_id LIMIT $2",
    [rolloutId, limit],
  );
  return r.rows.map((row) => ({ hostId: row.host_id, wave: row.wave, failure: row.failure, restore: row.restore }));
}

// ---- rollbacks -----------------------------------------------------------------------------------

/** The rollback's work list: every host the rollout touched. Idempotent; returns its size. */
export async function prepareRollback(db: Db, rollbackId: string, rolloutId: string): Promise<number> {
  await db.query(
    `INSERT INTO rollback_targets (rollback_id, rollout_id, host_id)
     SELECT $1, rollout_id, host_id FROM rollout_targets WHERE rollout_id = $2 AND touched_at IS NOT NULL
     ON CONFLICT DO NOTHING`,
    [rollbackId, rolloutId],
  );
  const r = await db.query<{ n: string }>('SELECT count(*) AS n FROM rollback_targets WHERE rollback_id = $1', [rollbackId]);
  return Number(r.rows[0]?.n ?? 0);
}

export interface ClaimedRollbackHost {
  hostId: string;
  fence: number;
  formerStack: StackEntry[];
  formerLoaded: StackEntry[];
  formerResult: CallOutcome | null;
  touchedBootId: string | null;
  lastBootId: string | null;
}

interface RollbackClaimRow {
  host_id: string;
  fence: number;
  former_stack: StackEntry[] | null;
  former_loaded: StackEntry[] | null;
  former_result: CallOutcome | null;
  touched_boot_id: string | null;
  last_boot_id: string | null;
}

const toRollbackClaim = (r: RollbackClaimRow): ClaimedRollbackHost => ({
  hostId: r.host_id,
  fence: r.fence,
  formerStack: r.former_stack ?? [],
  formerLoaded: r.former_loaded ?? [],
  formerResult: r.former_result,
  touchedBootId: r.touched_boot_id,
  lastBootId: r.last_boot_id,
});

/**
 * Running hosts to take back first, then planned ones: two index range scans on partial indexes
 * (migration 0010) rather than a sort of every candidate, or a walk past every finished host, on
 * every claim. As in CLAIM_HOSTS_SQL, the UPDATE finds the picked rows by ctid, and each claimed
 * host's former state is looked up by its key (OFFSET 0 keeps that lookup from being flattened
 * into a join the planner could turn around).
 * $1 rollback, $2 rollout, $3 claimant prefix, $4 claimant, $5 lease ms, $6 limit.
 */
export const CLAIM_ROLLBACK_HOSTS_SQL = `WITH retake AS (
     SELECT ctid AS row, host_id, 0 AS k FROM rollback_targets
      WHERE rollback_id = $1 AND status = 'running' AND (lease_until < now() OR (claimed_by LIKE $3 || '%' AND claimed_by <> $4))
      ORDER BY host_id LIMIT $6 FOR UPDATE SKIP LOCKED),
   planned AS (
     SELECT ctid AS row, host_id, 1 AS k FROM rollback_targets
      WHERE rollback_id = $1 AND status = 'planned'
      ORDER BY host_id LIMIT $6 FOR UPDATE SKIP LOCKED),
   pick AS (SELECT row, host_id, k FROM (SELECT * FROM retake UNION ALL SELECT * FROM planned) c ORDER BY k, host_id LIMIT $6),
   claimed AS (
     UPDATE rollback_targets b SET status = 'running', fence = b.fence + 1, claimed_by = $4, lease_until = now() + $5 * interval '1 millisecond', updated_at = now()
      WHERE b.ctid = ANY(ARRAY(SELECT row FROM pick))
     RETURNING b.host_id, b.fence, (SELECT p.k FROM pick p WHERE p.host_id = b.host_id) AS k)
   SELECT c.host_id, c.fence, c.k, t.former_stack, t.former_loaded, t.former_result, t.touched_boot_id,
          (SELECT hb.boot_id FROM host_boots hb WHERE hb.host_id = c.host_id) AS last_boot_id
     FROM claimed c
    CROSS JOIN LATERAL (SELECT former_stack, former_loaded, former_result, touched_boot_id FROM rollout_targets
                         WHERE rollout_id = $2 AND host_id = c.host_id OFFSET 0) t
    ORDER BY c.k, c.host_id`;

/**
 * Up to `limit` hosts of a rollback: first the ones an earlier attempt of this batch held and did
 * not finish (or whose holder's lease lapsed), then planned ones. Empty when none is left.
 */
export async function claimRollbackHosts(
  db: Db,
  q: { rollbackId: string; rolloutId: string; claimantPrefix: string; claimant: string; leaseMs: number; limit: number },
): Promise<ClaimedRollbackHost[]> {
  const r = await db.query<RollbackClaimRow & { k: number }>(
    CLAIM_ROLLBACK_HOSTS_SQL,
    [q.rollbackId, q.rolloutId, q.claimantPrefix, q.claimant, q.leaseMs, Math.max(1, q.limit)],
  );
  return r.rows.map(toRollbackClaim);
}

/** As renewLeases, for a rollback's work list (and for the same reason, it skips rows a commit holds). */
export function renewRollbackLeases(db: Db, rollbackId: string, claimant: string, leaseMs: number): Promise<number> {
  return renewHeld(db, WORK_LISTS.rollback, rollbackId, claimant, leaseMs);
}

/** The host's rollback outcome, fenced; and its last restore on the rollout's work list. */
export function finishRollbackWrites(rollbackId: string, rolloutId: string, hostId: string, fence: number, result: { outcome: string; stackNow: StackEntry[]; formerStack: StackEntry[]; reason?: string }): RowWrite[] {
  return [
    {
      text: `UPDATE rollback_targets SET status = 'done', result = $4, claimed_by = NULL, lease_until = NULL, updated_at = now() WHERE rollback_id = $1 AND host_id = $2 AND fence = $3`,
      values: [rollbackId, hostId, fence, JSON.stringify(result)],
    },
    { text: 'UPDATE rollout_targets SET restore = $3, updated_at = now() WHERE rollout_id = $1 AND host_id = $2', values: [rolloutId, hostId, JSON.stringify(result)] },
  ];
}

export interface RollbackTally {
  hosts: number;
  unfinished: number;
  byOutcome: Record<string, number>;
  problems: { hostId: string; outcome: string; reason: string; stackNow: StackEntry[]; formerStack: StackEntry[] }[];
}

/** Counts by outcome, and the hosts that are not back (up to `limit`), from the rollback's work list. */
export async function selectRollbackTally(db: Db, rollbackId: string, limit: number): Promise<RollbackTally> {
  const counts = await db.query<{ outcome: string | null; status: string; n: string }>(
    `SELECT status, result->>'outcome' AS outcome, count(*) AS n FROM rollback_targets WHERE rollback_id = $1 GROUP BY status, result->>'outcome'`,
    [rollbackId],
  );
  const byOutcome: Record<string, number> = {};
  let hosts = 0;
  let unfinished = 0;
  for (const row of counts.rows) {
    const n = Number(row.n);
    hosts += n;
    if (row.status !== 'done') unfinished += n;
    else byOutcome[row.outcome ?? 'failed'] = (byOutcome[row.outcome ?? 'failed'] ?? 0) + n;
  }
  const problems = await db.query<{ host_id: string; result: { outcome: string; reason?: string; stackNow: StackEntry[]; formerStack: StackEntry[] } }>(
    `SELECT host_id, result FROM rollback_targets WHERE rollback_id = $1 AND status = 'done' AND result->>'outcome' NOT IN ('rolled-back', 'nothing-to-do') ORDER BY host_id LIMIT $2`,
    [rollbackId, limit],
  );
  return {
    hosts,
    unfinished,
    byOutcome,
    problems: problems.rows.map((r) => ({ hostId: r.host_id, outcome: r.result.outcome, reason: r.result.reason ?? '', stackNow: r.result.stackNow ?? [], formerStack: r.result.formerStack ?? [] })),
  };
}

// ---- repairs -------------------------------------------------------------------------------------

/**
 * The hosts a rollout patched (they may have lost the payload since), and, given the first
 * repair's wave, the hosts a repair failed on (the next repair tries them again), in host-id order.
 */
export async function selectPatchedHostIds(db: Db, rolloutId: string, repairsFrom?: number): Promise<string[]> {
  const r = await db.query<{ host_id: string }>(
    `SELECT host_id FROM rollout_targets WHERE rollout_id = $1 AND (status = 'patched' OR (status = 'failed' AND wave >= $2)) ORDER BY host_id`,
    [rolloutId, repairsFrom ?? null],
  );
  return r.rows.map((row) => row.host_id);
}

/**
 * Puts hosts back on the work list, in the repair's own wave (after the plan's waves), to be
 * patched again. Idempotent: hosts already moved there keep their place.
 */
export async function planRepair(db: Db, rolloutId: string, wave: number, hostIds: readonly string[]): Promise<number> {
  if (hostIds.length > 0) {
    await db.query(
      `UPDATE rollout_targets t SET status = 'planned', wave = $2, step = 0, position = s.position - 1, failure = NULL, intent = NULL, claimed_by = NULL, lease_until = NULL, updated_at = now()
         FROM unnest($3::text[]) WITH ORDINALITY AS s(host_id, position)
        WHERE t.rollout_id = $1 AND t.host_id = s.host_id AND t.wave <> $2`,
      [rolloutId, wave, hostIds],
    );
  }
  const r = await db.query<{ n: string }>('SELECT count(*) AS n FROM rollout_targets WHERE rollout_id = $1 AND wave = $2', [rolloutId, wave]);
  return Number(r.rows[0]?.n ?? 0);
}
