/**
 * Statements sent as one simple-protocol query, values inlined as literals: how a group commit
 * writes its work-list rows (an intent, a touch, an outcome per host) in the same round trip as
 * its events and its COMMIT (src/events/store.ts, appendWithRows).
 *
 * Running each write as its own parameterised query cost a round trip each: with 25 writes in a
 * flush on a busy two-core machine, half of the flush's time, while every host waiting for it
 * waited too. Statements are separated by `;`; PostgreSQL answers with one result (and row count)
 * per statement, in order, inside the transaction.
 *
 * Only our own statements come here (src/events/sql/claims.ts, append-events.ts), and values are
 * restricted to what those pass: strings (JSON already serialised), finite numbers, booleans and
 * null.
 */
import type pg from 'pg';

export interface RowWrite {
  text: string;
  values: unknown[];
}

/**
 * A string as an SQL literal, exactly as node-postgres's `escapeLiteral` writes it (quotes doubled;
 * with a backslash, backslashes doubled and the E'' form, right under either setting of
 * standard_conforming_strings), but by two regular-expression passes instead of a loop that adds
 * one character at a time: a flush's events travel as one JSON document of tens of kilobytes.
 */
export function quoteLiteral(s: string): string {
  const quoted = s.replace(/'/g, "''");
  return s.includes('\\') ? ` E'${quoted.replace(/\\/g, '\\\\')}'` : `'${quoted}'`;
}

/** A value as an SQL literal; anything else than our statements pass is a bug, and says so. */
function literal(v: unknown): string {
  if (v === null || v === undefined) return 'NULL';
  if (typeof v === 'string') return quoteLiteral(v);
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

/**
 * Sends statements (values already inlined) as one simple-protocol query: one round trip, one
 * result per statement, in order. PostgreSQL stops at the first statement that fails and the
 * query rejects with its error; inside a transaction block, the transaction is then aborted.
 */
export async function runStatements(client: Queryable, statements: readonly string[]): Promise<pg.QueryResult[]> {
  if (statements.length === 0) return [];
  const results = (await client.query(statements.join(';\n'))) as unknown as pg.QueryResult | pg.QueryResult[];
  const list = Array.isArray(results) ? results : [results];
  if (list.length !== statements.length) throw new Error(`${statements.length} statements came back as ${list.length} results`);
  return list;
}
