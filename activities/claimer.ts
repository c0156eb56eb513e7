/**
 * Lanes that ask for their next host at the same time share one claim query.
 *
 * A batch's lanes free up in bursts (a wave step starts them together, and hosts take about the
 * same time), and a claim is a locking UPDATE of the work list: fifty lanes each running their own
 * made every claim wait for the others, about 35 ms each under load. Here the first lane to ask
 * runs a query for one host; lanes that ask while it runs wait, and the next query claims as many
 * hosts as there are lanes waiting, one each. Nothing is claimed ahead of a lane that asked, so a
 * pause or an abort leaves no host claimed and idle, and two workers still share a step host by host.
 */

/** What one query returns: the hosts it claimed (at most the number asked for), else why none. */
export type ClaimAnswer<T, E> = { kind: 'claimed'; hosts: T[] } | E;

export class Claimer<T, E extends { kind: string }> {
  private waiting: { resolve: (r: { kind: 'claimed'; host: T } | E) => void; reject: (e: unknown) => void }[] = [];
  private running = false;

  /**
   * @param claim claims up to `limit` hosts. When it claims fewer than asked, the lanes left over
   *   are told `none` (the step had no more hosts to give); when it claims none, they get its answer.
   */
  constructor(
    private readonly claim: (limit: number) => Promise<ClaimAnswer<T, E>>,
    private readonly none: E,
  ) {}

  /** The next host for one lane, or why there is none. */
  next(): Promise<{ kind: 'claimed'; host: T } | E> {
    return new Promise((resolve, reject) => {
      this.waiting.push({ resolve, reject });
      void this.run();
    });
  }

  private async run(): Promise<void> {
    if (this.running) return;
    this.running = true;
    try {
      while (this.waiting.length > 0) {
        const lanes = this.waiting;
        this.waiting = [];
        let answer: ClaimAnswer<T, E>;
        try {
          answer = await this.claim(lanes.length);
        } catch (e) {
          for (const l of lanes) l.reject(e);
          continue;
        }
        if (answer.kind !== 'claimed') {
          for (const l of lanes) l.resolve(answer as E);
          continue;
        }
        const { hosts } = answer as { kind: 'claimed'; hosts: T[] };
        lanes.forEach((l, i) => l.resolve(i < hosts.length ? { kind: 'claimed', host: hosts[i]! } : this.none));
      }
    } finally {
      this.running = false;
    }
  }
}
