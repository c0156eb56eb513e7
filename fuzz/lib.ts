/**
 * What every fuzz target shares: the target interface, how an outcome is named, and the oracle
 * failure type. A target turns one generated input into an outcome string ("accepted",
 * "refused EINVAL section-data", "refused ELF_MALFORMED", ...); anything else it throws is a crash,
 * and an `OracleViolation` is a crash with a reason (a wrong status code, an answer that is not
 * JSON, a non-deterministic refusal, a plan that validates but cannot be represented, ...).
 *
 * Not part of `npm test`: the runner (fuzz/run.ts) drives the targets for a time budget, and the
 * inputs that ever found something are replayed in CI from test/fuzz-corpus/ (see
 * test/fuzz/corpus.unit.test.ts).
 */
import type fc from 'fast-check';
import { FleetpatchError, XenError } from '../src/errors.ts';

export type TargetName = 'payload' | 'plan' | 'http';
export const TARGETS: readonly TargetName[] = ['payload', 'plan', 'http'];

/** An oracle said no: the input is a finding even though nothing threw by itself. */
export class OracleViolation extends Error {
  constructor(
    message: string,
    readonly facts: Record<string, unknown> = {},
  ) {
    super(message);
    this.name = 'OracleViolation';
  }
}

/** One operation (a parse, an upload check, an HTTP request) took longer than the per-operation limit. */
export class SlowCase extends Error {
  constructor(
    readonly ms: number,
    readonly what = 'the case',
  ) {
    super(`${what} took ${ms.toFixed(0)} ms of CPU`);
    this.name = 'SlowCase';
  }
}

/**
 * The per-operation limit: --case-ms (default 1 s), plus 1 ms per KiB of input, so that parsing a
 * 2 MiB payload or a 1 MiB plan (linear work) is not mistaken for a hang. Measured in CPU time
 * (this process's, user + system): on a machine shared with test suites the wall clock says more
 * about the neighbours than about the code (a load of 24 on 2 cores made a 200 ms parse take 2 s).
 */
export const limits = { operationMs: 1000, msPerKiB: 1 };

function limitFor(inputBytes: number): number {
  return limits.operationMs + (limits.msPerKiB * inputBytes) / 1024;
}

/** CPU milliseconds this process has used (user + system). */
export function cpuMs(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
}

/** Runs fn and throws SlowCase if it used more CPU than the limit for an input of this size. */
export function timed<R>(what: string, fn: () => R, inputBytes = 0): R {
  const t0 = cpuMs();
  try {
    return fn();
  } finally {
    // A refusal that was slow is as much a hang as an answer that was: this replaces either.
    const ms = cpuMs() - t0;
    // eslint-disable-next-line no-unsafe-finally
    if (ms > limitFor(inputBytes)) throw new SlowCase(ms, what);
  }
}

/** timed() for an operation that returns a promise (the CPU of everything this process did meanwhile). */
export async function timedAsync<R>(what: string, fn: () => Promise<R>, inputBytes = 0): Promise<R> {
  const t0 = cpuMs();
  try {
    return await fn();
  } finally {
    const ms = cpuMs() - t0;
    // eslint-disable-next-line no-unsafe-finally
    if (ms > limitFor(inputBytes)) throw new SlowCase(ms, what);
  }
}

export interface FuzzTarget<T> {
  readonly name: TargetName;
  /** Extension of corpus files (`.bin` payload bytes, `.yaml` plan text, `.json` HTTP request). */
  readonly extension: string;
  /** Builds fixtures, starts servers. Called once per worker process. */
  setup(seed: number): Promise<void>;
  arbitrary(): fc.Arbitrary<T>;
  /** Runs one case through every oracle; returns the outcome's name. */
  run(input: T): Promise<string> | string;
  /** Between batches: the system under test is still healthy (e.g. /healthz answers). */
  check?(): Promise<void>;
  encode(input: T): Uint8Array;
  decode(bytes: Uint8Array): T;
  /** Figures of this target beyond the runner's own (e.g. responses by status). */
  figures?(): Record<string, number | string>;
  teardown(): Promise<void>;
}

/** "refused <ERRNO> <check>" for a XenError, "refused <CODE>" for another FleetpatchError; rethrows the rest. */
export function refusal(e: unknown): string {
  if (e instanceof XenError) return `refused ${e.errnoName}${e.details.check !== undefined ? ` ${String(e.details.check)}` : ''}`;
  if (e instanceof FleetpatchError) return `refused ${e.code}`;
  throw e;
}

/** Runs fn and names its outcome; only the catalogue's errors are refusals, anything else escapes. */
export function outcomeOf(fn: () => unknown): string {
  try {
    fn();
    return 'accepted';
  } catch (e) {
    return refusal(e);
  }
}

/** The errno or code of an outcome name ("refused EINVAL section-data" -> "EINVAL"). */
export function outcomeClass(outcome: string): string {
  if (!outcome.startsWith('refused ')) return outcome.split(' ')[0]!;
  return outcome.split(' ')[1]!;
}


export function formatCount(n: number): string {
  return n.toLocaleString('en-US');
}

export function mib(bytes: number): string {
  return `${(bytes / 1024 / 1024).toFixed(0)} MiB`;
}

/** Edits that know nothing of the ELF layout: shared by the fuzz target and the CI fuzz tests. */
export type ByteEdit = { kind: 'truncate'; at: number } | { kind: 'extend'; bytes: ArrayLike<number> } | { kind: 'copy'; from: number; to: number; length: number };

/** Applies one ByteEdit; returns the bytes to go on with (a new array when the length changes). */
export function editBytes(bytes: Uint8Array<ArrayBuffer>, m: ByteEdit): Uint8Array<ArrayBuffer> {
  switch (m.kind) {
    case 'truncate':
      return bytes.slice(0, m.at % (bytes.length + 1));
    case 'extend': {
      const next = new Uint8Array(bytes.length + m.bytes.length);
      next.set(bytes);
      next.set(m.bytes, bytes.length);
      return next;
    }
    case 'copy': {
      if (bytes.length === 0) return bytes;
      const from = m.from % bytes.length;
      const to = m.to % bytes.length;
      const chunk = bytes.slice(from, Math.min(bytes.length, from + m.length));
      bytes.set(chunk.subarray(0, bytes.length - to), to);
      return bytes;
    }
  }
}
