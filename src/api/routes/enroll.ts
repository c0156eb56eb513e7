/**
 * POST /api/enroll: a host joins the fleet. No bearer token: the join token in the body is the
 * credential (one use, one host, this fleet, unexpired: src/fleet/join-token.ts). The host sends
 * the CSR of the key pair it made (its private key never leaves it), its agent's address and its
 * hypervisor's build-id; the answer is its certificate and the fleet CA. The body is small and
 * bounded; each refusal names its reason (JOIN_TOKEN_*, CSR_INVALID, ARGUMENT, CA_MISSING).
 */
import { z } from 'zod';
import { ApiErrorSchema } from '../errors.ts';
import type { ApiContext } from '../../app/api-context.ts';
import type { Api } from '../schemas.ts';

/** A P-256 CSR is under 1 KiB; the rest of the body is a few hundred bytes. */
export const ENROLL_BODY_LIMIT = 16 * 1024;

const errors = { 400: ApiErrorSchema, 401: ApiErrorSchema, 409: ApiErrorSchema, 413: ApiErrorSchema, 415: ApiErrorSchema, 503: ApiErrorSchema };

export const EnrollBody = z
  .object({
    joinToken: z.string().describe('the token `fleetpatch hosts enroll <id>` printed'),
    csr: z.string().describe('PEM PKCS#10 request of the host\'s ECDSA P-256 key, CN=<host id>'),
    address: z.string().max(2000).describe('https://host:port where the worker reaches the agent'),
    hypervisorBuildId: z.string().max(256).describe('`xl info build_id` of the host'),
  })
  .strict();

export const EnrollOut = z.object({ hostId: z.string(), certificate: z.string(), ca: z.string(), notAfter: z.string(), fingerprint: z.string(), renewal: z.boolean() });

export function enrollRoutes(app: Api, ctx: ApiContext): void {
  app.post('/api/enroll', {
    config: { role: 'public' },
    bodyLimit: ENROLL_BODY_LIMIT,
    schema: {
      tags: ['fleet'],
      summary: 'A host enrols with its join token: sends its CSR, address and hypervisor build-id, gets its certificate and the fleet CA (docs/enrolment.md)',
      body: EnrollBody,
      response: { 200: EnrollOut, ...errors },
    },
    handler: async (request) => {
      const ca = await ctx.fleetCa();
      const enrolment = await ctx.fleetRegistry.enrol(ca, request.body);
      ctx.logger.info({ hostId: enrolment.hostId, renewal: enrolment.renewal, fingerprint: enrolment.fingerprint }, enrolment.renewal ? 'host renewed its certificate' : 'host enrolled');
      return enrolment;
    },
  });
}
