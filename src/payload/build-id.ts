/**
 * Build-ids: the identity of a hypervisor or a payload (`ld --build-id=sha1` writes 20 bytes).
 *
 * Xen compares build-ids by length, then bytes (memcmp); so do we. Hex is lowercase, as
 * `readelf -n` and `xen-livepatch` print it. Pure: safe for workflow bundles.
 */
import { FleetpatchError } from '../errors.ts';

export type BuildId = Uint8Array;

const HEX = /^(?:[0-9a-f]{2})+$/;

export function buildIdToHex(id: Uint8Array): string {
  let s = '';
  for (const b of id) s += b.toString(16).padStart(2, '0');
  return s;
}

/** Parses a build-id written as hex (any case, optional 0x, optional ':' separators). */
export function buildIdFromHex(text: string): BuildId {
  const hex = text.trim().toLowerCase().replace(/^0x/, '').replaceAll(':', '');
  if (!HEX.test(hex)) throw new FleetpatchError('ARGUMENT', `"${text}" is not a build-id (an even number of hex digits)`);
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = Number.parseInt(hex.slice(i * 2, i * 2 + 2), 16);
  return out;
}

export function isBuildIdHex(text: string): boolean {
  return HEX.test(text);
}

/** Xen's order: shorter first, then memcmp. Negative, zero or positive. */
export function compareBuildIds(a: Uint8Array, b: Uint8Array): number {
  if (a.length !== b.length) return a.length - b.length;
  for (let i = 0; i < a.length; i++) {
    if (a[i] !== b[i]) return a[i]! - b[i]!;
  }
  return 0;
}

export function buildIdsEqual(a: Uint8Array | string, b: Uint8Array | string): boolean {
  const x = typeof a === 'string' ? buildIdFromHex(a) : a;
  const y = typeof b === 'string' ? buildIdFromHex(b) : b;
  return compareBuildIds(x, y) === 0;
}

/** "56b2…" — the first bytes, for sentences; the full hex goes in error details. */
export function shortBuildId(id: Uint8Array | string, bytes = 2): string {
  const hex = typeof id === 'string' ? id : buildIdToHex(id);
  return hex.length > bytes * 2 ? `${hex.slice(0, bytes * 2)}…` : hex;
}
