/**
 * The per-stream hash chain that makes the event store tamper-evident.
 *
 * Each event's hash is sha256(previous hash + canonical JSON of the event as stored), the first
 * event of a stream chaining from GENESIS_HASH. Changing any stored field of an event changes its
 * hash; deleting one leaves a missing position and breaks the link of the next; deleting the last
 * ones leaves the stream head (kept beside the chain) pointing past the end. Recomputing the chain
 * needs nothing but the rows, so `fleetpatch audit verify` can prove nothing was altered or removed
 * since it was written, short of someone recomputing every later hash and the head as well (the
 * heads digest lets an operator keep an outside copy to catch even that). Deleting a whole stream,
 * events and head, leaves no row of it: the stream registry (below, migration 0011) keeps every
 * stream's existence in a chain of its own.
 *
 * Canonical JSON (in the spirit of RFC 8785): object keys sorted by UTF-16 code units, no
 * whitespace, numbers and strings as JSON.stringify writes them, undefined members left out.
 * No I/O here.
 */
import crypto, { createHash } from 'node:crypto';

export const GENESIS_HASH = '0'.repeat(64);

export function canonicalJson(value: unknown): string {
  // Hand-rolled loops rather than entries/filter/sort/map/join: the store hashes every event it
  // appends, and the intermediate arrays made this a third of a group commit's CPU in the worker.
  if (value === null) return 'null';
  switch (typeof value) {
    case 'string':
      return JSON.stringify(value);
    case 'boolean':
      return value ? 'true' : 'false';
    case 'number':
      if (!Number.isFinite(value)) throw new TypeError(`canonical JSON has no form for ${value}`);
      return JSON.stringify(value);
    case 'object': {
      if (Array.isArray(value)) {
        let out = '[';
        for (let i = 0; i < value.length; i++) {
          const v: unknown = value[i];
          out += (i === 0 ? '' : ',') + (v === undefined ? 'null' : canonicalJson(v));
        }
        return `${out}]`;
      }
      const proto = Object.getPrototypeOf(value) as unknown;
      if (proto !== Object.prototype && proto !== null) throw new TypeError(`canonical JSON takes plain objects only, not ${(value as object).constructor?.name}`);
      const record = value as Record<string, unknown>;
      // The default sort compares UTF-16 code units, as RFC 8785 asks.
      const keys = Object.keys(record).sort();
      let out = '{';
      for (const k of keys) {
        const v = record[k];
        if (v === undefined) continue;
        out += `${out.length === 1 ? '' : ','}${JSON.stringify(k)}:${canonicalJson(v)}`;
      }
      return `${out}}`;
    }
    default:
      throw new TypeError(`canonical JSON has no form for a ${typeof value}`);
  }
}

/** Everything the store keeps about an event, i.e. everything its hash covers. */
export interface ChainRecord {
  streamId: string;
  streamPosition: number;
  eventId: string;
  type: string;
  schemaVersion: number;
  occurredAt: string;
  recordedAt: string;
  actor: unknown;
  correlation: unknown;
  data: unknown;
}

/**
 * crypto.hash (Node >= 20.12) hashes in one call, without a Hash object: about half the cost for
 * the short texts hashed per event. Older Nodes take the Hash object.
 */
export const oneShotHash = (crypto as { hash?: (algorithm: string, data: string | Buffer, encoding: 'hex' | 'buffer') => string | Buffer }).hash;

export function sha256Hex(text: string): string {
  return oneShotHash ? (oneShotHash('sha256', text, 'hex') as string) : createHash('sha256').update(text, 'utf8').digest('hex');
}

export function chainHash(previousHash: string, record: ChainRecord): string {
  return sha256Hex(previousHash + canonicalJson(record));
}

/** The first place a stream's chain does not hold, in words and with the hashes involved. */
export type ChainBreak =
  | { kind: 'altered'; streamId: string; position: number; expectedHash: string; storedHash: string; description: string }
  | { kind: 'missing'; streamId: string; position: number; description: string }
  | { kind: 'head'; streamId: string; position: number; expectedHash: string | null; storedHash: string | null; description: string }
  /** The registry records the stream; none of its events and no head are stored. */
  | { kind: 'deleted'; streamId: string; position: 0; registry: { shard: number; position: number }; description: string }
  /** Events or a head are stored; the registry does not record the stream. */
  | { kind: 'unregistered'; streamId: string; position: 0; description: string };

/**
 * A link of the stream registry's chain: sha256 of `<previous link, hex> <position> <the stream
 * id's UTF-8, hex>` (hex, so no stream id can be mistaken for a separator). The first entry
 * chains from GENESIS_HASH. The migration's SQL function stream_registry_link computes the same.
 */
export function registryLink(previousHash: string, position: number, streamId: string): string {
  return sha256Hex(`${previousHash} ${position} ${Buffer.from(streamId, 'utf8').toString('hex')}`);
}

/** The first place one of the stream registry's chains does not hold. */
export interface RegistryBreak {
  kind: 'missing' | 'altered' | 'head';
  shard: number;
  /** The position in the shard's chain concerned. */
  position: number;
  streamId: string | null;
  description: string;
}

/**
 * Checks one registry chain's entries, in position order, and its head: positions 1, 2, 3, ...
 * without a gap, every link from the one before, the head at the end of the chain. The first break
 * only: every link after an altered one fails too.
 */
export function checkRegistry(shard: number, entries: readonly { position: number; streamId: string; hash: string }[], head: { position: number; lastHash: string } | null): RegistryBreak | null {
  const at = (position: number) => `registry chain ${shard}, position ${position}`;
  let previous = GENESIS_HASH;
  let last = 0;
  for (const e of entries) {
    if (e.position !== last + 1) {
      return { kind: 'missing', shard, position: last + 1, streamId: null, description: `${at(last + 1)} is missing (the next entry is at ${e.position}, ${e.streamId}): a stream's registration was deleted` };
    }
    if (registryLink(previous, e.position, e.streamId) !== e.hash) {
      return { kind: 'altered', shard, position: e.position, streamId: e.streamId, description: `the registration at ${at(e.position)} (${e.streamId}) does not hash to its stored link: it, or the one before it, was altered` };
    }
    previous = e.hash;
    last = e.position;
  }
  if (!head) return { kind: 'head', shard, position: last, streamId: null, description: `registry chain ${shard} has ${last} entries but no head: the head was deleted` };
  if (head.position > last) {
    return { kind: 'missing', shard, position: last + 1, streamId: null, description: `the head of registry chain ${shard} says ${head.position} streams, the chain ends at ${last}: registrations ${last + 1}..${head.position} were deleted` };
  }
  if (head.position < last || head.lastHash !== previous) {
    return { kind: 'head', shard, position: last, streamId: null, description: `the head of registry chain ${shard} (position ${head.position}) does not match the end of the chain (position ${last})` };
  }
  return null;
}

/**
 * Checks one stream's rows as they come, in position order, and keeps the first break. Fed row by
 * row so a verifier can stream millions of events without holding them.
 */
export class StreamChainChecker {
  private previousHash = GENESIS_HASH;
  private lastPosition = 0;
  private broken: ChainBreak | null = null;

  constructor(readonly streamId: string) {}

  get firstBreak(): ChainBreak | null {
    return this.broken;
  }

  push(record: ChainRecord, storedHash: string): void {
    if (this.broken) return;
    const expectedPosition = this.lastPosition + 1;
    if (record.streamPosition !== expectedPosition) {
      this.broken = {
        kind: 'missing',
        streamId: this.streamId,
        position: expectedPosition,
        description: `position ${expectedPosition} is missing (the next stored event is at ${record.streamPosition}): an event was deleted`,
      };
      return;
    }
    const expectedHash = chainHash(this.previousHash, record);
    if (expectedHash !== storedHash) {
      this.broken = {
        kind: 'altered',
        streamId: this.streamId,
        position: record.streamPosition,
        expectedHash,
        storedHash,
        description: `the event at position ${record.streamPosition} (${record.type}) does not hash to its stored hash: it, or the link before it, was altered`,
      };
      return;
    }
    this.previousHash = storedHash;
    this.lastPosition = record.streamPosition;
  }

  /** Compares the end of the chain with the stream head the store keeps beside it. */
  finish(head: { position: number; lastHash: string } | null): ChainBreak | null {
    if (this.broken) return this.broken;
    if (!head) {
      this.broken = {
        kind: 'head',
        streamId: this.streamId,
        position: this.lastPosition,
        expectedHash: this.previousHash,
        storedHash: null,
        description: `the stream has ${this.lastPosition} events but no head record: the head was deleted`,
      };
    } else if (head.position > this.lastPosition) {
      this.broken = {
        kind: 'missing',
        streamId: this.streamId,
        position: this.lastPosition + 1,
        description: `the stream head says ${head.position} events, the chain ends at ${this.lastPosition}: events ${this.lastPosition + 1}..${head.position} were deleted`,
      };
    } else if (head.position < this.lastPosition || head.lastHash !== this.previousHash) {
      this.broken = {
        kind: 'head',
        streamId: this.streamId,
        position: this.lastPosition,
        expectedHash: this.previousHash,
        storedHash: head.lastHash,
        description: `the stream head (position ${head.position}) does not match the end of the chain (position ${this.lastPosition})`,
      };
    }
    return this.broken;
  }

  /** The hash at the end of the verified chain. */
  get headHash(): string {
    return this.previousHash;
  }
}
