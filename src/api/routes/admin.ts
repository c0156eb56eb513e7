/**
 * Payloads (upload: admin; inspect: viewer) and API tokens (admin). An uploaded payload is parsed
 * exactly as Xen's upload would (a refusal is the errno and the reason) and stored by build-id
 * with its detached signature; rollouts then name it by build-id and verify the signature against
 * the trusted keys. Tokens made here are shown once, like `fleetpatch tokens create`.
 */
import { createHash } from 'node:crypto';
import { z } from 'zod';
import { FleetpatchError } from '../../errors.ts';
import { parsePayload } from '../../payload/index.ts';
import { payloadToJson } from '../../payload/inspect-json.ts';
import { PayloadNameSchema } from '../../rollout/plan.ts';
import { TOKEN_NAME } from '../../access/tokens.ts';
import { ApiErrorSchema } from '../errors.ts';
import { actorOf } from '../auth.ts';
import type { ApiContext } from '../../app/api-context.ts';
import { BuildIdSchema, ReasonSchema, type Api } from '../schemas.ts';

const errors = { 400: ApiErrorSchema, 401: ApiErrorSchema, 403: ApiErrorSchema, 404: ApiErrorSchema, 409: ApiErrorSchema, 413: ApiErrorSchema, 415: ApiErrorSchema, 422: ApiErrorSchema, 503: ApiErrorSchema };

/** Xen refuses payloads over 2 MiB; base64 makes them a third larger, plus the JSON around them. */
const MAX_PAYLOAD_BYTES = 2 * 1024 * 1024;
export const PAYLOAD_BODY_LIMIT = Math.ceil((MAX_PAYLOAD_BYTES * 4) / 3) + 64 * 1024;

const Base64 = z.string().regex(/^[A-Za-z0-9+/]*={0,2}$/, 'must be base64');
const StoredOut = z.object({ name: z.string(), buildId: z.string(), sha256: z.string(), size: z.number(), depends: z.string().nullable(), xenDepends: z.string().nullable(), signed: z.boolean(), keyId: z.string().nullable(), created: z.boolean() });
const TokenOut = z.object({ name: z.string(), role: z.enum(['viewer', 'operator', 'admin']), createdAt: z.string(), createdBy: z.string(), revokedAt: z.string().nullable(), revokedBy: z.string().nullable(), fingerprint: z.string(),
  /** unusable: its row is not what its access stream records (`problem` says why); it authenticates nothing. */
  status: z.enum(['live', 'revoked', 'unusable']),
  problem: z.string().nullable(),
});

export function adminRoutes(app: Api, ctx: ApiContext): void {
  app.post('/api/payloads', {
    config: { role: 'admin' },
    bodyLimit: PAYLOAD_BODY_LIMIT,
    schema: {
      tags: ['payloads'],
      summary: 'Store a payload: parsed as Xen would, stored by build-id with its detached signature (rollouts verify it against the trusted keys)',
      body: z
        .object({
          name: PayloadNameSchema.describe("Xen's payload name (xen-livepatch derives it from the file name)"),
          bytes: Base64.describe('the payload ELF, base64'),
          signature: z
            .object({ algorithm: z.string().min(1).max(32), keyId: z.string().min(1).max(200), signature: Base64.max(1024), sha256: z.string().regex(/^[0-9a-f]{64}$/).optional() })
            .strict()
            .optional()
            .describe('the detached signature (`fleetpatch payload sign` writes it as <file>.sig)'),
        })
        .strict(),
      response: { 201: StoredOut, 200: StoredOut, ...errors },
    },
    handler: async (request, reply) => {
      const { name, bytes: b64, signature } = request.body;
      const bytes = Buffer.from(b64, 'base64');
      if (bytes.length > MAX_PAYLOAD_BYTES) throw new FleetpatchError('FILE_TOO_LARGE', `the payload is ${bytes.length} bytes; Xen takes at most ${MAX_PAYLOAD_BYTES}`);
      const parsed = parsePayload(new Uint8Array(bytes), { name });
      const { payload, created } = await ctx.payloads.put(
        { name, buildId: parsed.buildIdHex, bytes: new Uint8Array(bytes), depends: parsed.dependsHex, xenDepends: parsed.xenDependsHex, signature: signature ?? null },
        { actor: actorOf(request) },
      );
      return reply.code(created ? 201 : 200).send({
        name: payload.name,
        buildId: payload.buildId,
        sha256: payload.sha256,
        size: payload.size,
        depends: payload.depends,
        xenDepends: payload.xenDepends,
        signed: payload.signature !== null,
        keyId: payload.signature?.keyId ?? null,
        created,
      });
    },
  });

  app.get('/api/payloads/:buildId', {
    config: { role: 'viewer' },
    schema: {
      tags: ['payloads'],
      summary: 'A stored payload, inspected as `fleetpatch payload inspect --json` shows it (its bytes are checked against the recorded digest first)',
      params: z.object({ buildId: BuildIdSchema }).strict(),
      response: { 200: z.object({ stored: z.object({ name: z.string(), sha256: z.string(), size: z.number(), storedAt: z.string(), signed: z.boolean(), keyId: z.string().nullable() }), payload: z.looseObject({ buildId: z.string(), format: z.string() }) }), ...errors },
    },
    handler: async (request) => {
      const stored = await ctx.payloads.get(request.params.buildId, { actor: actorOf(request) });
      const p = parsePayload(new Uint8Array(stored.bytes), { name: stored.name });
      const json = payloadToJson(p);
      return {
        stored: { name: stored.name, sha256: createHash('sha256').update(stored.bytes).digest('hex'), size: stored.size, storedAt: stored.storedAt, signed: stored.signature !== null, keyId: stored.signature?.keyId ?? null },
        payload: JSON.parse(JSON.stringify(json, (_k, v) => (typeof v === 'bigint' ? v.toString() : v))),
      };
    },
  });

  app.get('/api/tokens', {
    config: { role: 'admin' },
    schema: { tags: ['tokens'], summary: 'Every API token: name, role, fingerprint, who made it, and whether it is live, revoked or unusable (and why); never the token', response: { 200: z.array(TokenOut), ...errors } },
    handler: async () => ctx.tokens.list(),
  });

  app.post('/api/tokens', {
    config: { role: 'admin' },
    schema: {
      tags: ['tokens'],
      summary: 'Make a token (recorded as TokenCreated); the answer is the only time the token is shown',
      body: z.object({ name: z.string().regex(TOKEN_NAME, 'a token name: 1 to 63 letters, digits, ".", "_", "@" or "-"'), role: z.enum(['viewer', 'operator', 'admin']) }).strict(),
      response: { 201: TokenOut.extend({ token: z.string() }), ...errors },
    },
    handler: async (request, reply) => {
      const { token, info } = await ctx.tokens.create(request.body.name, request.body.role, actorOf(request));
      return reply.code(201).send({ ...info, token });
    },
  });

  app.post('/api/tokens/:name/revoke', {
    config: { role: 'admin' },
    schema: {
      tags: ['tokens'],
      summary: 'Revoke a token (recorded as TokenRevoked); it stops working at once',
      params: z.object({ name: z.string().regex(TOKEN_NAME) }).strict(),
      body: z.object({ reason: ReasonSchema.optional() }).strict(),
      response: { 200: TokenOut, ...errors },
    },
    handler: async (request) => ctx.tokens.revoke(request.params.name, actorOf(request), request.body.reason),
  });
}
