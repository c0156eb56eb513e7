/**
 * Every error the API answers with, as JSON from the one catalogue: `{ code, reason, retryable,
 * errno?, field?, issues?, details? }` with the catalogue's HTTP status. A Xen refusal carries its
 * errno; a request that does not match its schema names the field (`body.plan.waves[0].hosts`).
 * No stack trace, no secret, no driver dump ever reaches a response: an error fleetpatch did not
 * expect is INTERNAL with one line, and its stack goes to the log.
 */
import { z } from 'zod';
import { FleetpatchError, XenError, maskSecrets, toCatalogued, type ErrorCode } from '../errors.ts';

export const ApiErrorSchema = z.object({
  code: z.string().describe('catalogue code (docs/api.md#errors): EINVAL, ROLLOUT_STATE, FORBIDDEN, ...'),
  reason: z.string().describe('what went wrong, in words'),
  retryable: z.boolean(),
  errno: z.number().int().optional().describe("Xen's errno, for hypervisor refusals"),
  field: z.string().optional().describe('the first field of the request at fault'),
  issues: z.array(z.object({ field: z.string(), message: z.string() })).optional(),
  details: z.record(z.string(), z.unknown()).optional(),
});
export type ApiError = z.infer<typeof ApiErrorSchema>;

interface ValidationIssue {
  instancePath?: string;
  message?: string;
  keyword?: string;
  params?: { keys?: string[] } & Record<string, unknown>;
}

/** "/plan/waves/0/name" in context "body" -> "body.plan.waves[0].name". */
export function fieldOf(context: string | undefined, instancePath: string | undefined, extraKey?: string): string {
  const parts = (instancePath ?? '').split('/').filter(Boolean);
  if (extraKey) parts.push(extraKey);
  return parts.reduce((acc, p) => (/^\d+$/.test(p) ? `${acc}[${p}]` : `${acc}.${p}`), context ?? 'body');
}

/** Details fit for a response: no secrets, no nested causes, bounded. */
function publicDetails(details: Readonly<Record<string, unknown>>): Record<string, unknown> | undefined {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(details)) {
    if (/token|authorization|password|secret|privateKey|stack/i.test(k) || v instanceof Error) continue;
    out[k] = typeof v === 'string' ? maskSecrets(v) : v;
  }
  const text = JSON.stringify(out);
  return Object.keys(out).length === 0 || text.length > 20_000 ? undefined : JSON.parse(text);
}

export function apiError(code: ErrorCode, reason: string, extra: Partial<ApiError> = {}): { status: number; body: ApiError } {
  const e = new FleetpatchError(code, reason);
  return { status: e.httpStatus, body: { code, reason, retryable: e.retryable, ...extra } };
}

/** Fastify's own request errors (parsing, limits, content types, URLs, timeouts) by their codes. */
const FASTIFY_CODES: Record<string, { code: ErrorCode; field?: string; reason: (m: string) => string }> = {
  FST_ERR_CTP_BODY_TOO_LARGE: { code: 'BODY_TOO_LARGE', field: 'body', reason: () => 'the request body is larger than this route takes' },
  FST_ERR_CTP_INVALID_MEDIA_TYPE: { code: 'MEDIA_TYPE_UNSUPPORTED', field: 'content-type', reason: (m) => `${m}; send JSON with content-type: application/json` },
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: { code: 'BODY_INVALID', field: 'content-length', reason: () => 'the content-length does not match the body' },
  FST_ERR_CTP_EMPTY_JSON_BODY: { code: 'BODY_INVALID', field: 'body', reason: () => 'the body is empty; this route takes a JSON object' },
  FST_ERR_CTP_INVALID_JSON_BODY: { code: 'BODY_INVALID', field: 'body', reason: (m) => `the body is not valid JSON: ${m}` },
  FST_ERR_CTP_INVALID_TYPE: { code: 'MEDIA_TYPE_UNSUPPORTED', field: 'content-type', reason: (m) => m },
  // The router could not decode the path: "%ZZ", or bytes that are not UTF-8 ("%C0%AF", an overlong "/").
  FST_ERR_BAD_URL: { code: 'BODY_INVALID', field: 'url', reason: (m) => `the URL's path is not percent-encoded UTF-8 text: ${(/^'(.*)' is not a valid url component$/.exec(m)?.[1] ?? m).slice(0, 200)}` },
  FST_ERR_MAX_PARAM_LENGTH: { code: 'BODY_INVALID', field: 'url', reason: () => `a segment of the URL's path is longer than the API reads (${MAX_PATH_SEGMENT} characters)` },
  FST_ERR_HANDLER_TIMEOUT: { code: 'RESPONSE_TIMEOUT', reason: () => 'the API did not finish answering in time; what was asked may still be under way: look before asking again' },
};

/** The longest segment of a path the router reads; longer ones are refused before routing. */
export const MAX_PATH_SEGMENT = 2048;

/** Any error as the status and JSON the API answers with. */
export function toApiError(e: unknown): { status: number; body: ApiError; internal?: FleetpatchError } {
  const err = e as Error & { validation?: ValidationIssue[]; validationContext?: string; code?: string; statusCode?: number };
  if (Array.isArray(err?.validation) && err.validation.length > 0) {
    const issues = err.validation.map((v) => {
      const unknownKey = v.keyword === 'unrecognized_keys' ? v.params?.keys?.[0] : undefined;
      const field = fieldOf(err.validationContext, v.instancePath, unknownKey);
      const message = unknownKey ? `unknown field "${unknownKey}"` : (v.message ?? 'is invalid');
      return { field, message };
    });
    const first = issues[0]!;
    return apiError('BODY_INVALID', issues.map((i) => `${i.field}: ${i.message}`).join('; ').slice(0, 4000), { field: first.field, issues: issues.slice(0, 100) });
  }
  if (err && typeof err.code === 'string' && FASTIFY_CODES[err.code]) {
    const f = FASTIFY_CODES[err.code]!;
    return apiError(f.code, f.reason(maskSecrets(String(err.message ?? '')).split('\n')[0]!).slice(0, 400), f.field ? { field: f.field } : {});
  }
  if (err instanceof SyntaxError && err.statusCode === 400) {
    return apiError('BODY_INVALID', `the body is not valid JSON: ${err.message.split('\n')[0]!.slice(0, 300)}`, { field: 'body' });
  }
  if (err && typeof err.code === 'string' && err.code.startsWith('FST_') && typeof err.statusCode === 'number' && err.statusCode < 500) {
    return apiError('BODY_INVALID', maskSecrets(err.message.split('\n')[0]!.slice(0, 300)), { field: 'body' });
  }
  const c = toCatalogued(e);
  const body: ApiError = {
    code: c.code,
    reason: c.code === 'INTERNAL' ? 'internal error: fleetpatch did not expect this (the API log has the details)' : maskSecrets(c.message).replace(/\s*\n\s*/g, '; '),
    retryable: c.retryable,
  };
  if (c instanceof XenError) body.errno = c.errno;
  if (c.code === 'PLAN_INVALID' && Array.isArray(c.details.issues)) {
    body.issues = (c.details.issues as { path: string[]; message: string }[]).slice(0, 100).map((i) => ({ field: fieldOf('body.plan', `/${i.path.join('/')}`), message: i.message }));
    body.field = body.issues[0]?.field;
  }
  // An error that names the field at fault (text that cannot be stored, say) says so as a schema error would.
  if (typeof c.details.field === 'string' && !body.field) body.field = c.details.field;
  if (c.code !== 'INTERNAL') {
    const { field: _field, ...rest } = c.details;
    const d = publicDetails(rest);
    if (d && !body.issues) body.details = d;
  }
  return { status: c.httpStatus, body, ...(c.code === 'INTERNAL' ? { internal: c } : {}) };
}
