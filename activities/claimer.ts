/**
 * How a batch's lanes get their hosts.
 *
 * Claimer: lanes that ask for their next host at the same time share one claim query. A batch's
 * lanes free up in bursts (a wave step starts them together, and hosts take about the same time),
 * and a claim is a locking UPDATE of the work list: fifty lanes each running their own made every
 * claim wait for the others, about 35 ms each under load. Here the first lane to ask runs a query
 * for one host; lanes that ask while it runs wait, and the next query claims as many hosts as
 * there are lanes waiting, one each. Two workers still share a step host by host.
 *
 * LaneClaims: one lane asks for its next host while its current one waits on a long hypervisor
 * action (HostEngine's `acting` hook), so the claim costs the lane no time of its own; at most one
 * host per lane is claimed ahead. Before it starts a host claimed ahead, the lane asks again
 * whether the rollout is held (one shared query for the lanes asking at once, asked after the
 * last host finished): a pause that came meanwhile wins, as it would have over a claim made then,
 * and the host is given back, planned again. A pause or an abort leaves no host claimed and idle.
 */

/** What one query returns: the hosts it claimed (at most the number asked for), else why none. */
export type ClaimAnswer<T, E> = { kind: 'claimed'; hosts: T[] } | E;

/**
 * Callers that ask at once share one query: the first caller's query runs alone; callers that ask
 * while it runs wait for the next one, which answers all of them (`run(n)` returns one answer per
 * caller, in the order they asked). No caller gets the answer of a query that started before it
 * asked, so an answer is never older than the question.
 */
export class Coalescer<R> {
  private waiting: { resolve: (r: R) => void; reject: (e: unknown) => void }[] = [];
  private running = false;

  constructor(private readonly run: (n: number) => Promise<R[]>) {}

  next(): Promise<R> {
    return new Promise((resolve, reject) => {
      this.waiting.push({ resolve, reject });
      void this.pump();
    });
  }

  private async pump(): Promise<void> {
    if (this.running) return;
    this.running = true;
    try {
      while (this.waiting.length > 0) {
        const callers = this.waiting;
        this.waiting = [];
        try {
          const answers = await this.run(callers.length);
          callers.forEach((c, i) => c.resolve(answers[i]!));
        } catch (e) {
          for (const c of callers) c.reject(e);
        }
      }
    } finally {
      this.running = false;
    }
  }
}

export class Claimer<T, E extends { kind: string }> {
  private readonly shared: Coalescer<{ kind: 'claimed'; host: T } | E>;

  /**
   * @param claim claims up to `limit` hosts. When it claims fewer than asked, the lanes left over
   *   are told `none` (the step had no more hosts to give); when it claims none, they get its answer.
   */
  constructor(claim: (limit: number) => Promise<ClaimAnswer<T, E>>, none: E) {
    this.shared = new Coalescer<{ kind: 'claimed'; host: T } | E>(async (lanes) => {
      const answer = await claim(lanes);
      if (answer.kind !== 'claimed') return Array.from({ length: lanes }, () => answer as E);
      const { hosts } = answer as { kind: 'claimed'; hosts: T[] };
      return Array.from({ length: lanes }, (_, i) => (i < hosts.length ? { kind: 'claimed' as const, host: hosts[i] as T } : none));
    });
  }

  /** The next host for one lane, or why there is none. */
  next(): Promise<{ kind: 'claimed'; host: T } | E> {
    return this.shared.next();
  }
}

/** One lane's claims: at most one host claimed ahead, given back if the lane will not start it. */
export class LaneClaims<T, E extends { kind: string }> {
  private pending: Promise<{ kind: 'claimed'; host: T } | E> | null = null;

  /**
   * @param recheck asked before a host claimed ahead is handed over: why the lane must not start
   *   it now (a hold), or null.
   */
  constructor(
    private readonly claimer: Claimer<T, E>,
    private readonly release: (host: T) => Promise<unknown>,
    private readonly recheck?: () => Promise<E | null>,
  ) {}

  /** Claims the lane's next host now, unless one is already on its way. */
  ahead(): void {
    if (this.pending) return;
    this.pending = this.claimer.next();
    // Seen by `next` or `close`; not an unhandled rejection meanwhile.
    this.pending.catch(() => undefined);
  }

  /** The host claimed ahead (unless `recheck` says otherwise: then it goes back), or a fresh claim. */
  async next(): Promise<{ kind: 'claimed'; host: T } | E> {
    const ahead = this.pending;
    this.pending = null;
    if (!ahead) return this.claimer.next();
    const r = await ahead;
    if (r.kind !== 'claimed' || !this.recheck) return r;
    const { host } = r as { kind: 'claimed'; host: T };
    let why: E | null;
    try {
      why = await this.recheck();
    } catch (e) {
      await this.giveBack(host);
      throw e;
    }
    if (!why) return r;
    await this.giveBack(host);
    return why;
  }

  /** Gives a host back (best effort: a host not given back is taken again when its lease lapses). */
  async giveBack(host: T): Promise<void> {
    await this.release(host).catch(() => undefined);
  }

  /** The lane is done: a host claimed ahead and not started goes back. */
  async close(): Promise<void> {
    const p = this.pending;
    this.pending = null;
    if (!p) return;
    const r = await p.catch(() => null);
    if (r && r.kind === 'claimed') await this.giveBack((r as { kind: 'claimed'; host: T }).host);
  }
}
