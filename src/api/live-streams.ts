/**
 * The open live streams (server-sent events, GET /api/stream): each writes the live view's changes
 * as they come and a comment every 15 s, and ends with a `closed` event, the catalogue's error
 * saying why, when its token is revoked (seen in the event store by the view, so also a
 * revocation made by `fleetpatch tokens revoke` in another process) or when the API shuts down.
 */
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { ApiContext } from '../app/api-context.ts';
import { FleetpatchError } from '../errors.ts';
import { presentedToken } from './auth.ts';
import { toApiError } from './errors.ts';
import type { LiveUpdate, LiveView } from './live.ts';

/** Proxies close a connection that is quiet for 30 s or more; a comment this often keeps it open. */
export const KEEP_ALIVE_MS = 15_000;

interface OpenStream {
  token: string;
  name: string;
  /** Ends the stream, saying why; before it opened, makes it refuse to open. */
  close(why: FleetpatchError): void;
}

const revokedError = () => new FleetpatchError('AUTH_REQUIRED', 'the API token is unknown or revoked');

export class LiveStreams {
  private readonly open = new Set<OpenStream>();

  constructor(
    private readonly ctx: ApiContext,
    private readonly view: LiveView,
  ) {
    view.on('revoked', (name: string) => void this.revoked(name));
  }

  /** How many streams are open. */
  get size(): number {
    return this.open.size;
  }

  /**
   * A token of this name was revoked: the streams it opened close. Each stream's own token is
   * asked for again, because the name may already carry a new token that opened a stream since.
   */
  private async revoked(name: string): Promise<void> {
    await Promise.all(
      [...this.open]
        .filter((s) => s.name === name)
        .map(async (s) => {
          try {
            if (!(await this.ctx.tokens.authenticate(s.token))) s.close(new FleetpatchError('AUTH_REQUIRED', `the API token "${name}" was revoked`));
          } catch (e) {
            // The store did not answer; the view tells of the revocation only once, so the stream is not given the benefit of the doubt.
            this.ctx.logger.warn({ err: (e as Error).message, token: name }, 'live stream: the revoked token could not be checked; closing its stream');
            s.close(new FleetpatchError('AUTH_REQUIRED', `the API token "${name}" was revoked`));
          }
        }),
    );
  }

  /** Ends every open stream (the API is shutting down). */
  closeAll(why: FleetpatchError): void {
    for (const s of [...this.open]) s.close(why);
  }

  /** Serves one stream until the client goes, its token is revoked or the API closes. */
  async serve(request: FastifyRequest, reply: FastifyReply, rolloutId: string | undefined): Promise<void> {
    const { view } = this;
    let refused: FleetpatchError | undefined;
    const stream: OpenStream = { token: presentedToken(request) ?? '', name: request.principal!.name, close: (why) => (refused ??= why) };
    this.open.add(stream);
    try {
      await view.poll();
      // A revocation the view told between the door and here did not reach this stream: the token is asked for once more.
      if (!refused && !(await this.ctx.tokens.authenticate(stream.token))) refused = revokedError();
    } catch (e) {
      this.open.delete(stream);
      throw e;
    }
    if (refused) {
      this.open.delete(stream);
      throw refused;
    }

    reply.hijack();
    const res = reply.raw;
    res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-store',
      connection: 'keep-alive',
      // nginx and friends: do not buffer the stream.
      'x-accel-buffering': 'no',
      'x-content-type-options': 'nosniff',
    });
    let ended = false;
    const send = (event: string, data: unknown) => {
      if (!ended) res.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
    };
    send('snapshot', { hosts: view.fleet(), recent: view.recent.slice(-50) });
    const onUpdate = (u: LiveUpdate) => {
      if (u.hosts.length) send('hosts', u.hosts);
      if (u.events.length) send('events', u.events);
    };
    const onRollout = (p: { rolloutId: string }) => {
      if (p.rolloutId === rolloutId) send('rollout', p);
    };
    view.on('update', onUpdate);
    view.on('rollout', onRollout);
    const unwatch = rolloutId ? view.watch(rolloutId) : () => undefined;
    const known = rolloutId ? view.lastRollout(rolloutId) : undefined;
    if (known) send('rollout', known);
    const ping = setInterval(() => {
      if (!ended) res.write(': keep-alive\n\n');
    }, KEEP_ALIVE_MS);
    const cleanup = () => {
      if (ended) return;
      ended = true;
      clearInterval(ping);
      view.off('update', onUpdate);
      view.off('rollout', onRollout);
      unwatch();
      this.open.delete(stream);
    };
    stream.close = (why) => {
      if (ended) return;
      send('closed', toApiError(why).body);
      cleanup();
      res.end();
    };
    request.raw.on('close', cleanup);
    res.on('close', cleanup);
    res.on('error', cleanup);
  }
}
