/**
 * Hypervisor images: what a payload is checked and linked against.
 *
 * An image is a build-id, a symbol table (name -> address, size), the bytes of its code (for
 * expectations and for decoding what unpatched functions return), and the address where Xen puts
 * payloads (within ±2 GiB of its text, so a 5-byte jump reaches). It comes from a real linked
 * `xen-syms` (`readImage`), from a declarative definition (`defineImage`), or is the built-in
 * `DEFAULT_IMAGE`.
 *
 * Pure: no node: imports.
 */
import { FleetpatchError, XenError } from '../errors.ts';
import { buildIdFromHex, buildIdToHex } from './build-id.ts';
import {
  SHF_ALLOC, SHN_ABS, SHN_UNDEF, SHT_NOBITS, SHT_NOTE, STT_FILE, STT_FUNC, STT_OBJECT, STT_SECTION, cString, readElf,
  type ElfFile, type ElfSection,
} from './elf.ts';
import { NT_GNU_BUILD_ID, parseBuildIdNote } from './note.ts';
import { constantReturnAt, type CodeMemory, type ConstantReturn } from './returns.ts';

export interface ImageSymbol {
  readonly name: string;
  readonly address: bigint;
  readonly size: bigint;
  readonly kind: 'function' | 'object' | 'other';
}

export interface HypervisorImage extends CodeMemory {
  /** A label for people: the file name, or "default". */
  readonly name: string;
  readonly buildId: Uint8Array;
  readonly buildIdHex: string;
  /** Xen's symbol table; the first definition of a name wins, as in symbols_lookup_by_name. */
  readonly symbols: ReadonlyMap<string, ImageSymbol>;
  /** Where the first payload is loaded; later ones follow (see upload-check.ts). */
  readonly payloadBase: bigint;
  /** What each function with a constant body returns when nothing patches it. */
  readonly returns: ReadonlyMap<string, ConstantReturn>;
}

/** symbols_lookup_by_name: the address, or null (Xen's 0) when the image has no such symbol. */
export function lookupImageSymbol(image: HypervisorImage, name: string): bigint | null {
  return image.symbols.get(name)?.address ?? null;
}

/** Payloads go above the image, on the next 2 MiB boundary (Xen's vmap area after xen_virt_end). */
const PAYLOAD_AREA_ALIGN = 2n * 1024n * 1024n;

function alignUp(n: bigint, a: bigint): bigint {
  return ((n + a - 1n) / a) * a;
}

function invalid(message: string, details: Record<string, unknown> = {}, cause?: unknown): FleetpatchError {
  return new FleetpatchError('IMAGE_INVALID', message, details, cause === undefined ? undefined : { cause });
}

/**
 * Reads a linked hypervisor image (ET_EXEC or ET_DYN, x86-64) with a GNU build-id note.
 * Throws IMAGE_INVALID (or ELF_MALFORMED for a broken ELF file).
 */
export function readImage(bytes: Uint8Array, name = 'xen-syms'): HypervisorImage {
  const elf = readElf(bytes);
  if (elf.header.type !== 2 && elf.header.type !== 3) {
    throw invalid(`${name} is not a linked image (ELF type ${elf.header.type}; expected ET_EXEC or ET_DYN)`);
  }
  const buildId = imageBuildId(elf, name);
  const loaded = elf.sections.filter((s) => s.index > 0 && (s.flags & SHF_ALLOC) !== 0n && s.size > 0n);

  const symbols = new Map<string, ImageSymbol>();
  for (const sym of elf.symbols) {
    if (sym.index === 0 || !sym.name || sym.type === STT_SECTION || sym.type === STT_FILE) continue;
    if (sym.shndx === SHN_UNDEF || (sym.shndx >= elf.sections.length && sym.shndx !== SHN_ABS)) continue;
    if (symbols.has(sym.name)) continue;
    const kind = sym.type === STT_FUNC ? 'function' : sym.type === STT_OBJECT ? 'object' : 'other';
    symbols.set(sym.name, { name: sym.name, address: sym.value, size: sym.size, kind });
  }

  const memory = sectionMemory(loaded);
  let end = 0n;
  for (const s of loaded) if (s.addr + s.size > end) end = s.addr + s.size;

  const returns = new Map<string, ConstantReturn>();
  for (const sym of symbols.values()) {
    if (sym.kind !== 'function') continue;
    const r = constantReturnAt(memory, sym.address);
    if (r) returns.set(sym.name, r);
  }
  return { name, buildId, buildIdHex: buildIdToHex(buildId), symbols, payloadBase: alignUp(end, PAYLOAD_AREA_ALIGN), returns, ...memory };
}

function imageBuildId(elf: ElfFile, name: string): Uint8Array {
  const candidates = [
    elf.sectionByName('.note.gnu.build-id'),
    ...elf.sections.filter((s) => s.type === SHT_NOTE && s.name !== '.note.gnu.build-id'),
  ].filter((s): s is ElfSection => !!s && s.type !== SHT_NOBITS);
  let firstError: unknown;
  for (const s of candidates) {
    try {
      const note = parseBuildIdNote(elf.bytes.subarray(Number(s.offset)), Number(s.size));
      if (note.type === NT_GNU_BUILD_ID) return note.buildId;
    } catch (e) {
      if (!(e instanceof XenError)) throw e;
      firstError ??= e;
    }
  }
  if (firstError instanceof XenError) {
    throw invalid(`${name} has a malformed build-id note: ${firstError.message}`, { noteErrno: firstError.errnoName }, firstError);
  }
  throw invalid(`${name} has no build-id note; link it with ld --build-id=sha1`);
}

function sectionMemory(sections: readonly ElfSection[]): CodeMemory {
  const find = (address: bigint, length: bigint) =>
    sections.find((s) => s.type !== SHT_NOBITS && address >= s.addr && address + length <= s.addr + s.size);
  return {
    bytesAt(address, length) {
      const s = find(address, BigInt(length));
      if (!s) return null;
      const at = Number(address - s.addr);
      return s.data.slice(at, at + length);
    },
    stringAt(address) {
      const s = find(address, 1n);
      return s ? cString(s.data, Number(address - s.addr)) : null;
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Declared images (the built-in default, synthetic fleets).
// ---------------------------------------------------------------------------------------------

export interface ImageFunctionDefinition {
  readonly name: string;
  /** What the function returns; decides its code (mov $imm32,%eax;ret or lea str(%rip),%rax;ret). */
  readonly returns: ConstantReturn;
}

export interface ImageDefinition {
  readonly name: string;
  readonly buildId: string;
  /** Where text starts; functions follow every 16 bytes, their strings sit in .rodata after. */
  readonly textBase?: bigint;
  readonly functions: readonly ImageFunctionDefinition[];
}

/** Xen's link address on x86-64. */
export const XEN_TEXT_BASE = 0xffff82d040200000n;

/**
 * An image made from a list of constant functions, with real code bytes behind it: each function
 * is the instruction sequence gcc emits for it, so expectations and the return decoder work on
 * declared images exactly as on linked ones.
 */
export function defineImage(def: ImageDefinition): HypervisorImage {
  const textBase = def.textBase ?? XEN_TEXT_BASE;
  const stride = 16;
  const text = new Uint8Array(def.functions.length * stride).fill(0x90);
  const rodataBase = alignUp(textBase + BigInt(text.length), 4096n);
  const strings: number[] = [];
  const symbols = new Map<string, ImageSymbol>();
  const returns = new Map<string, ConstantReturn>();
  const encoder = new TextEncoder();
  def.functions.forEach((fn, i) => {
    const at = i * stride;
    const address = textBase + BigInt(at);
    const v = new DataView(text.buffer);
    let size: number;
    if (fn.returns.kind === 'u32') {
      text[at] = 0xb8;
      v.setUint32(at + 1, fn.returns.value >>> 0, true);
      text[at + 5] = 0xc3;
      size = 6;
    } else {
      const stringAddress = rodataBase + BigInt(strings.length);
      strings.push(...encoder.encode(fn.returns.value), 0);
      text.set([0x48, 0x8d, 0x05], at);
      v.setInt32(at + 3, Number(stringAddress - (address + 7n)), true);
      text[at + 7] = 0xc3;
      size = 8;
    }
    if (!symbols.has(fn.name)) {
      symbols.set(fn.name, { name: fn.name, address, size: BigInt(size), kind: 'function' });
      returns.set(fn.name, fn.returns);
    }
  });
  const rodata = Uint8Array.from(strings);
  const regions = [
    { addr: textBase, data: text },
    { addr: rodataBase, data: rodata },
  ];
  const find = (address: bigint, length: bigint) =>
    regions.find((r) => address >= r.addr && address + length <= r.addr + BigInt(r.data.length));
  const buildId = buildIdFromHex(def.buildId);
  return {
    name: def.name,
    buildId,
    buildIdHex: buildIdToHex(buildId),
    symbols,
    returns,
    payloadBase: alignUp(rodataBase + BigInt(rodata.length), PAYLOAD_AREA_ALIGN),
    bytesAt(address, length) {
      const r = find(address, BigInt(length));
      if (!r) return null;
      const at = Number(address - r.addr);
      return r.data.slice(at, at + length);
    },
    stringAt(address) {
      const r = find(address, 1n);
      return r ? cString(r.data, Number(address - r.addr)) : null;
    },
  };
}

/**
 * The built-in hypervisor: Xen 4.19-unstable's version getters. Its build-id is fixed
 * (sha1 of "fleetpatch default hypervisor image, version 1"), so payloads built for it stay valid.
 */
export const DEFAULT_IMAGE: HypervisorImage = defineImage({
  name: 'default',
  buildId: 'b48efad4098d4242ea8a36386ea1467ab59cffc9',
  functions: [
    { name: 'xen_major_version', returns: { kind: 'u32', value: 4 } },
    { name: 'xen_minor_version', returns: { kind: 'u32', value: 19 } },
    { name: 'xen_extra_version', returns: { kind: 'string', value: '-unstable' } },
    { name: 'xen_changeset', returns: { kind: 'string', value: 'fleetpatch default image' } },
    { name: 'xen_compile_by', returns: { kind: 'string', value: 'fleetpatch' } },
    { name: 'xen_compile_domain', returns: { kind: 'string', value: 'example.org' } },
    { name: 'xen_compiler', returns: { kind: 'string', value: 'gcc (fleetpatch) 12.2.0' } },
    { name: 'xen_deny', returns: { kind: 'string', value: '<denied>' } },
    { name: 'xen_banner', returns: { kind: 'string', value: 'Xen' } },
  ],
});
