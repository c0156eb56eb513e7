import { describe, expect, it } from 'vitest';
import { isTransactionConflict, waitForDatabase } from '../../src/events/group-commit.ts';

const pgError = (code: string, message = 'boom') => Object.assign(new Error(message), { code });

/** A query that fails with the same error every time, counting its calls. */
function alwaysFailing(code: string, message: string) {
  const query = { calls: 0, run: async (): Promise<never> => {
    query.calls++;
    throw pgError(code, message);
  } };
  return query;
}

describe('waitForDatabase: what a work-list query waits out, and what it reports', () => {
  it('runs a query PostgreSQL aborted as a deadlock victim again, without calling it an outage', async () => {
    let calls = 0;
    const outages: Date[] = [];
    const result = await waitForDatabase(async () => {
      calls++;
      if (calls < 3) throw pgError(calls === 1 ? '40P01' : '40001', calls === 1 ? 'deadlock detected' : 'could not serialize access');
      return 'claimed';
    }, (since) => outages.push(since));
    expect(result).toBe('claimed');
    expect(calls).toBe(3);
    expect(outages).toEqual([]);
  });

  it('gives up on a conflict that keeps coming back, with PostgreSQL\'s own error', async () => {
    const query = alwaysFailing('40P01', 'deadlock detected');
    await expect(waitForDatabase(query.run)).rejects.toThrow('deadlock detected');
    expect(query.calls).toBe(9);
  });

  it('waits out a refused connection and says so once', async () => {
    let calls = 0;
    const outages: Date[] = [];
    const result = await waitForDatabase(async () => {
      if (++calls < 3) throw pgError('ECONNREFUSED', 'connect ECONNREFUSED 127.0.0.1:5432');
      return 42;
    }, (since) => outages.push(since));
    expect(result).toBe(42);
    expect(outages).toHaveLength(1);
  });

  it('hands any other error straight back: a bad statement is a bug, not a wait', async () => {
    const query = alwaysFailing('42P01', 'relation "rollout_targetz" does not exist');
    await expect(waitForDatabase(query.run)).rejects.toThrow('rollout_targetz');
    expect(query.calls).toBe(1);
    expect(isTransactionConflict(pgError('23505'))).toBe(false);
  });
});
