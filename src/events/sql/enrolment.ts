/** The enrolment facts of every host, in the global order. */
import { EVENT_COLUMNS, type EventRow, type Queryable } from './event-row.ts';

/** Served by the partial index events_enrolment (migration 0013). */
export async function selectEnrolmentEvents(db: Queryable): Promise<EventRow[]> {
  const { rows } = await db.query<EventRow>({
    name: 'fleetpatch-select-enrolment',
    text: `SELECT ${EVENT_COLUMNS} FROM events
      WHERE type IN ('JoinTokenIssued', 'HostEnrolled', 'HostCertificateRenewed', 'HostLabelsChanged', 'HostRetired')
      ORDER BY transaction_id, global_position`,
  });
  return rows;
}
