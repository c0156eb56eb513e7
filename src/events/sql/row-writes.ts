/**
 * The work-list rows a group commit writes with its events, in one round trip.
 *
 * A flush carries a row write for most hosts in it (an intent, a touch, an outcome), and running
 * them one parameterised query at a time cost a round trip to PostgreSQL each: with 25 writes in a
 * flush on a busy two-core machine, half of the flush's time, while every host waiting for it
 * waited too. Several writes go instead as one simple-protocol query, statements separated by `;`,
 * with each value inlined as a literal by node-postgres's own escaping; PostgreSQL answers with one
 * result (and row count) per statement, in order, inside the flush's transaction.
 *
 * Only our own statements come here (src/events/sql/claims.ts), and values are restricted to what
 * those pass: strings (JSON already serialised), finite numbers, booleans and null.
 */
import pg from 'pg';

export interface RowWrite {
  text: string;
  values: unknown[];
}

/** A value as an SQL literal; anything else than our statements pass is a bug, and says so. */
function literal(v: unknown): string {
  if (v === null || v === undefined) return 'NULL';
  if (typeof v === 'string') return pg.escapeLiteral(v);
  if (typeof v === 'number' && Number.isFinite(v)) return String(v);
  if (typeof v === 'boolean') return v ? 'TRUE' : 'FALSE';
  throw new TypeError(`a row write's value must be a string, a finite number, a boolean or null, not ${typeof v === 'number' ? String(v) : typeof v}`);
}

/** One statement with its `$n` placeholders replaced by the values, as literals. */
export function inlineWrite(w: RowWrite): string {
  return w.text.replace(/\$(\d+)/g, (_, n: string) => {
    const i = Number(n) - 1;
    if (i < 0 || i >= w.values.length) throw new RangeError(`a row write refers to $${n} but has ${w.values.length} value(s)`);
    return literal(w.values[i]);
  });
}

type Queryable = Pick<pg.PoolClient, 'query'>;

/** Runs the writes in order on `client` (inside its transaction); returns each one's row count. */
export async function runRowWrites(client: Queryable, writes: readonly RowWrite[]): Promise<number[]> {
  if (writes.length === 0) return [];
  if (writes.length === 1) return [(await client.query(writes[0]!.text, writes[0]!.values)).rowCount ?? 0];
  const results = (await client.query(writes.map(inlineWrite).join(';\n'))) as unknown as pg.QueryResult | pg.QueryResult[];
  const list = Array.isArray(results) ? results : [results];
  if (list.length !== writes.length) throw new Error(`${writes.length} row writes came back as ${list.length} results`);
  return list.map((r) => r.rowCount ?? 0);
}
