/**
 * The host agent protocol: what a hypervisor's agent answers over HTTP, as zod schemas. The
 * emulator builds its answers to these shapes and checks them before sending; the agent client
 * parses every answer with them, so a host that answers something else is a clear HOST_PROTOCOL
 * error, never a value trusted by shape. Also the protocol's constants (Xen's) and the one
 * encoding of errors both ends share: a catalogue code (and, for Xen's refusals, the errno) goes
 * out, and the same error comes back.
 *
 * Build-ids are lowercase hex; addresses are hex strings. See docs/hypervisor.md for the routes.
 */
import { z } from 'zod';
import { FLEETPATCH_CATALOGUE, FleetpatchError, XEN_ERRNO, XenError, isFleetpatchError, type FleetpatchCode, type XenErrnoName } from '../errors.ts';
import { StorableString, findUnstorable, formatPath } from '../domain/text.ts';

// ---- Xen's constants (xen/include/public/sysctl.h, tools/misc/xen-livepatch.c) -----------------

export type PayloadState = 'CHECKED' | 'APPLIED';
/** LIVEPATCH_STATE_* numbers, as xen-livepatch prints them. */
export const STATE_NUMBER: Record<PayloadState, number> = { CHECKED: 1, APPLIED: 2 };

export type ActionCmd = 'unload' | 'revert' | 'apply' | 'replace';
/** LIVEPATCH_ACTION_* numbers. */
export const ACTION_NUMBER: Record<ActionCmd, number> = { unload: 1, revert: 2, apply: 3, replace: 4 };
export const ACTION_CMDS: readonly ActionCmd[] = ['unload', 'revert', 'apply', 'replace'];

/** A payload name is 1..127 bytes plus the NUL (XEN_LIVEPATCH_NAME_SIZE). */
export const XEN_LIVEPATCH_NAME_SIZE = 128;
/** LIST returns at most this many entries per call (E2BIG beyond). */
export const LIVEPATCH_LIST_MAX = 1024;
/** A timeout of 0 means Xen's 30 ms. */
export const LIVEPATCH_DEFAULT_TIMEOUT_NS = 30_000_000;

// ---- answers ----------------------------------------------------------------------------------

/**
 * Every string an answer carries: a host may be hostile, and what it says ends up in the event
 * store, which cannot hold a NUL or a lone surrogate; such an answer is HOST_PROTOCOL naming the
 * field (parseAnswer), not a rollout that fails later where the text is recorded.
 */
const Text = StorableString;
const BuildId = Text;
const PayloadStateSchema = z.enum(['CHECKED', 'APPLIED']);

/** A build-id dependency check the hypervisor made (at UPLOAD, APPLY or REPLACE), as it reports it. */
export const HostDependencyCheckSchema = z.object({
  payload: Text,
  payloadBuildId: BuildId,
  /** `depends` for APPLY and REPLACE, `xen_depends` at upload. */
  kind: z.enum(['depends', 'xen_depends']),
  operation: z.enum(['upload', 'apply', 'replace']),
  against: z.enum(['hypervisor', 'payload']),
  /** The payload at the top of the stack when `against` is 'payload'. */
  againstName: Text.nullable(),
  /** The build-id the payload names. */
  expected: BuildId,
  /** The build-id of what it was checked against. */
  found: BuildId,
  /** 'skipped': APPLY_NODEPS; the comparison is still reported. */
  outcome: z.enum(['satisfied', 'mismatch', 'skipped']),
});
export type HostDependencyCheck = z.infer<typeof HostDependencyCheckSchema>;

export const WirePayloadSchema = z.object({
  name: Text,
  state: PayloadStateSchema,
  /** 0 or -errno. */
  rc: z.number().int(),
  /** Why rc is not 0, in words. */
  reason: Text.nullable(),
  buildId: BuildId,
  depends: BuildId,
  xenDepends: BuildId.nullable(),
  metadata: z.array(Text),
  reverted: z.boolean(),
  safeToReapply: z.boolean(),
  /** The hypervisor functions it patches. */
  functions: z.array(Text),
  /**
   * Where buildId, depends, xenDepends and functions come from. The emulator knows them; a dom0
   * agent learns them from the payloads it parsed at upload (`uploaded`), reads them from Xen's
   * debug dump for one uploaded by hand (`dump`: build-ids only), or cannot tell (`unknown`: they
   * are empty, and no dependency can be matched against them). Absent: known.
   */
  facts: z.enum(['uploaded', 'dump', 'unknown']).optional(),
});
export type WirePayload = z.infer<typeof WirePayloadSchema>;

export const WireStackEntrySchema = z.object({ name: Text, buildId: BuildId });
export type WireStackEntry = z.infer<typeof WireStackEntrySchema>;

export const WireListSchema = z.object({
  host: Text,
  hypervisor: z.object({ image: Text, buildId: BuildId }),
  version: z.number().int(),
  total: z.number().int(),
  /** Xen's list->nr on return: entries not yet walked. */
  remaining: z.number().int(),
  idx: z.number().int(),
  entries: z.array(WirePayloadSchema),
  /** Applied payloads, bottom to top. */
  appliedStack: z.array(WireStackEntrySchema),
  pending: z.object({ name: Text, cmd: z.enum(['revert', 'apply', 'replace']) }).nullable(),
  /** Reboots since the fleet started; a change means every payload vanished. */
  boots: z.number().int(),
  /** The boot identity (a new id on every boot) and when the host came up. */
  boot: z.object({ id: Text, at: Text }),
});
export type WireList = z.infer<typeof WireListSchema>;

export const WireStatusSchema = z.object({ name: Text, state: PayloadStateSchema, rc: z.number().int(), reason: Text.nullable() });
export type WireStatus = z.infer<typeof WireStatusSchema>;

export const WireUploadSchema = WirePayloadSchema.extend({
  /** The .livepatch.xen_depends comparison made at upload. */
  dependencyCheck: HostDependencyCheckSchema.nullable(),
});
export type WireUpload = z.infer<typeof WireUploadSchema>;

// ---- requests ---------------------------------------------------------------------------------

/**
 * UPLOAD's request header carrying the payload's detached signature: base64 of the signature
 * file's JSON (src/payload/signing.ts SignatureFileSchema). A dom0 agent verifies it against the
 * host's own trusted keys before Xen sees the payload; the emulator ignores it.
 */
export const SIGNATURE_HEADER = 'x-fleetpatch-signature';
/** A signature file is about 400 bytes of JSON; a header longer than this is not one. */
export const MAX_SIGNATURE_HEADER_BYTES = 4096;

/** The longest a reboot may keep a host down (a day): every number the protocol takes is finite and bounded. */
export const MAX_DOWN_MS = 86_400_000;

/** The longest an ACTION may wait on the host for the work it scheduled (`waitMs`). */
export const MAX_ACTION_WAIT_MS = 60_000;

/** POST /hosts/:id/livepatch/:name/action. `cmd` is checked by the hypervisor (EINVAL), not here. */
export const ActionRequestBodySchema = z.object({
  cmd: z.string({ error: 'the body needs "cmd": "apply" | "revert" | "replace" | "unload"' }),
  /** Nanoseconds; Xen's uint32 rule (EINVAL beyond it) is the hypervisor's to apply. */
  timeoutNs: z.number({ error: '"timeoutNs" must be a finite number of nanoseconds' }).refine(Number.isFinite, '"timeoutNs" must be a finite number of nanoseconds').optional(),
  nodeps: z.boolean({ error: '"nodeps" must be true or false' }).optional(),
  /**
   * Wait on the host, up to this many milliseconds, for the work the action scheduled to finish,
   * polling its status there as `xen-livepatch apply` does: one round trip over the network instead
   * of the ACTION and then GETs. The answer then comes in two parts on the one request (NDJSON,
   * WireAction at once, then WireActionDone), so its dependency check is known even when the host
   * goes down during the work. 0 or absent: one JSON answer at once.
   */
  waitMs: z
    .number({ error: `"waitMs" must be a whole number of milliseconds from 0 to ${MAX_ACTION_WAIT_MS}` })
    .int(`"waitMs" must be a whole number of milliseconds from 0 to ${MAX_ACTION_WAIT_MS}`)
    .min(0, `"waitMs" must be a whole number of milliseconds from 0 to ${MAX_ACTION_WAIT_MS}`)
    .max(MAX_ACTION_WAIT_MS, `"waitMs" must be a whole number of milliseconds from 0 to ${MAX_ACTION_WAIT_MS}`)
    .optional(),
});
export type ActionRequestBody = z.infer<typeof ActionRequestBodySchema>;

/** POST /hosts/:id/reboot. */
export const RebootRequestBodySchema = z.object({ downMs: z.number().refine(Number.isFinite).min(0).max(MAX_DOWN_MS).optional() });
export type RebootRequestBody = z.infer<typeof RebootRequestBodySchema>;

export const WireActionSchema = z.object({
  rc: z.literal(0),
  /** Work was scheduled: poll GET until rc is no longer -EAGAIN (or, with `waitMs`, read on). */
  scheduled: z.boolean(),
  dependencyCheck: HostDependencyCheckSchema.nullable(),
});
export type WireAction = z.infer<typeof WireActionSchema>;

/**
 * The second part of a waited ACTION's answer (`waitMs`): the payload's status when the work
 * finished or the wait ended (rc -EAGAIN: not finished, poll GET); null if it is no longer loaded.
 */
export const WireActionDoneSchema = z.object({ status: WireStatusSchema.nullable() });
export type WireActionDone = z.infer<typeof WireActionDoneSchema>;

/** The media type of a waited ACTION's two-part answer: one JSON document per line. */
export const NDJSON = 'application/x-ndjson';

export const WireCallSchema = z.object({
  function: Text,
  /** The string or number it returns, or null when that cannot be known (e.g. NOPed). */
  result: z.union([Text, z.number(), z.null()]),
  kind: z.enum(['string', 'integer', 'undefined']),
  why: Text.optional(),
  providedBy: z.object({ name: Text, buildId: BuildId }).nullable(),
});
export type WireCall = z.infer<typeof WireCallSchema>;

/** How a call's result reads for a person: the string, the number, or why it cannot be told. */
export function describeCall(call: WireCall, fn = call.function): string {
  if (call.kind === 'undefined' || call.result === null) return `cannot tell what ${fn} returns: ${call.why ?? 'unknown'}`;
  return String(call.result);
}

export const WireRebootSchema = z.object({ rebooted: z.literal(true), boots: z.number().int() });
export type WireReboot = z.infer<typeof WireRebootSchema>;

export const WireFunctionsSchema = z.object({ host: Text, functions: z.array(WireCallSchema) });

// ---- errors -----------------------------------------------------------------------------------

/** Every refusal: the catalogue code, the reason in words, and for Xen's refusals the errno. */
export const WireErrorSchema = z.object({
  /** A catalogue code (src/errors.ts), or an errno name for Xen's refusals. */
  error: Text,
  message: Text,
  /** -errno, for Xen's refusals. */
  rc: z.number().int().optional(),
  errno: Text.optional(),
  code: z.number().int().optional(),
  dependencyCheck: HostDependencyCheckSchema.optional(),
  details: z
    .record(Text, z.unknown())
    .superRefine((d, ctx) => {
      const bad = findUnstorable(d);
      if (bad) ctx.addIssue({ code: 'custom', message: `${formatPath(['details', ...bad.path])} ${bad.problem}` });
    })
    .optional(),
});
export type WireError = z.infer<typeof WireErrorSchema>;

/** The HTTP status and body of an error, from the one catalogue (the server side). */
export function encodeError(e: unknown): { status: number; body: WireError } {
  if (e instanceof XenError) {
    const { dependencyCheck, ...details } = e.details as Record<string, unknown>;
    const check = HostDependencyCheckSchema.safeParse(dependencyCheck);
    return {
      status: e.httpStatus,
      body: { error: e.errnoName, message: e.message, rc: -e.errno, errno: e.errnoName, code: e.errno, ...(check.success ? { dependencyCheck: check.data } : {}), details },
    };
  }
  if (isFleetpatchError(e)) return { status: e.httpStatus, body: { error: e.code, message: e.message } };
  return { status: 500, body: { error: 'INTERNAL', message: 'the host agent failed; see its log' } };
}

/**
 * The error an answer stands for (the client side): Xen's refusal with its errno, or the
 * catalogue code the agent sent, the same error the agent raised. `who` names the host.
 */
export function decodeError(status: number, text: string, who: string, what: string): FleetpatchError {
  let body: WireError | undefined;
  try {
    const parsed = WireErrorSchema.safeParse(JSON.parse(text));
    if (parsed.success) body = parsed.data;
  } catch {
    // Not an agent's answer: described by its status alone.
  }
  if (body?.errno && body.errno in XEN_ERRNO) {
    return new XenError(body.errno as XenErrnoName, body.message, {
      hostId: who,
      ...(body.details ?? {}),
      ...(body.dependencyCheck ? { dependencyCheck: body.dependencyCheck } : {}),
    });
  }
  if (body && Object.hasOwn(FLEETPATCH_CATALOGUE, body.error)) {
    const code = body.error as FleetpatchCode;
    const message = code === 'HOST_UNAUTHORIZED' ? `${who} refused the credentials: ${body.message}` : body.message;
    return new FleetpatchError(code, message, { hostId: who, status });
  }
  return new FleetpatchError('HOST_PROTOCOL', `${who}: unexpected answer to ${what}: HTTP ${status}${body ? `: ${body.message}` : ''}`, { hostId: who, status });
}

/** Parses an answer with its schema: a host that answers another shape is HOST_PROTOCOL. */
export function parseAnswer<S extends z.ZodType>(schema: S, value: unknown, who: string, what: string): z.infer<S> {
  const r = schema.safeParse(value);
  if (r.success) return r.data;
  const issue = r.error.issues[0];
  throw new FleetpatchError('HOST_PROTOCOL', `${who}: the answer to ${what} does not follow the agent protocol (${issue ? `${issue.path.join('.') || '(top)'}: ${issue.message}` : 'invalid'})`, {
    hostId: who,
  });
}
