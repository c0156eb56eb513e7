/**
 * The one error catalogue of fleetpatch.
 *
 * It starts with the Xen errnos the live-patch subsystem returns (same numbers as Linux), and adds
 * fleetpatch's own codes. Every entry says whether a retry can help and which HTTP status the
 * emulator and API answer with, so activities, the CLI and the HTTP layers all classify an error
 * the same way. Every error a user sees carries a sentence in words; the errno alone ("Error 22")
 * is exactly the operator pain fleetpatch exists to fix.
 */

import { maskSecrets } from './secrets.ts';

/** Xen's errno values, as in xen/include/public/errno.h (identical to Linux on x86). */
export const XEN_ERRNO = {
  ENOENT: 2,
  E2BIG: 7,
  EAGAIN: 11,
  ENOMEM: 12,
  EFAULT: 14,
  EBUSY: 16,
  EEXIST: 17,
  EINVAL: 22,
  ERANGE: 34,
  ENOSYS: 38,
  ENODATA: 61,
  EOVERFLOW: 75,
  EOPNOTSUPP: 95,
  ENOBUFS: 105,
} as const;

export type XenErrnoName = keyof typeof XEN_ERRNO;

/** strerror(3) texts, which xen-livepatch prints after "Error <n>: ". */
export const STRERROR: Record<XenErrnoName, string> = {
  ENOENT: 'No such file or directory',
  E2BIG: 'Argument list too long',
  EAGAIN: 'Resource temporarily unavailable',
  ENOMEM: 'Cannot allocate memory',
  EFAULT: 'Bad address',
  EBUSY: 'Device or resource busy',
  EEXIST: 'File exists',
  EINVAL: 'Invalid argument',
  ERANGE: 'Numerical result out of range',
  ENOSYS: 'Function not implemented',
  ENODATA: 'No data available',
  EOVERFLOW: 'Value too large for defined data type',
  EOPNOTSUPP: 'Operation not supported',
  ENOBUFS: 'No buffer space available',
};

const ERRNO_BY_NUMBER = new Map<number, XenErrnoName>(
  Object.entries(XEN_ERRNO).map(([name, n]) => [n, name as XenErrnoName]),
);

export function errnoName(n: number): XenErrnoName | undefined {
  return ERRNO_BY_NUMBER.get(Math.abs(n));
}

export function strerror(n: number): string {
  const name = errnoName(n);
  return name ? STRERROR[name] : `Unknown error ${Math.abs(n)}`;
}

interface CatalogueEntry {
  /** What the code means, for docs and for `--help` texts. */
  readonly summary: string;
  /** HTTP status the emulator / API answer with. */
  readonly httpStatus: number;
  /** Whether trying the same thing again later can succeed. */
  readonly retryable: boolean;
}

/**
 * fleetpatch's own codes. Xen errnos are codes too (see XEN_CATALOGUE below), so a caller can
 * switch on `error.code` alone.
 */
export const FLEETPATCH_CATALOGUE = {
  CONFIG_INVALID: { summary: 'a setting in the environment is invalid', httpStatus: 500, retryable: false },
  USAGE: { summary: 'the command line is wrong', httpStatus: 400, retryable: false },
  ARGUMENT: { summary: 'a value given to fleetpatch is not valid: a name, a role, a time, a build-id, a number out of range', httpStatus: 400, retryable: false },
  TOOL_MISSING: { summary: 'a required external program is not available', httpStatus: 500, retryable: false },
  DATABASE_UNAVAILABLE: { summary: 'PostgreSQL cannot be reached', httpStatus: 503, retryable: true },
  TEMPORAL_UNAVAILABLE: { summary: 'the Temporal server cannot be reached', httpStatus: 503, retryable: true },
  TLS_MATERIAL_INVALID: { summary: 'a TLS certificate, private key or CA file a connection setting names is unusable: missing or unreadable, not PEM, expired or not yet valid, or a key that does not belong to its certificate (docs/operations.md#connections)', httpStatus: 500, retryable: false },
  TLS_REFUSED: { summary: "a TLS handshake failed: the server's certificate is not signed by the CA given or is for another name, the server does not speak TLS, or it refused the client certificate (none, expired, or not one it trusts) (docs/operations.md#connections)", httpStatus: 503, retryable: false },
  MIGRATION_FAILED: { summary: 'a database migration failed', httpStatus: 500, retryable: false },
  ELF_MALFORMED: { summary: 'the file is not a well-formed ELF object', httpStatus: 400, retryable: false },
  SIGNATURE_INVALID: { summary: 'a payload signature does not verify', httpStatus: 400, retryable: false },
  KEY_INVALID: { summary: 'a signing or public key file is unusable', httpStatus: 400, retryable: false },
  PAYLOAD_NOT_FOUND: { summary: 'no stored payload has that build-id', httpStatus: 404, retryable: false },
  PAYLOAD_CONFLICT: { summary: 'different bytes are already stored under that build-id', httpStatus: 409, retryable: false },
  IMAGE_INVALID: { summary: 'a hypervisor image cannot be used', httpStatus: 400, retryable: false },
  PAYLOAD_SPEC_INVALID: { summary: 'a payload build spec is invalid', httpStatus: 400, retryable: false },
  HOST_NOT_FOUND: { summary: 'no host with that id', httpStatus: 404, retryable: false },
  HOST_UNAUTHORIZED: { summary: "the host agent needs credentials and got none it can check: a bearer token (Authorization: Bearer <token>), or over mutual TLS a client certificate that chains to the fleet CA", httpStatus: 401, retryable: false },
  HOST_FORBIDDEN: { summary: "the credentials are not for this: the bearer token is not this host's (a host agent takes only its own token; /admin/* only the admin token), or the client certificate is not a worker's (fleetpatch://worker/<name>)", httpStatus: 403, retryable: false },
  HOST_UNREACHABLE: { summary: 'the host cannot be reached', httpStatus: 503, retryable: true },
  HOST_TIMEOUT: { summary: 'the host did not answer in time', httpStatus: 504, retryable: true },
  HOST_PROTOCOL: { summary: 'the host answered something fleetpatch does not understand', httpStatus: 502, retryable: true },
  HOST_TOOL_OUTPUT: { summary: 'a Xen tool on the host (xen-livepatch, xl) printed something fleetpatch does not understand, or more than it reads; the line is quoted and nothing is guessed from it', httpStatus: 502, retryable: false },
  HOST_TOOL_FAILED: { summary: 'a Xen tool on the host could not do its work for a reason that is not one of the live-patch errnos: no hypervisor interface (not dom0, not root), a policy or version mismatch (EPERM, EACCES), an unreadable payload file, arguments it does not take, a crash', httpStatus: 502, retryable: false },
  HOST_TOOL_TIMEOUT: { summary: 'a Xen tool on the host did not finish in time and was killed with every process it started', httpStatus: 504, retryable: true },
  REQUEST_INVALID: { summary: 'a request to a host agent is malformed (a body, a parameter)', httpStatus: 400, retryable: false },
  PAYLOAD_UNSIGNED: { summary: "the host's agent refuses a payload that comes without a signature (X-Fleetpatch-Signature): every payload it runs must be signed by a key in the host's own trusted-keys.json", httpStatus: 403, retryable: false },
  PAYLOAD_UNTRUSTED: { summary: "the host's agent refuses a payload whose signature does not verify against the host's own trusted keys (another key, other bytes, a forged signature)", httpStatus: 403, retryable: false },
  PAYLOAD_REFUSED: { summary: "the host's agent refuses a payload it could not account for once loaded (a .modinfo string with a newline would print as a row of its own in xen-livepatch list)", httpStatus: 422, retryable: false },
  AGENT_UNSUPPORTED: { summary: "a real host's agent does not offer this route (reboot: a dom0 is rebooted by its operator, not over the agent protocol)", httpStatus: 501, retryable: false },
  TLS_INVALID: { summary: "the agent's TLS files (<dir>/tls/key.pem, cert.pem, ca.pem) are missing, unreadable, too open, or do not belong together", httpStatus: 500, retryable: false },
  REQUEST_TOO_LARGE: { summary: 'a request body is larger than a host agent takes', httpStatus: 413, retryable: false },
  ACTION_TIMEOUT: { summary: 'an asynchronous hypervisor action did not complete in time', httpStatus: 504, retryable: true },
  HOST_REBOOTED: { summary: 'the host rebooted again and again while it was being patched (every reboot drops its payloads); left for a later run', httpStatus: 409, retryable: true },
  CLAIM_LOST: { summary: 'another batch took this host over (the lease of the one that held it lapsed); that batch finishes it', httpStatus: 409, retryable: true },
  VERIFY_FAILED: { summary: 'a patched function does not return what the plan expects', httpStatus: 409, retryable: false },
  FLEET_FILE_INVALID: { summary: 'the fleet file is missing or malformed', httpStatus: 400, retryable: false },
  FAULTS_INVALID: { summary: 'the fault-injection file is malformed', httpStatus: 400, retryable: false },
  DOUBLE_CONFIG_INVALID: { summary: 'a Xen tool double does not know which emulated host to answer for (its config file or environment is missing or malformed)', httpStatus: 500, retryable: false },
  STREAM_VERSION_CONFLICT: { summary: 'the event stream moved on since it was read', httpStatus: 409, retryable: true },
  EVENT_INVALID: { summary: 'an event does not match the catalogue', httpStatus: 400, retryable: false },
  EVENT_NOT_FOUND: { summary: 'no event at that position', httpStatus: 404, retryable: false },
  PLAN_INVALID: { summary: 'the rollout plan is invalid', httpStatus: 400, retryable: false },
  ROLLOUT_NOT_FOUND: { summary: 'no rollout with that id', httpStatus: 404, retryable: false },
  ROLLOUT_STATE: { summary: 'the rollout is not in a state that allows this', httpStatus: 409, retryable: false },
  FILE_ERROR: { summary: 'a file exists but cannot be read or written (permissions, I/O error); details.errno says why', httpStatus: 500, retryable: false },
  FILE_TOO_LARGE: { summary: 'a file is larger than fleetpatch reads for its kind (payloads: 2 MiB, like Xen; plans: 1 MiB)', httpStatus: 413, retryable: false },
  PAYLOAD_TAMPERED: { summary: 'stored payload bytes do not match the digest recorded, hash-chained, when they were stored', httpStatus: 409, retryable: false },
  STREAM_NOT_FOUND: { summary: 'no event stream with that name', httpStatus: 404, retryable: false },
  NO_WORKER: { summary: 'no fleetpatch worker polls the task queue, so a running rollout cannot answer', httpStatus: 503, retryable: true },
  AUTH_REQUIRED: { summary: 'the HTTP API needs a valid bearer token (Authorization: Bearer <token>); none was given, or it is unknown or revoked', httpStatus: 401, retryable: false },
  FORBIDDEN: { summary: "the API token's role does not allow this (viewer: read and audit; operator: rollouts and approvals; admin: payloads and tokens)", httpStatus: 403, retryable: false },
  ROUTE_NOT_FOUND: { summary: 'no such route (the HTTP API lists its routes at /openapi.json; a host agent\'s are in docs/hypervisor.md)', httpStatus: 404, retryable: false },
  METHOD_NOT_ALLOWED: { summary: 'the route does not take that HTTP method', httpStatus: 405, retryable: false },
  BODY_INVALID: { summary: 'the request body, query or path does not match the schema; `field` names the first problem', httpStatus: 400, retryable: false },
  BODY_TOO_LARGE: { summary: 'the request body is larger than the API takes for that route', httpStatus: 413, retryable: false },
  REQUEST_TIMEOUT: { summary: 'the request did not arrive in time: the HTTP API waits a bounded time for its headers and for all of it, body included (docs/api.md#limits)', httpStatus: 408, retryable: true },
  RESPONSE_TIMEOUT: { summary: 'the HTTP API did not finish answering in time (docs/api.md#limits); what was asked may still be under way: look before asking again', httpStatus: 503, retryable: true },
  SHUTTING_DOWN: { summary: 'the HTTP API is shutting down; send the request again (to another instance, or once this one is back)', httpStatus: 503, retryable: true },
  MEDIA_TYPE_UNSUPPORTED: { summary: 'the request body has a content type the route does not take (JSON: application/json)', httpStatus: 415, retryable: false },
  TOKEN_NOT_FOUND: { summary: 'no API token with that name', httpStatus: 404, retryable: false },
  TOKEN_EXISTS: { summary: 'an API token with that name exists; revoke it first or choose another name', httpStatus: 409, retryable: false },
  CA_MISSING: { summary: 'there is no fleet CA in the data dir (<FLEETPATCH_DATA_DIR>/ca/ca.pem, ca.key.pem): make one with `fleetpatch ca init`', httpStatus: 503, retryable: false },
  CA_EXISTS: { summary: 'the fleet CA exists already; fleetpatch never replaces it (every certificate of the fleet chains to it)', httpStatus: 409, retryable: false },
  CA_INVALID: { summary: 'the fleet CA files cannot be used: unreadable, not a CA certificate, or the key is not the certificate\'s', httpStatus: 500, retryable: false },
  JOIN_TOKEN_MALFORMED: { summary: 'a join token is not of the shape `fleetpatch hosts enroll` prints (fpj_, 12 hex digits, _, 43 base64url characters)', httpStatus: 400, retryable: false },
  JOIN_TOKEN_FOREIGN: { summary: 'a join token was not issued by this control plane: another fleet\'s CA, or never issued here', httpStatus: 401, retryable: false },
  JOIN_TOKEN_EXPIRED: { summary: 'a join token is past its expiry; issue another with `fleetpatch hosts enroll <id>`', httpStatus: 401, retryable: false },
  JOIN_TOKEN_USED: { summary: 'a join token was used already (it is good for one enrolment); issue another with `fleetpatch hosts enroll <id>`', httpStatus: 409, retryable: false },
  CSR_INVALID: { summary: 'a certificate signing request is malformed, too large, not self-signed by its key, of a key type the fleet does not use, or names another host than its join token', httpStatus: 400, retryable: false },
  CERTIFICATE_INVALID: { summary: 'a certificate cannot be used: expired or not yet valid, not issued by the fleet CA, or not naming what it must (host id, worker), or unreadable', httpStatus: 401, retryable: false },
  HOST_RETIRED: { summary: 'the host is retired: its facts stay, rollouts no longer select it; enrol it again to bring it back', httpStatus: 409, retryable: false },
  INTERNAL: { summary: 'an error fleetpatch did not expect: a bug (LOG_LEVEL=debug shows its stack)', httpStatus: 500, retryable: false },
} as const satisfies Record<string, CatalogueEntry>;

/** Xen errnos as catalogue entries: which ones a later retry can cure. */
export const XEN_CATALOGUE: Record<XenErrnoName, CatalogueEntry> = {
  ENOENT: { summary: STRERROR.ENOENT, httpStatus: 404, retryable: false },
  E2BIG: { summary: STRERROR.E2BIG, httpStatus: 400, retryable: false },
  EAGAIN: { summary: STRERROR.EAGAIN, httpStatus: 409, retryable: true },
  ENOMEM: { summary: STRERROR.ENOMEM, httpStatus: 507, retryable: true },
  EFAULT: { summary: STRERROR.EFAULT, httpStatus: 400, retryable: false },
  EBUSY: { summary: STRERROR.EBUSY, httpStatus: 409, retryable: true },
  EEXIST: { summary: STRERROR.EEXIST, httpStatus: 409, retryable: false },
  EINVAL: { summary: STRERROR.EINVAL, httpStatus: 422, retryable: false },
  ERANGE: { summary: STRERROR.ERANGE, httpStatus: 400, retryable: false },
  ENOSYS: { summary: STRERROR.ENOSYS, httpStatus: 501, retryable: false },
  ENODATA: { summary: STRERROR.ENODATA, httpStatus: 422, retryable: false },
  EOVERFLOW: { summary: STRERROR.EOVERFLOW, httpStatus: 422, retryable: false },
  EOPNOTSUPP: { summary: STRERROR.EOPNOTSUPP, httpStatus: 422, retryable: false },
  ENOBUFS: { summary: STRERROR.ENOBUFS, httpStatus: 507, retryable: true },
};

export type FleetpatchCode = keyof typeof FLEETPATCH_CATALOGUE;
export type ErrorCode = FleetpatchCode | XenErrnoName;

/** Whether a text (an ApplicationFailure's type, a stored event's code) is a code of the catalogue. */
export function isErrorCode(code: string): code is ErrorCode {
  return Object.hasOwn(FLEETPATCH_CATALOGUE, code) || Object.hasOwn(XEN_CATALOGUE, code);
}

export function catalogueEntry(code: ErrorCode): CatalogueEntry {
  return (FLEETPATCH_CATALOGUE as Record<string, CatalogueEntry>)[code] ?? XEN_CATALOGUE[code as XenErrnoName];
}

/**
 * The base of every error fleetpatch raises on purpose. `message` is the sentence a person reads;
 * `details` holds the structured facts (expected/found build-ids, the setting's name, ...).
 */
export class FleetpatchError extends Error {
  readonly code: ErrorCode;
  readonly retryable: boolean;
  readonly httpStatus: number;
  readonly details: Readonly<Record<string, unknown>>;

  constructor(code: ErrorCode, message: string, details: Record<string, unknown> = {}, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'FleetpatchError';
    this.code = code;
    const entry = catalogueEntry(code);
    this.retryable = entry.retryable;
    this.httpStatus = entry.httpStatus;
    this.details = details;
  }

  toJSON(): { code: ErrorCode; message: string; details: Readonly<Record<string, unknown>> } {
    return { code: this.code, message: this.message, details: this.details };
  }
}

/**
 * A refusal by (emulated) Xen: an errno plus the reason Xen would only print on its console.
 * `errno` is positive; Xen returns it negated.
 */
export class XenError extends FleetpatchError {
  readonly errnoName: XenErrnoName;
  readonly errno: number;

  constructor(errnoName: XenErrnoName, reason: string, details: Record<string, unknown> = {}) {
    super(errnoName, reason, details);
    this.name = 'XenError';
    this.errnoName = errnoName;
    this.errno = XEN_ERRNO[errnoName];
  }

  /** "EINVAL (22): <reason>" — what fleetpatch prints where Xen prints only "Error 22". */
  describe(): string {
    return `${this.errnoName} (${this.errno}): ${this.message}`;
  }
}

export function isFleetpatchError(e: unknown): e is FleetpatchError {
  return e instanceof FleetpatchError;
}

/**
 * Exit codes of the `fleetpatch` command, the same for every subcommand (docs/runtime.md).
 * `hv` keeps xen-livepatch's own (0, 1, and 2 for EAGAIN/EBUSY).
 */
export const EXIT_CODES = {
  /** Done; for `audit verify` and `audit replay`: nothing broken, no drift. */
  OK: 0,
  /** The command ran and failed or found a problem: a refusal, something not found, a broken chain, drift. */
  FAILED: 1,
  /** The command line is wrong (USAGE: an unknown command or option, a missing argument) or a value on it (ARGUMENT: out of range, not a time, a missing file). */
  USAGE: 2,
  /** A bug: an error fleetpatch did not expect (INTERNAL). */
  INTERNAL: 70,
  /** Interrupted (Ctrl-C) before it finished. */
  INTERRUPTED: 130,
} as const;

/** The exit code an error of this code ends the command with. */
export function exitCodeFor(code: ErrorCode): number {
  return code === 'USAGE' || code === 'ARGUMENT' ? EXIT_CODES.USAGE : code === 'INTERNAL' ? EXIT_CODES.INTERNAL : EXIT_CODES.FAILED;
}

// Passwords in every URL form become `***` (src/secrets.ts): the one masking function.
export { maskSecrets };

/** Node's errnos for a path that is not there or not a file (a usage error), as words. */
const NOT_A_FILE: Record<string, string> = {
  ENOENT: 'no such file or directory',
  ENOTDIR: 'a component of the path is not a directory',
  ELOOP: 'too many levels of symbolic links (a symlink loop)',
  EISDIR: 'it is a directory',
  ENAMETOOLONG: 'the file name is too long',
};

/** Temporal client errors, by the name their classes carry, as catalogue codes. */
const TEMPORAL_ERRORS: Record<string, ErrorCode> = {
  WorkflowNotFoundError: 'ROLLOUT_NOT_FOUND',
  NamespaceNotFoundError: 'TEMPORAL_UNAVAILABLE',
  WorkflowUpdateFailedError: 'ROLLOUT_STATE',
  WorkflowFailedError: 'ROLLOUT_STATE',
  WorkflowExecutionAlreadyStartedError: 'ROLLOUT_STATE',
  WorkflowUpdateRPCTimeoutOrCancelledError: 'TEMPORAL_UNAVAILABLE',
  QueryRejectedError: 'ROLLOUT_STATE',
  QueryNotRegisteredError: 'ROLLOUT_STATE',
  ServiceError: 'TEMPORAL_UNAVAILABLE',
  TransportError: 'TEMPORAL_UNAVAILABLE',
};

function oneLine(text: string): string {
  return maskSecrets(text).replace(/\s*\n\s*/g, '; ').trim();
}

/**
 * Any error as a catalogue error: fleetpatch's own as they are, Node's file errors as USAGE
 * (not there, not a file) or FILE_ERROR (with the errno), Temporal client and PostgreSQL errors
 * by their kind, and anything else as INTERNAL. The CLI reports every error through this, so no
 * command can end with something that is not in the catalogue.
 */
export function toCatalogued(e: unknown): FleetpatchError {
  if (e instanceof FleetpatchError) return e;
  if (!(e instanceof Error)) return new FleetpatchError('INTERNAL', `internal error: ${oneLine(String(e))}`);
  const err = e as NodeJS.ErrnoException & { severity?: unknown; cause?: unknown };
  if (typeof err.code === 'string' && typeof err.syscall === 'string') {
    const where = err.path ? ` ${err.path}` : '';
    const notAFile = NOT_A_FILE[err.code];
    if (notAFile && err.path) return new FleetpatchError('USAGE', `${err.path}: ${notAFile}`, { errno: err.code, path: err.path }, { cause: e });
    if (err.code === 'ECONNREFUSED' || err.code === 'ECONNRESET' || err.code === 'ETIMEDOUT' || err.code === 'EHOSTUNREACH') {
      return new FleetpatchError('HOST_UNREACHABLE', `${err.syscall}${where}: ${err.code}`, { errno: err.code }, { cause: e });
    }
    if (err.code === 'EADDRINUSE' || err.code === 'EADDRNOTAVAIL') return new FleetpatchError('USAGE', oneLine(err.message), { errno: err.code }, { cause: e });
    return new FleetpatchError('FILE_ERROR', `${err.syscall}${where}: ${err.code}: ${oneLine(err.message.replace(/^[A-Z]+: /, ''))}`, { errno: err.code, ...(err.path ? { path: err.path } : {}) }, { cause: e });
  }
  const temporal = TEMPORAL_ERRORS[err.name];
  if (temporal) {
    const cause = err.cause instanceof Error && err.cause.message ? `: ${err.cause.message}` : '';
    return new FleetpatchError(temporal, oneLine(`${err.message}${cause}`), {}, { cause: e });
  }
  // node-postgres: a server error has a severity and a five-character SQLSTATE.
  if (typeof err.severity === 'string' && typeof err.code === 'string' && /^[0-9A-Z]{5}$/.test(err.code)) {
    const code: ErrorCode = err.code.startsWith('08') || err.code.startsWith('57P') ? 'DATABASE_UNAVAILABLE' : 'INTERNAL';
    return new FleetpatchError(code, oneLine(`PostgreSQL ${err.code}: ${err.message}`), { sqlstate: err.code }, { cause: e });
  }
  // Only the first line: the rest of an unexpected message is often a stack or a dump.
  return new FleetpatchError('INTERNAL', `internal error: ${err.name}: ${oneLine(err.message.split('\n')[0] ?? '')}`, {}, { cause: e });
}
