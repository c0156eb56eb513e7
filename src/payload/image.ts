/**
 * Hypervisor images: what a payload is checked and linked against.
 *
 * An image is a build-id, a symbol table (name -> address, size), the bytes of its code (for
 * expectations and for deciding what unpatched functions return, see returns.ts), and the address where Xen puts
 * payloads (within ±2 GiB of its text, so a 5-byte jump reaches). It comes from a real linked
 * `xen-syms` (`readImage`), from a declarative definition (`defineImage`), or is the built-in
 * `DEFAULT_IMAGE`.
 *
 * Pure: no node: imports.
 */
import { FleetpatchError, XenError } from '../errors.ts';
import { buildIdFromHex, buildIdToHex } from './build-id.ts';
import {
  R_X86_64_RELATIVE, SHF_ALLOC, SHF_EXECINSTR, SHF_WRITE, SHN_ABS, SHN_UNDEF, SHT_NOBITS, SHT_NOTE, SHT_RELA, STT_FILE, STT_FUNC,
  STT_OBJECT, STT_SECTION, cString, readElf, type ElfFile, type ElfSection,
} from './elf.ts';
import { NT_GNU_BUILD_ID, parseBuildIdNote } from './note.ts';
import { constantReturnAt, fromConstant, type CodeMemory, type ConstantReturn, type FunctionResult, type MemoryRegion } from './returns.ts';

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
  /**
   * What each function returns when nothing patches it, decided from its code (returns.ts) the
   * first time it is asked for: a string, an integer, or undefined with the reason.
   */
  readonly returns: ReadonlyMap<string, FunctionResult>;
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

  const functionsAt = new Map<bigint, string>();
  for (const sym of symbols.values()) if (sym.kind === 'function' && !functionsAt.has(sym.address)) functionsAt.set(sym.address, sym.name);
  const memory = { ...sectionMemory(loaded, dynamicRelocations(elf)), symbolAt: (address: bigint) => functionsAt.get(address) ?? null };
  let end = 0n;
  for (const s of loaded) if (s.addr + s.size > end) end = s.addr + s.size;

  const functions = [...symbols.values()].filter((sym) => sym.kind === 'function');
  const returns = new LazyResults(functions.map((f) => f.name), (fn) => {
    const sym = symbols.get(fn)!;
    return constantReturnAt(memory, sym.address, { name: fn, size: Number(sym.size) });
  });
  return { name, buildId, buildIdHex: buildIdToHex(buildId), symbols, payloadBase: alignUp(end, PAYLOAD_AREA_ALIGN), returns, ...memory };
}

/**
 * A map whose values are computed on first access and kept: an image of thousands of functions
 * decodes only those somebody calls (the emulator asks once per image, memoised).
 */
class LazyResults implements ReadonlyMap<string, FunctionResult> {
  private readonly known = new Map<string, FunctionResult>();
  private readonly names: ReadonlySet<string>;
  constructor(names: readonly string[], private readonly compute: (name: string) => FunctionResult) {
    this.names = new Set(names);
  }
  get size(): number {
    return this.names.size;
  }
  has(name: string): boolean {
    return this.names.has(name);
  }
  get(name: string): FunctionResult | undefined {
    if (!this.names.has(name)) return undefined;
    let r = this.known.get(name);
    if (!r) this.known.set(name, (r = this.compute(name)));
    return r;
  }
  *entries(): MapIterator<[string, FunctionResult]> {
    for (const n of this.names) yield [n, this.get(n)!];
  }
  keys(): MapIterator<string> {
    return this.names.values();
  }
  *values(): MapIterator<FunctionResult> {
    for (const n of this.names) yield this.get(n)!;
  }
  forEach(fn: (value: FunctionResult, key: string, map: ReadonlyMap<string, FunctionResult>) => void): void {
    for (const n of this.names) fn(this.get(n)!, n, this);
  }
  [Symbol.iterator](): MapIterator<[string, FunctionResult]> {
    return this.entries();
  }
}

/** R_X86_64_RELATIVE entries of a PIE image (.rela.dyn): address -> the pointer the loader writes there. */
function dynamicRelocations(elf: ElfFile): Map<bigint, bigint> {
  const out = new Map<bigint, bigint>();
  for (const s of elf.sections) {
    if (s.type !== SHT_RELA || (s.flags & SHF_ALLOC) === 0n) continue;
    for (const r of elf.relocations(s)) if (r.type === R_X86_64_RELATIVE) out.set(r.offset, BigInt.asUintN(64, r.addend));
  }
  return out;
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

function sectionMemory(sections: readonly ElfSection[], relative: ReadonlyMap<bigint, bigint>): CodeMemory {
  const find = (address: bigint, length: bigint) =>
    sections.find((s) => s.type !== SHT_NOBITS && address >= s.addr && address + length <= s.addr + s.size);
  return {
    bytesAt(address, length) {
      const s = find(address, BigInt(length));
      if (!s) return null;
      const at = Number(address - s.addr);
      // A copy: callers may write into it (live code), and a Node Buffer's slice() is a view.
      return Uint8Array.prototype.slice.call(s.data, at, at + length);
    },
    stringAt(address) {
      const s = find(address, 1n);
      return s ? cString(s.data, Number(address - s.addr)) : null;
    },
    regionAt(address): MemoryRegion | null {
      const s = sections.find((x) => address >= x.addr && address < x.addr + x.size);
      return s ? { name: s.name, start: s.addr, size: s.size, writable: (s.flags & SHF_WRITE) !== 0n, executable: (s.flags & SHF_EXECINSTR) !== 0n } : null;
    },
    relocatedAt(address) {
      return relative.get(address) ?? null;
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
  const returns = new Map<string, FunctionResult>();
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
      for (const b of encoder.encode(fn.returns.value)) strings.push(b);
      strings.push(0);
      text.set([0x48, 0x8d, 0x05], at);
      v.setInt32(at + 3, Number(stringAddress - (address + 7n)), true);
      text[at + 7] = 0xc3;
      size = 8;
    }
    if (!symbols.has(fn.name)) {
      symbols.set(fn.name, { name: fn.name, address, size: BigInt(size), kind: 'function' });
      returns.set(fn.name, fromConstant(fn.returns));
    }
  });
  const rodata = Uint8Array.from(strings);
  const regions = [
    { addr: textBase, data: text, name: '.text', executable: true },
    { addr: rodataBase, data: rodata, name: '.rodata', executable: false },
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
    regionAt(address) {
      const r = find(address, 1n);
      return r ? { name: r.name, start: r.addr, size: BigInt(r.data.length), writable: false, executable: r.executable } : null;
    },
    symbolAt(address) {
      for (const sym of symbols.values()) if (sym.address === address) return sym.name;
      return null;
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
