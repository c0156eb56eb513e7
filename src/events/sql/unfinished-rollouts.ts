/** The rollouts whose start is recorded and whose end is not (migration 0012's index). */
import type { Queryable } from './event-row.ts';

export async function selectUnfinishedRollouts(db: Queryable, limit: number): Promise<{ rolloutId: string; startedAt: Date }[]> {
  const { rows } = await db.query<{ rollout_id: string; occurred_at: Date }>(
    `SELECT s.data->>'rolloutId' AS rollout_id, s.occurred_at FROM events s
      WHERE s.type = 'RolloutStarted'
        AND NOT EXISTS (SELECT 1 FROM events f WHERE f.type = 'RolloutFinished' AND f.stream_id = s.stream_id)
      ORDER BY s.occurred_at
      LIMIT $1`,
    [limit],
  );
  return rows.map((r) => ({ rolloutId: r.rollout_id, startedAt: r.occurred_at }));
}
