/**
 * The event catalogue: every fact fleetpatch records, as one zod discriminated union on `type`.
 * The schema is the type (`DomainEvent = z.infer<typeof EventSchema>`).
 *
 * Every event carries the same envelope: its `schemaVersion` (a literal per type: a new version of
 * a type is a new member plus an upcaster, never an edit of a recorded shape), when the fact
 * happened (`occurredAt`), who caused it (`actor`) and the Temporal correlation (rollout, workflow,
 * run, activity, attempt). When it was recorded is added by the store, never by the caller.
 *
 * Events about a host carry `hostId`, events about a rollout carry `rolloutId`, PayloadStored
 * carries the payload: streams.ts derives each event's stream from that. Only build-ids and names
 * appear here, never payload bytes. Pure: safe to import from workflow code.
 */
import { z } from 'zod';
import { FleetpatchError, XEN_ERRNO, type XenErrnoName } from '../errors.ts';
import { ActorSchema, type Actor } from '../domain/actor.ts';
import { AgainstSchema } from '../domain/dependency-check.ts';
import { BuildIdSchema, LoadedPayloadSchema, PayloadRefSchema, type LoadedPayload, type PayloadRef } from '../domain/payload-ref.ts';
import { formatPath, printable, StorableString } from '../domain/text.ts';

// The shared vocabulary (src/domain) is the catalogue's too.
export { ActorSchema, AgainstSchema, BuildIdSchema, LoadedPayloadSchema, PayloadRefSchema, type Actor, type LoadedPayload, type PayloadRef };

/** Every text of every event: nothing PostgreSQL cannot store (NUL, a lone surrogate) can be recorded. */
const Text = StorableString;
const Sha256Schema = Text.regex(/^[0-9a-f]{64}$/, 'must be a sha256 in lowercase hex');
const Name = Text.min(1).max(127);
const Id = Text.min(1).max(200);
const Reason = Text.min(1).max(2000);
const Count = z.number().int().min(0);

export const CorrelationSchema = z.object({
  rolloutId: Id.optional(),
  workflowId: Id.optional(),
  runId: Id.optional(),
  activityId: Id.optional(),
  attempt: z.number().int().min(1).optional(),
});
export type Correlation = z.infer<typeof CorrelationSchema>;

const ERRNO_NAMES = Object.keys(XEN_ERRNO) as [XenErrnoName, ...XenErrnoName[]];
export const ErrnoNameSchema = z.enum(ERRNO_NAMES);

/**
 * Any ISO-8601 instant, kept as the UTC millisecond form `Date#toISOString` prints, so that what
 * the store hashes is exactly what a timestamptz column gives back.
 */
export const InstantSchema = z.iso.datetime({ offset: true }).transform((s) => new Date(s).toISOString());

const envelope = {
  occurredAt: InstantSchema,
  actor: ActorSchema,
  correlation: CorrelationSchema.default({}),
};

function event<T extends string, V extends number, S extends z.ZodRawShape>(type: T, schemaVersion: V, shape: S) {
  return z.object({ type: z.literal(type), schemaVersion: z.literal(schemaVersion), ...envelope, ...shape });
}

const hostFacts = { hostId: Id };
const rolloutFacts = { rolloutId: Id };

export const HostSnapshotSchema = z.object({
  hypervisorBuildId: BuildIdSchema.optional(),
  /** Bottom of the stack first. */
  appliedStack: z.array(PayloadRefSchema),
  /** Every loaded payload, in upload order. */
  loaded: z.array(LoadedPayloadSchema),
});
export type HostSnapshot = z.infer<typeof HostSnapshotSchema>;

export const StackDifferenceSchema = z.object({
  where: z.enum(['applied', 'loaded', 'hypervisor']),
  /** Index in the applied stack (bottom = 0), for `applied`. */
  index: z.number().int().min(0).optional(),
  replayed: Text.nullable(),
  live: Text.nullable(),
  description: Reason,
});
export type StackDifference = z.infer<typeof StackDifferenceSchema>;

const HostFailureSchema = z.object({
  stage: z.enum(['read', 'upload', 'check', 'apply', 'replace', 'verify', 'revert']),
  code: Text.min(1),
  reason: Reason,
  unreachable: z.boolean(),
});

const WaveCounts = { planned: Count, patched: Count, already: Count, failed: Count, unreachable: Count };

export const PayloadStored = event('PayloadStored', 1, {
  payload: PayloadRefSchema,
  sha256: Sha256Schema,
  size: z.number().int().positive(),
  /** Detached signature metadata; the signature bytes stay in the payload store. */
  signature: z.object({ algorithm: Text.min(1), keyId: Id }).nullable(),
  depends: BuildIdSchema.optional(),
  xenDepends: BuildIdSchema.nullable().optional(),
});

/**
 * A stored payload was refused when it was read for a rollout, an upload or a restore: its bytes
 * do not hash to the digest PayloadStored recorded (or nothing recorded them), or it lacks a
 * signature by a trusted key. In the payload's stream; `keyId` is the key its signature names
 * (null: unsigned), `trustedKeys` the keys it was checked against.
 */
export const PayloadRefused = event('PayloadRefused', 1, {
  payload: PayloadRefSchema,
  check: z.enum(['digest', 'signature']),
  code: z.enum(['PAYLOAD_TAMPERED', 'SIGNATURE_INVALID']),
  reason: Reason,
  /** The sha256 PayloadStored recorded (null: no PayloadStored records these bytes). */
  expectedSha256: Sha256Schema.nullable().optional(),
  /** What the stored bytes hash to now. */
  foundSha256: Sha256Schema.optional(),
  keyId: Id.nullable().optional(),
  trustedKeys: z.array(Id).optional(),
});

export const PayloadUploaded = event('PayloadUploaded', 1, { ...hostFacts, payload: PayloadRefSchema });

export const DependencyChecked = event('DependencyChecked', 1, {
  ...hostFacts,
  payload: PayloadRefSchema,
  phase: z.enum(['preflight', 'upload', 'apply']),
  /** `depends` (the stack) or `xen_depends` (the hypervisor it was built for). */
  on: z.enum(['depends', 'xen_depends']).default('depends'),
  /** What the payload says it needs. */
  expected: BuildIdSchema,
  /** What the host had; null when the host could not be read. */
  found: BuildIdSchema.nullable(),
  against: AgainstSchema,
  outcome: z.enum(['match', 'mismatch', 'unreachable']),
  /** The errno Xen refuses with (EINVAL for a dependency mismatch). */
  errno: ErrnoNameSchema.optional(),
  reason: Reason.optional(),
});

export const PayloadApplied = event('PayloadApplied', 1, { ...hostFacts, payload: PayloadRefSchema, nodeps: z.boolean().optional() });
export const PayloadReverted = event('PayloadReverted', 1, { ...hostFacts, payload: PayloadRefSchema });
export const PayloadReplaced = event('PayloadReplaced', 1, {
  ...hostFacts,
  payload: PayloadRefSchema,
  /** The stack REPLACE reverted, bottom first; those payloads stay loaded as CHECKED. */
  replaced: z.array(PayloadRefSchema),
});
export const PayloadUnloaded = event('PayloadUnloaded', 1, { ...hostFacts, payload: PayloadRefSchema });

/** A refused or failed action: why, in words, with the errno or fleetpatch code behind it. */
export const PayloadActionFailed = event('PayloadActionFailed', 1, {
  ...hostFacts,
  action: z.enum(['upload', 'apply', 'revert', 'replace', 'unload']),
  payload: PayloadRefSchema,
  code: Text.min(1),
  errno: ErrnoNameSchema.optional(),
  reason: Reason,
});

export const HealthChecked = event('HealthChecked', 1, {
  ...hostFacts,
  outcome: z.enum(['healthy', 'unhealthy', 'unreachable']),
  check: z.object({ call: Name, expect: Text }).optional(),
  observed: Text.optional(),
  reason: Reason.optional(),
});

/**
 * A rollout is about to change this host: what it ran before, so a restore knows what to bring
 * back and the audit can say what the stack should be. In the host's stream (it is a fact about
 * the host), recorded once per rollout and host, before the first change.
 */
export const HostPatchStarted = event('HostPatchStarted', 1, {
  ...hostFacts,
  /** Named `rollout`, not `rolloutId`: the event belongs to the host's stream. */
  rollout: Id,
  formerStack: z.array(PayloadRefSchema),
  formerLoaded: z.array(PayloadRefSchema),
  /** What the plan's verify function returned before (absent: the plan verifies nothing). */
  formerResult: z.object({ call: Name, kind: z.enum(['string', 'integer', 'undefined']), value: Text.nullable() }).optional(),
  /** The boot the host was in: a later reboot makes this former state moot. */
  bootId: Id.optional(),
});

export const HostRebooted = event('HostRebooted', 1, {
  ...hostFacts,
  /** The hypervisor build the host came back with. */
  hypervisorBuildId: BuildIdSchema.optional(),
  /** The boot identity the host came back with, and when it came up. */
  bootId: Id.optional(),
  bootedAt: InstantSchema.optional(),
  /** What the record says the host ran before: a reboot loses every live patch. */
  lostStack: z.array(PayloadRefSchema).optional(),
  lostLoaded: z.array(LoadedPayloadSchema).optional(),
  reason: Reason.optional(),
});

/** Replaying the host's events gave another state than the live host reports. */
export const DriftDetected = event('DriftDetected', 1, {
  ...hostFacts,
  replayed: HostSnapshotSchema,
  live: HostSnapshotSchema,
  differences: z.array(StackDifferenceSchema).min(1),
});

export const RolloutStarted = event('RolloutStarted', 1, {
  ...rolloutFacts,
  planName: Name,
  mode: z.enum(['apply', 'replace', 'stack']),
  payloads: z.array(PayloadRefSchema.extend({ depends: BuildIdSchema, xenDepends: BuildIdSchema.nullable() })).min(1),
  waves: z.array(z.object({ name: Name })).min(1),
  reason: Reason.optional(),
});

/** What the preflight planned: so the report shows every wave's size, also of waves that never ran. */
export const PreflightCompleted = event('PreflightCompleted', 1, {
  ...rolloutFacts,
  selected: Count,
  targets: Count,
  alreadyPatched: Count,
  incompatible: Count,
  unreachable: Count,
  /** Hosts carrying payloads a REPLACE could not put back (writable data, bytes never stored). */
  unrestorable: Count.optional(),
  waves: z.array(z.object({ name: Name, planned: Count })),
});

export const WaveStarted = event('WaveStarted', 1, { ...rolloutFacts, wave: Name, waveIndex: Count, plannedHosts: Count });

/** One host's outcome in a wave: the rollout's accounting (the host stream has the steps). */
/** How a restore to the former stack ended (after a host's failure, or in a rollback). */
export const RestoreOutcomeSchema = z.enum(['restored', 'nothing-to-do', 'stack-grew', 'unrecoverable', 'failed']);

export const HostPatchFinished = event('HostPatchFinished', 1, {
  ...rolloutFacts,
  ...hostFacts,
  wave: Name,
  outcome: z.enum(['patched', 'already', 'failed']),
  applied: z.array(PayloadRefSchema),
  failure: HostFailureSchema.optional(),
  /** Recorded by earlier versions: true when a failure after apply was reverted. */
  revertedAfterFailure: z.boolean().optional(),
  /** A failed host is restored to its former stack at once: how that went, and where it stands. */
  restore: z
    .object({ outcome: RestoreOutcomeSchema, stackNow: z.array(PayloadRefSchema), formerStack: z.array(PayloadRefSchema), reason: Reason.optional() })
    .optional(),
});

export const WaveFinished = event('WaveFinished', 1, {
  ...rolloutFacts,
  wave: Name,
  waveIndex: Count,
  outcome: z.enum(['succeeded', 'failed', 'skipped']),
  ...WaveCounts,
  reason: Reason.optional(),
});

export const RolloutPaused = event('RolloutPaused', 1, { ...rolloutFacts, reason: Reason, wave: Name.optional() });
export const RolloutResumed = event('RolloutResumed', 1, { ...rolloutFacts, reason: Reason.optional() });
export const RolloutAborted = event('RolloutAborted', 1, { ...rolloutFacts, reason: Reason });
/** A person let the rollout go on after `wave`. */
export const ApprovalGiven = event('ApprovalGiven', 1, { ...rolloutFacts, wave: Name, reason: Reason.optional() });
export const RollbackStarted = event('RollbackStarted', 1, { ...rolloutFacts, reason: Reason, hosts: Count });

export const HostRollbackFinished = event('HostRollbackFinished', 1, {
  ...rolloutFacts,
  ...hostFacts,
  outcome: z.enum(['rolled-back', 'nothing-to-do', 'stack-grew', 'unrecoverable', 'failed']),
  reverted: z.array(PayloadRefSchema),
  reapplied: z.array(PayloadRefSchema),
  /** Where the host stands after the rollback, and where it should (absent in early records). */
  stackNow: z.array(PayloadRefSchema).optional(),
  formerStack: z.array(PayloadRefSchema).optional(),
  reason: Reason.optional(),
});

export const RollbackFinished = event('RollbackFinished', 1, {
  ...rolloutFacts,
  rolledBack: Count,
  stackGrew: Count,
  failed: Count,
  nothingToDo: Count,
  unrecoverable: Count.optional(),
  /** rolled-back only when every host the rollout touched is back to its former stack. */
  outcome: z.enum(['rolled-back', 'rollback-incomplete']).optional(),
});

/**
 * A person asked to repair a finished rollout: every host it patched was read again, and the ones
 * that lost the payload since (a reboot) are patched again under the same rollout.
 */
export const RepairStarted = event('RepairStarted', 1, {
  ...rolloutFacts,
  /** The repair's name in the rollout (repair-1, repair-2, ...), also the wave its hosts run in. */
  repair: Name,
  reason: Reason,
  /** Hosts read, and those found without the rollout's payload. */
  checked: Count,
  lost: Count,
});

export const RepairFinished = event('RepairFinished', 1, { ...rolloutFacts, repair: Name, patched: Count, failed: Count, reason: Reason.optional() });

/** Final statuses; `rollback-incomplete`: a rollback ran and some hosts are not back (see its report). */
export const FinalRolloutStatusSchema = z.enum(['succeeded', 'failed', 'rolled-back', 'rollback-incomplete', 'aborted']);

export const RolloutFinished = event('RolloutFinished', 1, {
  ...rolloutFacts,
  status: FinalRolloutStatusSchema,
  reason: Reason.optional(),
});

/** The rollout waits at its gate after `wave` until a person approves going on. */
export const ApprovalRequested = event('ApprovalRequested', 1, { ...rolloutFacts, wave: Name, requireDifferentApprover: z.boolean().optional() });

/**
 * Who may act through the HTTP API is itself audited, in the stream `access-<token name>`: a token
 * made (its name, role, and the first 12 hex digits of its sha256, never the token) and revoked.
 */
export const TokenRoleSchema = z.enum(['viewer', 'operator', 'admin']);
const TokenName = Text.regex(/^[A-Za-z0-9][A-Za-z0-9._@-]{0,62}$/, 'must be 1 to 63 letters, digits, ".", "_", "@" or "-"');
export const TokenCreated = event('TokenCreated', 1, { tokenName: TokenName, role: TokenRoleSchema, fingerprint: Text.regex(/^[0-9a-f]{12}$/) });
export const TokenRevoked = event('TokenRevoked', 1, { tokenName: TokenName, reason: Reason.optional() });

/**
 * A host's life in the fleet (docs/enrolment.md), in its host stream, hash-chained like every
 * other fact about it: a join token issued (only its sha256 is ever stored), the host enrolled
 * with the certificate the fleet CA issued for its own key, a certificate renewed by a later
 * enrolment, its labels changed, the host retired. The inventory of enrolled hosts is a fold of
 * these (projections/fleet-hosts.ts).
 */
export const EnrolledHostIdSchema = Text.regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/, 'must be 1 to 63 letters, digits, ".", "_" or "-", starting with a letter or digit');
const LABEL_KEY = /^[A-Za-z0-9][A-Za-z0-9._/-]{0,62}$/;
// The key is checked here rather than by z.record's key schema, whose refusal ("Invalid key in
// record") would not say what a label name must be.
export const LabelsSchema = z.record(Text, Text.max(200, 'a label value must be at most 200 characters')).superRefine((l, ctx) => {
  const keys = Object.keys(l);
  if (keys.length > 64) ctx.addIssue({ code: 'custom', message: `at most 64 labels, not ${keys.length}` });
  for (const k of keys) {
    if (!LABEL_KEY.test(k)) ctx.addIssue({ code: 'custom', path: [k], message: `the label name ${JSON.stringify(printable(k.slice(0, 40)))} is not 1 to 63 letters, digits, ".", "_", "/" or "-", starting with a letter or digit` });
  }
});
/** Where the worker reaches the host's agent: an https URL with no path, query or credentials. */
export const AgentAddressSchema = Text.max(2000).refine((v) => {
  try {
    const u = new URL(v);
    return (u.protocol === 'https:' || u.protocol === 'http:') && u.username === '' && u.password === '' && (u.pathname === '/' || u.pathname === '') && u.search === '' && u.hash === '' && u.hostname !== '';
  } catch {
    return false;
  }
}, 'must be an https://host:port URL (http:// for an emulated host) with no path, query or credentials');
export const CertificateFactsSchema = z.object({ fingerprint: Sha256Schema, serial: Text.regex(/^[0-9a-f]{2,40}$/), notAfter: InstantSchema });
const enrolmentFacts = { hostId: EnrolledHostIdSchema };
export const JoinTokenIssued = event('JoinTokenIssued', 1, { ...enrolmentFacts, tokenSha256: Sha256Schema, expiresAt: InstantSchema, labels: LabelsSchema });
export const HostEnrolled = event('HostEnrolled', 1, {
  ...enrolmentFacts,
  labels: LabelsSchema,
  address: AgentAddressSchema,
  hypervisorBuildId: BuildIdSchema,
  certificate: CertificateFactsSchema,
  /** The join token it used (its sha256), so the token is used exactly once. */
  tokenSha256: Sha256Schema,
});
export const HostCertificateRenewed = event('HostCertificateRenewed', 1, {
  ...enrolmentFacts,
  address: AgentAddressSchema,
  hypervisorBuildId: BuildIdSchema,
  certificate: CertificateFactsSchema,
  tokenSha256: Sha256Schema,
});
export const HostLabelsChanged = event('HostLabelsChanged', 1, { ...enrolmentFacts, labels: LabelsSchema });
export const HostRetired = event('HostRetired', 1, { ...enrolmentFacts, reason: Reason });

export const EventSchema = z.discriminatedUnion('type', [
  PayloadStored,
  PayloadRefused,
  PayloadUploaded,
  DependencyChecked,
  PayloadApplied,
  PayloadReverted,
  PayloadReplaced,
  PayloadUnloaded,
  PayloadActionFailed,
  HealthChecked,
  HostPatchStarted,
  HostRebooted,
  DriftDetected,
  RolloutStarted,
  PreflightCompleted,
  WaveStarted,
  HostPatchFinished,
  WaveFinished,
  RolloutPaused,
  RolloutResumed,
  RolloutAborted,
  ApprovalGiven,
  RollbackStarted,
  HostRollbackFinished,
  RollbackFinished,
  RepairStarted,
  RepairFinished,
  RolloutFinished,
  ApprovalRequested,
  TokenCreated,
  TokenRevoked,
  JoinTokenIssued,
  HostEnrolled,
  HostCertificateRenewed,
  HostLabelsChanged,
  HostRetired,
]);

/** An event as stored and read back (defaults applied, instants normalised). */
export type DomainEvent = z.infer<typeof EventSchema>;
/** What a caller may hand to the store (correlation and `on` may be left out). */
export type DomainEventInput = z.input<typeof EventSchema>;
export type EventType = DomainEvent['type'];
export type EventOfType<T extends EventType> = Extract<DomainEvent, { type: T }>;

export const EVENT_TYPES = EventSchema.options.map((o) => o.shape.type.value) as EventType[];

/** The envelope fields every event has; the rest of an event is its data. */
export const ENVELOPE_FIELDS = ['type', 'schemaVersion', 'occurredAt', 'actor', 'correlation'] as const;

export type EventData = Record<string, unknown>;

/** Splits an event into envelope and data, the way the store keeps it. */
export function splitEvent(event: DomainEvent): { envelope: Pick<DomainEvent, (typeof ENVELOPE_FIELDS)[number]>; data: EventData } {
  const { type, schemaVersion, occurredAt, actor, correlation, ...data } = event;
  return { envelope: { type, schemaVersion, occurredAt, actor, correlation } as Pick<DomainEvent, (typeof ENVELOPE_FIELDS)[number]>, data };
}

/**
 * What parseEvent produced. The group commit validates each fact when it is submitted (so a bad
 * one fails its submitter, not the whole flush) and hands the store that result; the store then
 * need not validate it again. Only this module adds to it, and nothing mutates a parsed event.
 */
const parsedEvents = new WeakSet<object>();

/** Validates an event against the catalogue; EVENT_INVALID names every problem. */
export function parseEvent(input: unknown): DomainEvent {
  if (typeof input === 'object' && input !== null && parsedEvents.has(input)) return input as DomainEvent;
  const result = EventSchema.safeParse(input);
  if (result.success) {
    parsedEvents.add(result.data);
    return result.data;
  }
  const type = typeof input === 'object' && input !== null && 'type' in input ? printable(String((input as { type: unknown }).type).slice(0, 100)) : '(no type)';
  const problems = result.error.issues.map((i) => `${formatPath(i.path)}: ${printable(i.message)}`);
  throw new FleetpatchError('EVENT_INVALID', `event ${type} does not match the catalogue: ${problems.join('; ')}`, {
    type,
    issues: result.error.issues.map((i) => ({ path: formatPath(i.path), message: printable(i.message) })),
  });
}
