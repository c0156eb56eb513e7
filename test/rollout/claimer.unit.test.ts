/**
 * Lanes asking for hosts at once share a claim: fewer locking queries on the work list, and still
 * exactly one host per lane that asked, none claimed for a lane that did not.
 */
import { describe, expect, it } from 'vitest';
import { Claimer, type ClaimAnswer } from '../../activities/claimer.ts';

type Why = { kind: 'done' } | { kind: 'held'; hold: string };

/** A work list of `n` hosts behind a query that takes a while, recording how many each query asked for. */
function workList(n: number, opts: { hold?: string } = {}) {
  const hosts = Array.from({ length: n }, (_, i) => `host-${i}`);
  const asked: number[] = [];
  const claim = async (limit: number): Promise<ClaimAnswer<string, Why>> => {
    asked.push(limit);
    await new Promise((r) => setTimeout(r, 5));
    if (opts.hold) return { kind: 'held', hold: opts.hold };
    const taken = hosts.splice(0, limit);
    return taken.length > 0 ? { kind: 'claimed', hosts: taken } : { kind: 'done' };
  };
  return { claim, asked, left: () => hosts.length };
}

describe('claiming hosts for many lanes', () => {
  it('gives each lane its own host and asks once for the lanes that queued behind a running query', async () => {
    const list = workList(100);
    const claimer = new Claimer(list.claim, { kind: 'done' } as Why);
    const got = await Promise.all(Array.from({ length: 10 }, () => claimer.next()));
    const hosts = got.map((g) => (g.kind === 'claimed' ? g.host : g.kind));
    expect(new Set(hosts).size).toBe(10);
    expect(hosts.every((h) => h.startsWith('host-'))).toBe(true);
    // The first lane's query runs alone; the nine that asked meanwhile share the next one.
    expect(list.asked).toEqual([1, 9]);
    expect(list.left()).toBe(90);
  });

  it('tells the lanes left over that the step is done, and claims nothing more than asked', async () => {
    const list = workList(3);
    const claimer = new Claimer(list.claim, { kind: 'done' } as Why);
    const got = await Promise.all(Array.from({ length: 6 }, () => claimer.next()));
    expect(got.filter((g) => g.kind === 'claimed')).toHaveLength(3);
    expect(got.filter((g) => g.kind === 'done')).toHaveLength(3);
    expect(list.left()).toBe(0);
  });

  it('passes a hold to every waiting lane', async () => {
    const claimer = new Claimer(workList(10, { hold: 'paused' }).claim, { kind: 'done' } as Why);
    const got = await Promise.all(Array.from({ length: 4 }, () => claimer.next()));
    expect(got).toEqual(Array.from({ length: 4 }, () => ({ kind: 'held', hold: 'paused' })));
  });

  it('fails the lanes of a query that failed, and the next lanes ask again', async () => {
    let calls = 0;
    const claimer = new Claimer<string, Why>(async (limit) => {
      if (++calls === 1) throw new Error('connection terminated');
      return { kind: 'claimed', hosts: Array.from({ length: limit }, (_, i) => `h${i}`) };
    }, { kind: 'done' });
    await expect(claimer.next()).rejects.toThrow('connection terminated');
    await expect(claimer.next()).resolves.toEqual({ kind: 'claimed', host: 'h0' });
  });
});
