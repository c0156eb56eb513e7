/**
 * The webhook outbox (migration 0008): a notification written in the same transaction as the
 * rollout event it announces, delivered in id order per rollout, every attempt recorded.
 */
import type pg from 'pg';
import type { Queryable } from './event-row.ts';

export interface OutboxRow {
  id: string;
  rollout_id: string;
  event_id: string;
  url: string;
  event_type: string;
  body: Record<string, unknown>;
  created_at: Date;
  delivered_at: Date | null;
  attempts: number;
  last_error: string | null;
}

/** Queues a notification; a retried append queues it once (same event id and url). */
export async function insertOutbox(client: pg.PoolClient, row: { rolloutId: string; eventId: string; url: string; eventType: string; body: unknown }): Promise<void> {
  await client.query(
    `INSERT INTO webhook_outbox (rollout_id, event_id, url, event_type, body) VALUES ($1, $2, $3, $4, $5)
     ON CONFLICT (event_id, url) DO NOTHING`,
    [row.rolloutId, row.eventId, row.url, row.eventType, JSON.stringify(row.body)],
  );
}

/** The oldest notification of the rollout not yet delivered: the only one that may be sent next. */
export async function selectNextUndelivered(db: Queryable, rolloutId: string): Promise<OutboxRow | null> {
  const { rows } = await db.query<OutboxRow>('SELECT * FROM webhook_outbox WHERE rollout_id = $1 AND delivered_at IS NULL ORDER BY id LIMIT 1', [rolloutId]);
  return rows[0] ?? null;
}

/** Records one delivery attempt and its outcome on the notification, atomically. */
export async function recordAttempt(pool: pg.Pool, a: { outboxId: string; attempt: number; httpStatus: number | null; error: string | null; durationMs: number; delivered: boolean }): Promise<void> {
  const client = await pool.connect();
  try {
    await client.query('BEGIN');
    await client.query('INSERT INTO webhook_attempts (outbox_id, attempt, http_status, error, duration_ms) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING', [a.outboxId, a.attempt, a.httpStatus, a.error, a.durationMs]);
    await client.query('UPDATE webhook_outbox SET attempts = GREATEST(attempts, $2), last_error = $3, delivered_at = CASE WHEN $4 THEN now() ELSE delivered_at END WHERE id = $1', [a.outboxId, a.attempt, a.error, a.delivered]);
    await client.query('COMMIT');
  } catch (e) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw e;
  } finally {
    client.release();
  }
}

export interface DeliveryRecord {
  id: number;
  eventType: string;
  url: string;
  deliveredAt: string | null;
  attempts: { attempt: number; at: string; httpStatus: number | null; error: string | null; durationMs: number }[];
}

/** Every notification of a rollout with its attempts, in order (for the audit and tests). */
export async function selectDeliveries(db: Queryable, rolloutId: string): Promise<DeliveryRecord[]> {
  const { rows } = await db.query<OutboxRow & { attempt_list: { attempt: number; at: string; http_status: number | null; error: string | null; duration_ms: number }[] | null }>(
    `SELECT o.*, (SELECT json_agg(json_build_object('attempt', a.attempt, 'at', a.at, 'http_status', a.http_status, 'error', a.error, 'duration_ms', a.duration_ms) ORDER BY a.attempt)
       FROM webhook_attempts a WHERE a.outbox_id = o.id) AS attempt_list
     FROM webhook_outbox o WHERE o.rollout_id = $1 ORDER BY o.id`,
    [rolloutId],
  );
  return rows.map((r) => ({
    id: Number(r.id),
    eventType: r.event_type,
    url: r.url,
    deliveredAt: r.delivered_at?.toISOString() ?? null,
    attempts: (r.attempt_list ?? []).map((a) => ({ attempt: a.attempt, at: new Date(a.at).toISOString(), httpStatus: a.http_status, error: a.error, durationMs: a.duration_ms })),
  }));
}
