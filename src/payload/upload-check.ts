/**
 * Xen's upload (XEN_SYSCTL_LIVEPATCH_UPLOAD) as a pure function of
 * (name, payload bytes, hypervisor image, payloads already loaded).
 *
 * The checks, in Xen's order (xen-livepatch.md section 2):
 *   1. name 1..127 characters, size 1 byte..2 MiB                                  EINVAL
 *   2. a payload with that name is loaded                                          EEXIST
 *   3-7. the payload pipeline (model.ts), with the hypervisor at hand: unknown symbols (ENOENT),
 *      xen_depends against this hypervisor (EINVAL), old addresses by name (ENOENT), distance
 *      and relocation overflow (EOVERFLOW)
 *   8. same build-id as a loaded payload, or a new symbol whose name exists already  EEXIST
 *
 * On success the caller (the emulated hypervisor) appends the result to its list in state CHECKED.
 * Nothing here mutates anything.
 *
 * Pure: no node: imports.
 */
import { XenError } from '../errors.ts';
import { buildIdFromHex, buildIdToHex, compareBuildIds, shortBuildId } from './build-id.ts';
import { lookupImageSymbol, type HypervisorImage } from './image.ts';
import { isPayloadSymbol, PAGE_SIZE, runPipeline, type LivepatchPayload, type PayloadFunc, type UploadEnvironment } from './model.ts';

/** LIVEPATCH_MAX_SIZE. */
export const MAX_PAYLOAD_SIZE = 2 * 1024 * 1024;
/** XEN_LIVEPATCH_NAME_SIZE is 128 including the NUL. */
export const MAX_NAME_LENGTH = 127;

/** A symbol a loaded payload added to the hypervisor (Xen's new_symbol): others may link to it. */
export interface ExportedSymbol {
  readonly name: string;
  readonly address: bigint;
  readonly size: bigint;
}

/** What the check needs to know about a payload that is already loaded (in any state). */
export interface LoadedPayload {
  readonly name: string;
  readonly buildId: Uint8Array | string;
  /** Its new symbols (CheckedPayload.exportedSymbols); empty if unknown. */
  readonly symbols?: readonly ExportedSymbol[];
  /** Where it was loaded (CheckedPayload.loadAddress / pages); later payloads go above. */
  readonly loadAddress?: bigint;
  readonly pages?: bigint;
}

export interface UploadRequest {
  readonly name: string;
  readonly bytes: Uint8Array;
  readonly image: HypervisorImage;
  readonly loaded?: readonly LoadedPayload[];
  /** Where to load it; by default just above the highest loaded payload (or image.payloadBase). */
  readonly loadAddress?: bigint;
}

export interface ResolvedFunc {
  readonly func: PayloadFunc;
  /** The function being patched, after relocation or lookup by name. */
  readonly oldAddress: bigint;
  /** The replacement, or 0n for a NOP entry. */
  readonly newAddress: bigint;
  readonly oldResolvedBy: 'relocation' | 'absolute' | 'name';
  /** "hypervisor", "absolute", or the name of the loaded payload that defined it. */
  readonly oldFrom: string;
}

export interface ResolvedSymbol {
  readonly name: string;
  readonly address: bigint;
  readonly size: bigint;
  /** Not the replacement of a patched function: Xen adds it to the symbols others may use. */
  readonly isNew: boolean;
}

export interface CheckedPayload {
  readonly name: string;
  readonly payload: LivepatchPayload;
  readonly loadAddress: bigint;
  readonly pages: bigint;
  readonly funcs: readonly ResolvedFunc[];
  /** Xen's symbol table for this payload (build_symbol_table). */
  readonly symbols: readonly ResolvedSymbol[];
  /** The new symbols, as a later LoadedPayload.symbols. */
  readonly exportedSymbols: readonly ExportedSymbol[];
  /** Load address of a section (null if Xen does not load it). */
  sectionAddress(index: number): bigint | null;
}

/** Where the next payload goes: above every loaded one, page-aligned, or at the image's base. */
export function nextLoadAddress(image: HypervisorImage, loaded: readonly LoadedPayload[]): bigint {
  let next = image.payloadBase;
  for (const p of loaded) {
    if (p.loadAddress === undefined) continue;
    const end = p.loadAddress + (p.pages ?? 1n) * PAGE_SIZE;
    if (end > next) next = end;
  }
  return next;
}

type SymbolLookup = (name: string) => { address: bigint; from: string } | null;

/** symbols_lookup_by_name, then livepatch_symbols_lookup_by_name over the loaded payloads in order. */
function symbolLookup(image: HypervisorImage, loaded: readonly LoadedPayload[]): SymbolLookup {
  const exported = new Map<string, { address: bigint; from: string }>();
  for (const p of loaded) {
    for (const s of p.symbols ?? []) if (s.address !== 0n && !exported.has(s.name)) exported.set(s.name, { address: s.address, from: p.name });
  }
  return (name) => {
    const address = lookupImageSymbol(image, name);
    if (address !== null && address !== 0n) return { address, from: 'hypervisor' };
    return exported.get(name) ?? null;
  };
}

/** Runs Xen's upload checks; returns the checked payload or throws XenError. */
export function checkUpload(req: UploadRequest): CheckedPayload {
  const { name, bytes, image } = req;
  const loaded = req.loaded ?? [];
  const fail = (errno: 'EINVAL' | 'EEXIST', step: number, check: string, reason: string, facts: Record<string, unknown> = {}): never => {
    throw new XenError(errno, reason, { step, check, payload: name, ...facts });
  };

  // 1. get_name and verify_payload.
  const nameBytes = new TextEncoder().encode(name).length;
  if (nameBytes === 0) fail('EINVAL', 1, 'name-length', 'the payload name is empty');
  if (nameBytes > MAX_NAME_LENGTH) fail('EINVAL', 1, 'name-length', `the payload name is ${nameBytes} bytes; Xen allows at most ${MAX_NAME_LENGTH}`);
  if (name.includes('\0')) fail('EINVAL', 1, 'name-length', 'the payload name contains a NUL byte');
  if (bytes.length === 0) fail('EINVAL', 1, 'size', `${name}: the payload is empty`);
  if (bytes.length > MAX_PAYLOAD_SIZE) fail('EINVAL', 1, 'size', `${name}: the payload is ${bytes.length} bytes; Xen accepts at most 2 MiB (${MAX_PAYLOAD_SIZE})`);

  // 2. find_payload.
  if (loaded.some((p) => p.name === name)) fail('EEXIST', 2, 'name-exists', `a payload named ${name} is already loaded`);

  // 3-7.
  const loadAddress = req.loadAddress ?? nextLoadAddress(image, loaded);
  const lookup = symbolLookup(image, loaded);
  const env: UploadEnvironment = {
    name,
    hypervisorBuildId: image.buildId,
    loadAddress,
    lookupSymbol: lookup,
  };
  const { payload, resolution } = runPipeline(bytes, name, env);
  const funcs: ResolvedFunc[] = payload.funcs.map((func, i) => ({ func, ...resolution!.funcs[i]! }));
  const sectionAddress = (index: number) => {
    const at = payload.layout.sections.get(index);
    return at === undefined ? null : loadAddress + at;
  };

  // 8. Duplicates: the build-id (prepare_payload), then new symbols (build_symbol_table).
  for (const p of loaded) {
    const id = typeof p.buildId === 'string' ? buildIdFromHex(p.buildId) : p.buildId;
    if (compareBuildIds(id, payload.buildId) === 0) {
      fail('EEXIST', 8, 'build-id-loaded', `${name}: build-id ${payload.buildIdHex} is already loaded as ${p.name}`, { buildId: payload.buildIdHex, loadedAs: p.name });
    }
  }
  const patched = new Set(funcs.map((f) => f.newAddress));
  const symbols: ResolvedSymbol[] = [];
  for (const sym of payload.symbols) {
    if (!isPayloadSymbol(payload, sym)) continue;
    const address = (sectionAddress(sym.shndx) ?? 0n) + sym.value;
    const isNew = !patched.has(address);
    if (isNew) {
      const existing = lookup(sym.name);
      if (existing) {
        fail('EEXIST', 8, 'symbol-exists', `${name}: duplicate new symbol ${sym.name}: ${existing.from === 'hypervisor' ? 'the hypervisor' : `payload ${existing.from}`} already defines it`, { symbol: sym.name, definedBy: existing.from });
      }
    }
    symbols.push({ name: sym.name, address, size: sym.size, isNew });
  }

  return {
    name,
    payload,
    loadAddress,
    pages: payload.layout.pages,
    funcs,
    symbols,
    exportedSymbols: symbols.filter((s) => s.isNew).map(({ name: n, address, size }) => ({ name: n, address, size })),
    sectionAddress,
  };
}

/** The stack entry a payload's `depends` is compared with at APPLY (xen-livepatch.md section 3). */
export type DependencyTarget =
  | { readonly kind: 'hypervisor'; readonly buildId: Uint8Array | string }
  | { readonly kind: 'payload'; readonly name: string; readonly buildId: Uint8Array | string };

/**
 * The APPLY dependency check, with the sentence Xen only prints on its console:
 * "depends on build-id 56b2…, but the top of the stack is xen_hello_world (fc36…)".
 * Throws XenError EINVAL; returns normally when `depends` matches.
 */
export function checkDepends(payload: { readonly name: string; readonly depends: Uint8Array | string }, target: DependencyTarget): void {
  const want = typeof payload.depends === 'string' ? buildIdFromHex(payload.depends) : payload.depends;
  const have = typeof target.buildId === 'string' ? buildIdFromHex(target.buildId) : target.buildId;
  if (compareBuildIds(want, have) === 0) return;
  const against = target.kind === 'hypervisor' ? 'hypervisor' : target.name;
  const where = target.kind === 'hypervisor'
    ? `the stack is empty and the hypervisor is ${shortBuildId(have)}`
    : `the top of the stack is ${target.name} (${shortBuildId(have)})`;
  throw new XenError('EINVAL', `${payload.name}: check against ${against} build-id failed: it depends on build-id ${shortBuildId(want)}, but ${where}`, {
    check: 'depends',
    payload: payload.name,
    expected: buildIdToHex(want),
    actual: buildIdToHex(have),
    against,
  });
}
