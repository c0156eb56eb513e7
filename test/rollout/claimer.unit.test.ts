/**
 * Lanes asking for hosts at once share a claim: fewer locking queries on the work list, and still
 * exactly one host per lane that asked, none claimed for a lane that did not. A lane claims at
 * most one host ahead, and gives it back when it will not start it.
 */
import { describe, expect, it } from 'vitest';
import { Claimer, Coalescer, LaneClaims, type ClaimAnswer } from '../../activities/claimer.ts';

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

describe('a lane claiming its next host ahead', () => {
  it('claims once however often it is told, and hands that host over next', async () => {
    const list = workList(10);
    const lane = new LaneClaims(new Claimer(list.claim, { kind: 'done' } as Why), async () => undefined);
    lane.ahead();
    lane.ahead();
    lane.ahead();
    expect(await lane.next()).toEqual({ kind: 'claimed', host: 'host-0' });
    expect(list.asked).toEqual([1]);
    // Nothing ahead now: the next host is claimed when asked for.
    expect(await lane.next()).toEqual({ kind: 'claimed', host: 'host-1' });
    expect(list.asked).toEqual([1, 1]);
  });

  it('gives back a host claimed ahead that it never started, and nothing when the step was done', async () => {
    const list = workList(1);
    const released: string[] = [];
    const claimer = new Claimer(list.claim, { kind: 'done' } as Why);
    const a = new LaneClaims(claimer, async (h: string) => void released.push(h));
    a.ahead();
    await a.close();
    expect(released).toEqual(['host-0']);
    const b = new LaneClaims(claimer, async (h: string) => void released.push(h));
    b.ahead();
    await b.close();
    expect(released).toEqual(['host-0']);
    // A lane that ends with nothing ahead releases nothing.
    await new LaneClaims(claimer, async (h: string) => void released.push(h)).close();
    expect(released).toEqual(['host-0']);
  });

  it('passes on a hold that came with the claim ahead, and a failed give-back does not fail the lane', async () => {
    const held = new LaneClaims(new Claimer(workList(5, { hold: 'paused' }).claim, { kind: 'done' } as Why), async () => undefined);
    held.ahead();
    expect(await held.next()).toEqual({ kind: 'held', hold: 'paused' });
    const failing = new LaneClaims(new Claimer(workList(5).claim, { kind: 'done' } as Why), async () => {
      throw new Error('connection terminated');
    });
    failing.ahead();
    await expect(failing.close()).resolves.toBeUndefined();
  });
});

describe('a host claimed ahead, when the rollout was held meanwhile', () => {
  it('is given back, and the lane hears of the hold; without a hold it is handed over', async () => {
    const released: string[] = [];
    let hold: Why | null = null;
    const lane = new LaneClaims(new Claimer(workList(5).claim, { kind: 'done' } as Why), async (h: string) => void released.push(h), async () => hold);
    lane.ahead();
    expect(await lane.next()).toEqual({ kind: 'claimed', host: 'host-0' });
    lane.ahead();
    hold = { kind: 'held', hold: 'paused' };
    expect(await lane.next()).toEqual({ kind: 'held', hold: 'paused' });
    expect(released).toEqual(['host-1']);
  });

  it('asks whether the rollout is held with a query that started after the lane asked', async () => {
    let held = false;
    const started: boolean[] = [];
    const check = new Coalescer(async (n) => {
      const answer = held;
      started.push(answer);
      await new Promise((r) => setTimeout(r, 10));
      return Array.from({ length: n }, () => answer);
    });
    const first = check.next();
    // The hold comes while the first query runs: a lane asking now waits for the next query.
    held = true;
    const second = check.next();
    const third = check.next();
    expect(await first).toBe(false);
    expect(await second).toBe(true);
    expect(await third).toBe(true);
    expect(started).toEqual([false, true]);
  });
});
