/**
 * The bridge from the payload library (src/payload) to the emulated hypervisor: images become
 * `HostImage`s (their functions' results and code bytes), and Xen's upload checks (`checkUpload`)
 * become the state machine's `UploadChecker`, with every patched function's result decided from
 * the payload's code (returns.ts) and its expectation handed to APPLY.
 *
 * Upload checks are pure functions of (name, bytes, image, loaded payloads), and a fleet rollout
 * uploads the same bytes to thousands of hosts in the same state; `cachingChecker` memoises them so
 * those hosts share one parsed payload instead of holding thousands of copies.
 */
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { FleetpatchError, XenError } from '../errors.ts';
import { DEFAULT_IMAGE, lookupImageSymbol, readImage, type HypervisorImage } from '../payload/image.ts';
import { PAGE_SIZE, parsePayload } from '../payload/model.ts';
import { constantReturnAt, constantReturnOf, reasonAbout, type HypervisorView } from '../payload/returns.ts';
import { checkUpload, type CheckedPayload, type LoadedPayload as CheckLoaded, type ResolvedFunc } from '../payload/upload-check.ts';
import { ENDBR64_LEN, overlay, patchBytes, patchOffset } from './live-code.ts';
import type { CallResult, DependencyCheck, HostImage, ImageFunction, PatchedFunction, PayloadFacts, UploadChecker } from './state-machine.ts';

function hypervisorView(hv: HypervisorImage): HypervisorView {
  return { memory: hv, lookup: (name) => lookupImageSymbol(hv, name) };
}

const images = new WeakMap<HypervisorImage, HostImage>();

/** The emulator's view of a payload-library image (memoised: one per image for the whole fleet). */
export function hostImage(hv: HypervisorImage): HostImage {
  const known = images.get(hv);
  if (known) return known;
  const functions = new Map<string, ImageFunction>();
  const byAddress = new Map<bigint, string>();
  for (const sym of hv.symbols.values()) {
    if (sym.kind !== 'function') continue;
    const name = sym.name;
    functions.set(name, {
      address: sym.address,
      size: Number(sym.size),
      // Decided from the code on first call (image.returns is lazy and keeps what it decided).
      get result(): CallResult {
        return hv.returns.get(name) ?? { kind: 'undefined', why: 'it has no code in the image' };
      },
    });
    if (!byAddress.has(sym.address)) byAddress.set(sym.address, name);
  }
  const image: HostImage = {
    name: hv.name,
    buildId: hv.buildIdHex,
    functions,
    functionAt: (a) => byAddress.get(a),
    codeAt: (address, length) => hv.bytesAt(address, length),
    source: hv,
  };
  images.set(hv, image);
  return image;
}

/** The built-in hypervisor image (xen_extra_version returns "-unstable"). */
export const DEFAULT_HOST_IMAGE: HostImage = hostImage(DEFAULT_IMAGE);

/** Reads a linked hypervisor (xen-syms) from disk. IMAGE_INVALID / ELF_MALFORMED when unusable. */
export async function loadImageFile(file: string): Promise<HostImage> {
  let bytes: Uint8Array;
  try {
    bytes = await readFile(file);
  } catch (e) {
    throw new FleetpatchError('IMAGE_INVALID', `cannot read the hypervisor image ${file}: ${(e as Error).message}`, { file });
  }
  return hostImage(readImage(bytes, path.basename(file)));
}

function checkedOf(facts: PayloadFacts): CheckedPayload {
  return facts.model as CheckedPayload;
}

/** What `checkUpload` needs to know of a payload already loaded on the host. */
function asLoaded(name: string, c: CheckedPayload): CheckLoaded {
  return { name, buildId: c.payload.buildIdHex, symbols: c.exportedSymbols, loadAddress: c.loadAddress, pages: c.pages };
}

function pageAlign(n: bigint): bigint {
  return ((n + PAGE_SIZE - 1n) / PAGE_SIZE) * PAGE_SIZE;
}

/** The state machine's facts about a payload that passed Xen's checks on `image`. */
export function factsFromChecked(checked: CheckedPayload, image: HostImage): PayloadFacts {
  const p = checked.payload;
  const hv = image.source as HypervisorImage | null;
  const view = hv ? hypervisorView(hv) : undefined;
  const funcs: PatchedFunction[] = checked.funcs.map((f) => {
    // Xen patches the code at old_addr; `name` is only looked up when old_addr is 0 (a payload may
    // relocate old_addr against xen_extra_version and name it anything). So the function at the
    // address, when there is one, is what the patch replaces.
    const target = image.functionAt(f.oldAddress) ?? f.func.name ?? f.func.oldSymbol ?? `0x${f.oldAddress.toString(16)}`;
    let result: CallResult;
    if (f.func.nop) {
      result = nopResult(hv, f, checked.name);
    } else {
      const r = constantReturnOf(p, f.func.newAddress, { hypervisor: view });
      result = r.kind === 'undefined' ? { kind: 'undefined', why: reasonAbout(`its replacement ${f.func.newSymbol ?? 'function'} (payload ${checked.name})`, r.why) } : r;
    }
    return {
      target,
      name: f.func.name,
      oldAddr: f.oldAddress,
      oldSize: f.func.oldSize,
      newAddr: f.newAddress,
      newSize: f.func.newSize,
      nop: f.func.nop,
      result,
      expect: f.func.expect,
    };
  });
  const h = p.hooks;
  const textAddr = checked.loadAddress;
  const rwAddr = textAddr + pageAlign(p.layout.textSize);
  const roAddr = rwAddr + pageAlign(p.layout.rwSize);
  return {
    buildId: p.buildIdHex,
    depends: p.dependsHex,
    xenDepends: p.xenDependsHex,
    funcs,
    vetoingHooks: Boolean(h.preApply || h.postApply || h.preRevert || h.postRevert),
    metadata: p.modinfo.map((m) => m.raw),
    safeToReapply: p.canReapply,
    layout: { textAddr, rwAddr, roAddr, pages: Number(checked.pages) },
    model: checked,
  };
}

/**
 * A NOP entry leaves the function in place with its first new_size bytes turned into NOPs: its
 * result is decided from that live code ("payload xen_nop replaced 5 bytes of it with NOPs, and
 * then it returns without setting %rax").
 */
function nopResult(hv: HypervisorImage | null, f: ResolvedFunc, payload: string): CallResult {
  const what = `payload ${payload} replaced ${f.func.newSize} bytes of it with NOPs`;
  const original = hv?.bytesAt(f.oldAddress, f.func.oldSize) ?? null;
  if (!hv || !original) return { kind: 'undefined', why: `${what}, and the emulator has no code for the rest` };
  const offset = patchOffset(original.subarray(0, ENDBR64_LEN));
  const live = Uint8Array.from(original);
  overlay(live, f.oldAddress, patchBytes({ oldAddr: f.oldAddress, newAddr: 0n, newSize: f.func.newSize, nop: true }, offset), f.oldAddress + BigInt(offset));
  const r = constantReturnAt(hv, f.oldAddress, { code: live });
  return r.kind === 'undefined' ? { kind: 'undefined', why: `${what}, and then ${r.why}` } : r;
}

/** Xen's upload checks through the payload library. */
export const payloadLibraryChecker: UploadChecker = ({ name, bytes, image, loaded }) => {
  const hv = image.source as HypervisorImage;
  let checked: CheckedPayload;
  try {
    checked = checkUpload({ name, bytes, image: hv, loaded: loaded.map((p) => asLoaded(p.name, checkedOf(p.facts))) });
  } catch (e) {
    throw withXenDependsCheck(e, name, bytes);
  }
  return factsFromChecked(checked, image);
};

/** A refused .livepatch.xen_depends comparison is a dependency check too: say so in the details. */
function withXenDependsCheck(e: unknown, name: string, bytes: Uint8Array): unknown {
  if (!(e instanceof XenError) || e.details.check !== 'xen-depends-mismatch') return e;
  let payloadBuildId: string | null = null;
  try {
    payloadBuildId = parsePayload(bytes, { name }).buildIdHex;
  } catch {
    // The payload fails a later check too; the comparison itself is still worth recording.
  }
  const dependencyCheck: DependencyCheck = {
    payload: name,
    payloadBuildId: payloadBuildId ?? '',
    kind: 'xen_depends',
    operation: 'upload',
    against: 'hypervisor',
    againstName: null,
    expected: String(e.details.expected),
    found: String(e.details.actual),
    outcome: 'mismatch',
  };
  return new XenError(e.errnoName, e.message, { ...e.details, dependencyCheck });
}

/**
 * Memoises a checker on everything its answer depends on: the name, the bytes, the image, and the
 * name, build-id, load address and exported symbols of every loaded payload. Errors are memoised
 * too (the same bytes fail the same way). At most `max` entries, oldest evicted first.
 */
export function cachingChecker(inner: UploadChecker, max = 2048): UploadChecker {
  const cache = new Map<string, PayloadFacts | XenError>();
  return (input) => {
    const h = createHash('sha256');
    h.update(`${input.name}\0${input.image.buildId}\0${input.image.name}\0`);
    h.update(input.bytes);
    for (const p of input.loaded) {
      const c = checkedOf(p.facts);
      h.update(`\0${p.name}\0${p.facts.buildId}\0${c.loadAddress}\0${c.pages}\0`);
      for (const s of c.exportedSymbols) h.update(`${s.name}=${s.address}/${s.size};`);
    }
    const key = h.digest('base64');
    let hit = cache.get(key);
    if (hit === undefined) {
      try {
        hit = inner(input);
      } catch (e) {
        if (!(e instanceof XenError)) throw e;
        hit = e;
      }
      cache.set(key, hit);
      if (cache.size > max) cache.delete(cache.keys().next().value!);
    }
    if (hit instanceof XenError) throw hit;
    return hit;
  };
}
