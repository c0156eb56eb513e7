/**
 * A payload as JSON: what `fleetpatch payload inspect --json` prints and the HTTP API answers for
 * a stored payload (format, build-ids, functions with their targets and constant results, hooks,
 * modinfo, writable data). Pure.
 */
import { constantReturnOf } from './returns.ts';
import type { LivepatchPayload, PayloadAddress } from './model.ts';

/** xen-livepatch's rule: the name is the file name without its last extension. */
function payloadName(file: string): string {
  const base = file.split('/').pop()!;
  const dot = base.lastIndexOf('.');
  return dot > 0 ? base.slice(0, dot) : base;
}

export function hex(n: bigint): string {
  return `0x${n.toString(16)}`;
}

export function describeAddress(a: PayloadAddress | null): string | null {
  if (!a) return null;
  switch (a.kind) {
    case 'payload':
      return a.symbol ?? `${a.section}+${hex(a.offset)}`;
    case 'external':
      return a.addend === 0n ? a.symbol : `${a.symbol}${a.addend < 0n ? '-' : '+'}${hex(a.addend < 0n ? -a.addend : a.addend)}`;
    case 'absolute':
      return hex(a.value);
  }
}

function toHex(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

/** The --json shape of `payload inspect`. */
export function payloadToJson(payload: LivepatchPayload, file?: string) {
  return {
    ...(file ? { file, name: payloadName(file) } : {}),
    size: payload.size,
    format: payload.format,
    buildId: payload.buildIdHex,
    depends: payload.dependsHex,
    xenDepends: payload.xenDependsHex,
    funcs: payload.funcs.map((f) => ({
      name: f.name,
      version: f.version,
      newSize: f.newSize,
      oldSize: f.oldSize,
      nop: f.nop,
      newSymbol: f.newSymbol,
      oldSymbol: f.oldSymbol,
      newAddress: describeAddress(f.newAddress),
      // null: old_addr is 0 and Xen looks `name` up.
      oldAddress: describeAddress(f.oldAddress),
      expect: f.expect ? { enabled: f.expect.enabled, len: f.expect.len, data: toHex(f.expect.data.subarray(0, f.expect.len)) } : null,
      returns: f.nop ? null : constantReturnOf(payload, f.newAddress),
    })),
    hooks: {
      load: payload.hooks.load.length,
      unload: payload.hooks.unload.length,
      preApply: payload.hooks.preApply !== null,
      apply: payload.hooks.apply !== null,
      postApply: payload.hooks.postApply !== null,
      preRevert: payload.hooks.preRevert !== null,
      revert: payload.hooks.revert !== null,
      postRevert: payload.hooks.postRevert !== null,
    },
    modinfo: Object.fromEntries(payload.modinfo.map((m) => [m.key, m.value])),
    modinfoStrings: payload.modinfo.map((m) => m.raw),
    writableSections: payload.writableSections,
    hasWritableData: payload.hasWritableData,
    canReapply: payload.canReapply,
    undefinedSymbols: payload.undefinedSymbols,
  };
}
