/**
 * The API's edges that need no server: which field of a request holds text that cannot be stored
 * (named as the schema errors name fields, printable even when the culprit is a key), and what a
 * socket that sent no usable request is told.
 */
import { describe, expect, it } from 'vitest';
import { LIMITS, clientErrorAnswer } from '../../src/api/connection.ts';
import { ApiErrorSchema, toApiError } from '../../src/api/errors.ts';
import { unstorableField } from '../../src/api/storable.ts';
import { FleetpatchError } from '../../src/errors.ts';

const request = (parts: { params?: unknown; query?: unknown; body?: unknown }) => ({ params: parts.params ?? {}, query: parts.query ?? {}, body: parts.body });

describe('unstorableField', () => {
  it('names the first field holding a NUL or a lone surrogate, params before query before body', () => {
    expect(unstorableField(request({ params: { hostId: 'a\0b' }, query: { host: '\0' } }))?.field).toBe('params.hostId');
    expect(unstorableField(request({ query: { host: 'ok', stream: ['a', 'b\0'] } }))?.field).toBe('querystring.stream[1]');
    expect(unstorableField(request({ body: { plan: { hosts: { ids: ['h1', 'x\ud800y'] } } } }))).toEqual({ field: 'body.plan.hosts.ids[1]', problem: expect.stringContaining('lone UTF-16 surrogate') });
    expect(unstorableField(request({ body: ['\udc00'] }))?.field).toBe('body[0]');
    expect(unstorableField(request({ body: 'a\0' }))?.field).toBe('body');
  });

  it('writes a key that is itself the problem with its culprit escaped, keeping valid pairs as they are', () => {
    const found = unstorableField(request({ body: { labels: { 'r\u{1F600}ck\0': 'a' } } }));
    expect(found?.field).toBe('body.labels.r\u{1F600}ck\\u0000');
    expect(found?.field).not.toContain('\0');
    expect(found?.problem).toMatch(/^its name contains a NUL/);
    expect(unstorableField(request({ body: { ['\ud800']: 1 } }))?.field).toBe('body.\\ud800');
  });

  it('finds nothing in text that can be stored', () => {
    expect(unstorableField(request({ params: { hostId: 'h\u{1F600}' }, query: { host: 'hôte', n: '\u05D0' }, body: { reason: 'tab\tand\nnewline', deep: [{ x: ['\u{10FFFF}'] }] } }))).toBeUndefined();
    expect(unstorableField(request({}))).toBeUndefined();
  });

  it('becomes a 400 BODY_INVALID naming the field, as a schema error would', () => {
    const { status, body } = toApiError(new FleetpatchError('BODY_INVALID', 'body.reason: contains a NUL', { field: 'body.reason' }));
    expect(status).toBe(400);
    expect(body).toEqual({ code: 'BODY_INVALID', reason: 'body.reason: contains a NUL', retryable: false, field: 'body.reason' });
  });
});

describe("the framework's errors as the catalogue's", () => {
  it('maps an undecodable URL, an overlong segment and a slow answer', () => {
    expect(toApiError(Object.assign(new Error("'/api/hosts/%ZZ' is not a valid url component"), { code: 'FST_ERR_BAD_URL', statusCode: 400 }))).toMatchObject({
      status: 400,
      body: { code: 'BODY_INVALID', field: 'url', reason: "the URL's path is not percent-encoded UTF-8 text: /api/hosts/%ZZ" },
    });
    expect(toApiError(Object.assign(new Error('x'), { code: 'FST_ERR_MAX_PARAM_LENGTH', statusCode: 414 }))).toMatchObject({ status: 400, body: { code: 'BODY_INVALID', field: 'url' } });
    expect(toApiError(Object.assign(new Error('Request timed out'), { code: 'FST_ERR_HANDLER_TIMEOUT', statusCode: 503 }))).toMatchObject({ status: 503, body: { code: 'RESPONSE_TIMEOUT', retryable: true } });
  });

  it("answers a socket's errors in the catalogue's shape, with the limits in words", () => {
    const timeout = clientErrorAnswer(Object.assign(new Error('Request timeout'), { code: 'ERR_HTTP_REQUEST_TIMEOUT' }), LIMITS);
    expect(timeout).toMatchObject({ status: 408, body: { code: 'REQUEST_TIMEOUT', retryable: true, field: 'request' } });
    expect(timeout.body.reason).toContain(`${LIMITS.requestMs / 1000} s`);
    expect(clientErrorAnswer(Object.assign(new Error('Header overflow'), { code: 'HPE_HEADER_OVERFLOW' }), LIMITS)).toMatchObject({ status: 400, body: { code: 'BODY_INVALID', field: 'headers' } });
    const parse = clientErrorAnswer(Object.assign(new Error('Parse Error'), { code: 'HPE_INVALID_METHOD', reason: 'Invalid method encountered' }), LIMITS);
    expect(parse).toMatchObject({ status: 400, body: { code: 'BODY_INVALID', field: 'request', reason: 'the request is not valid HTTP/1.1: Invalid method encountered' } });
    for (const a of [timeout, parse]) expect(ApiErrorSchema.strict().safeParse(a.body).success).toBe(true);
  });
});
