/**
 * The API below its routes: how long a request may take to arrive and to be answered, what
 * becomes of a body nobody reads, and how the answers that come before any route (a URL that
 * cannot be decoded, bytes that are not HTTP, a request that arrives too slowly) are written:
 * always the catalogue's JSON, as every other refusal (errors.ts).
 *
 * Node reads and discards a request body its handler never read so that the connection can carry
 * the next request; for an endless body (a GET with `Transfer-Encoding: chunked` fed from
 * /dev/zero, or any request answered 401 before its body) that is forever. So a GET or HEAD with
 * a body is refused before the token is even looked at, and an answer sent before its request
 * arrived in full stops the reading: the client, still sending, can read the answer (closing at
 * once, with its bytes unread, would reset the connection under it), and a second later the
 * connection is dropped.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { Socket } from 'node:net';
import type { FastifyRequest } from 'fastify';
import { FleetpatchError } from '../errors.ts';
import { apiError, type ApiError } from './errors.ts';

export interface ApiLimits {
  /** The request line and headers must arrive within this (ms). */
  headersMs: number;
  /** All of the request, body included, must arrive within this (ms); a slower one is answered 408 REQUEST_TIMEOUT and cut off. */
  requestMs: number;
  /** A route must have answered within this (ms) of the request's arrival, or the client gets 503 RESPONSE_TIMEOUT. */
  answerMs: number;
  /** A connection on which nothing moves either way for this long is closed (a stalled reader of the live stream, too). */
  idleMs: number;
}

/**
 * 30 s carries the largest body (a 3 MiB payload upload) at 100 KiB/s. The live stream writes a
 * comment every 15 s, well inside `idleMs`; an answer (a dry run over a large fleet) may take a
 * while, but not longer than a person waits.
 */
export const LIMITS: ApiLimits = { headersMs: 10_000, requestMs: 30_000, answerMs: 60_000, idleMs: 90_000 };

/** Fastify's and Node's settings for the limits. */
export function limitOptions(limits: ApiLimits) {
  return {
    requestTimeout: limits.requestMs,
    handlerTimeout: limits.answerMs,
    connectionTimeout: limits.idleMs,
    http: {
      headersTimeout: Math.min(limits.headersMs, limits.requestMs),
      requestTimeout: limits.requestMs,
      // Node looks for requests past their time this often (its default, 30 s, would double a 30 s limit).
      connectionsCheckingInterval: Math.max(100, Math.min(1000, Math.floor(limits.requestMs / 4))),
    },
  };
}

/** The headers every answer of the API carries. */
export const SECURITY_HEADERS: Readonly<Record<string, string>> = {
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'x-frame-options': 'DENY',
};

function hasBody(request: IncomingMessage): boolean {
  const length = request.headers['content-length'];
  return request.headers['transfer-encoding'] !== undefined || (length !== undefined && length !== '0');
}

/** onRequest hook, before authentication: no route reads the body of a GET or HEAD, so one that has a body is refused. */
export async function refuseBodyWithoutUse(request: FastifyRequest): Promise<void> {
  if ((request.method === 'GET' || request.method === 'HEAD') && hasBody(request.raw)) {
    throw new FleetpatchError('BODY_INVALID', `a ${request.method} request takes no body; send what you ask for in the URL's query`, { field: 'body' });
  }
}

/** How long a connection whose request was answered before its body arrived in full stays open, so that the client reads the answer. */
export const LINGER_MS = 1000;

/** Sockets dropping after an answer: Node's request timeout must not write a second answer on them. */
const lingering = new WeakSet<Socket>();

/**
 * Called as the answer is sent: once it is out, a body that has not arrived in full is no longer
 * read (left alone, Node would read it to its end to keep the connection; it resumes the socket
 * for that on the next tick, so the socket is paused after it), and LINGER_MS later the connection
 * is dropped. True when it will be: the answer must then not say `connection: close`, on which
 * Node would close at once, resetting the connection under a client still sending.
 */
export function stopReadingUnreadBody(request: IncomingMessage, response: ServerResponse): boolean {
  const socket = request.socket;
  // fastify's inject() has no connection to keep or drop.
  if (request.complete || !hasBody(request) || !(socket instanceof Socket)) return false;
  lingering.add(socket);
  response.once('finish', () => {
    request.pause();
    setImmediate(() => socket.pause());
    const timer = setTimeout(() => socket.destroy(), LINGER_MS).unref();
    socket.once('close', () => clearTimeout(timer));
  });
  return true;
}

const STATUS_TEXT: Record<number, string> = { 400: 'Bad Request', 408: 'Request Timeout', 431: 'Request Header Fields Too Large' };

/** What a socket that did not send a usable request is told: HTTP errors from Node's parser, or a request that took too long. */
export function clientErrorAnswer(err: NodeJS.ErrnoException, limits: ApiLimits): { status: number; body: ApiError } {
  if (err.code === 'ERR_HTTP_REQUEST_TIMEOUT') {
    return apiError('REQUEST_TIMEOUT', `the request did not arrive in time: the API waits ${limits.headersMs / 1000} s for its headers and ${limits.requestMs / 1000} s for all of it, body included`, { field: 'request' });
  }
  if (err.code === 'HPE_HEADER_OVERFLOW') return apiError('BODY_INVALID', "the request's headers are larger than the API reads (16 KiB)", { field: 'headers' });
  const why = typeof (err as { reason?: unknown }).reason === 'string' ? `: ${String((err as { reason?: unknown }).reason).slice(0, 200)}` : '';
  return apiError('BODY_INVALID', `the request is not valid HTTP/1.1${why}`, { field: 'request' });
}

/** Node's clientError listener: answers in the catalogue's shape when nothing has been written yet, then drops the connection. */
export function clientErrorHandler(limits: ApiLimits) {
  return (err: NodeJS.ErrnoException, socket: Socket): void => {
    if (err.code === 'ECONNRESET' || socket.destroyed) return;
    if (lingering.has(socket)) {
      socket.destroy();
      return;
    }
    // A response already under way on this socket cannot be followed by another one.
    const inFlight = (socket as Socket & { _httpMessage?: { headersSent?: boolean } })._httpMessage;
    if (socket.writable && !inFlight?.headersSent) {
      const { status, body } = clientErrorAnswer(err, limits);
      const text = JSON.stringify(body);
      const headers = Object.entries({ ...SECURITY_HEADERS, 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store', connection: 'close', 'content-length': String(Buffer.byteLength(text)) });
      // Dropped once the answer is out (or after a second, for a peer that does not read it either).
      setTimeout(() => socket.destroy(), 1000).unref();
      socket.end(`HTTP/1.1 ${status} ${STATUS_TEXT[status] ?? 'Error'}\r\n${headers.map(([k, v]) => `${k}: ${v}`).join('\r\n')}\r\n\r\n${text}`, () => socket.destroy());
      return;
    }
    socket.destroy();
  };
}
