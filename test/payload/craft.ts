/**
 * Crafting payloads that fail exactly one of Xen's checks: build a valid payload, then patch one
 * field of the header, a section header, a symbol or a relocation in place.
 */
import { FleetpatchError, XenError } from '../../src/errors.ts';
import {
  DEFAULT_IMAGE, buildPayload, checkUpload, payloadObject, readElf, withBuildId, writeElfObject,
  type CheckedPayload, type ElfObject, type ElfObjectRelocation, type ElfObjectSection, type ElfObjectSymbol,
  type LoadedPayload, type PayloadSpec,
} from '../../src/payload/index.ts';

export const IMAGE = DEFAULT_IMAGE;

export const HELLO: PayloadSpec = {
  name: 'crafted',
  funcs: [{ target: 'xen_extra_version', returns: 'Hello World' }],
  modinfo: ['LIVEPATCH_RULEZ'],
};

export function build(spec: Partial<PayloadSpec> = {}): Uint8Array {
  return buildPayload({ ...HELLO, ...spec } as PayloadSpec, { image: IMAGE });
}

/** The builder's ELF object for a spec, as plain mutable arrays. */
export interface MutableObject {
  sections: ElfObjectSection[];
  symbols: ElfObjectSymbol[];
  relocations: Record<string, ElfObjectRelocation[]>;
}

export function object(spec: Partial<PayloadSpec> = {}): MutableObject {
  const o = payloadObject({ ...HELLO, ...spec } as PayloadSpec, { image: IMAGE });
  return {
    sections: [...o.sections],
    symbols: [...(o.symbols ?? [])],
    relocations: Object.fromEntries(Object.entries(o.relocations ?? {}).map(([k, v]) => [k, [...v]])),
  };
}

export function write(o: ElfObject): Uint8Array {
  return withBuildId(writeElfObject(o));
}

type Field = readonly [offset: number, width: 1 | 2 | 4 | 8];

const HEADER = {
  class: [4, 1], data: [5, 1], identVersion: [6, 1], osabi: [7, 1], abiVersion: [8, 1],
  type: [16, 2], machine: [18, 2], version: [20, 4], phoff: [32, 8], shoff: [40, 8],
  phnum: [56, 2], shentsize: [58, 2], shnum: [60, 2], shstrndx: [62, 2],
} as const satisfies Record<string, Field>;
const SHDR = {
  name: [0, 4], type: [4, 4], flags: [8, 8], addr: [16, 8], offset: [24, 8], size: [32, 8],
  link: [40, 4], info: [44, 4], addralign: [48, 8], entsize: [56, 8],
} as const satisfies Record<string, Field>;
const SYM = { name: [0, 4], info: [4, 1], other: [5, 1], shndx: [6, 2], value: [8, 8], size: [16, 8] } as const satisfies Record<string, Field>;
const RELA = { offset: [0, 8], info: [8, 8], addend: [16, 8] } as const satisfies Record<string, Field>;

function put(bytes: Uint8Array, at: number, width: number, value: number | bigint): void {
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const n = BigInt(value);
  if (width === 1) v.setUint8(at, Number(n));
  else if (width === 2) v.setUint16(at, Number(n), true);
  else if (width === 4) v.setUint32(at, Number(BigInt.asUintN(32, n)), true);
  else v.setBigUint64(at, BigInt.asUintN(64, n), true);
}

export function patchHeader(bytes: Uint8Array, field: keyof typeof HEADER, value: number | bigint): Uint8Array {
  const out = bytes.slice();
  const [at, width] = HEADER[field];
  put(out, at, width, value);
  return out;
}

function sectionIndex(bytes: Uint8Array, section: string | number): number {
  if (typeof section === 'number') return section;
  const s = readElf(bytes).sectionByName(section);
  if (!s) throw new Error(`no section ${section}`);
  return s.index;
}

export function sectionHeaderOffset(bytes: Uint8Array, section: string | number): number {
  const elf = readElf(bytes);
  return Number(elf.header.shoff) + sectionIndex(bytes, section) * elf.header.shentsize;
}

export function patchSection(bytes: Uint8Array, section: string | number, field: keyof typeof SHDR, value: number | bigint): Uint8Array {
  const out = bytes.slice();
  const [at, width] = SHDR[field];
  put(out, sectionHeaderOffset(bytes, section) + at, width, value);
  return out;
}

/** Renames a section by pointing its sh_name one byte further (".livepatch.depends" -> "livepatch.depends"). */
export function hideSection(bytes: Uint8Array, section: string): Uint8Array {
  const elf = readElf(bytes);
  const s = elf.sectionByName(section)!;
  return patchSection(bytes, section, 'name', s.nameOffset + 1);
}

/** Overwrites bytes inside a section's contents. */
export function patchSectionData(bytes: Uint8Array, section: string, offset: number, data: number[] | Uint8Array): Uint8Array {
  const out = bytes.slice();
  const s = readElf(bytes).sectionByName(section)!;
  out.set(data, Number(s.offset) + offset);
  return out;
}

export function putSectionData(bytes: Uint8Array, section: string, offset: number, width: 1 | 2 | 4 | 8, value: number | bigint): Uint8Array {
  const out = bytes.slice();
  const s = readElf(bytes).sectionByName(section)!;
  put(out, Number(s.offset) + offset, width, value);
  return out;
}

export function patchSymbol(bytes: Uint8Array, name: string, field: keyof typeof SYM, value: number | bigint): Uint8Array {
  const elf = readElf(bytes);
  const sym = elf.symbols.find((s) => s.name === name);
  if (!sym) throw new Error(`no symbol ${name}`);
  const symtab = elf.sections.find((s) => s.type === 2)!;
  const out = bytes.slice();
  const [at, width] = SYM[field];
  put(out, Number(symtab.offset) + sym.index * Number(symtab.entsize) + at, width, value);
  return out;
}

export function patchRela(bytes: Uint8Array, relaSection: string, index: number, field: keyof typeof RELA, value: number | bigint): Uint8Array {
  const s = readElf(bytes).sectionByName(relaSection)!;
  const out = bytes.slice();
  const [at, width] = RELA[field];
  put(out, Number(s.offset) + index * 24 + at, width, value);
  return out;
}

export function upload(bytes: Uint8Array, options: { name?: string; loaded?: LoadedPayload[]; loadAddress?: bigint } = {}): CheckedPayload {
  return checkUpload({ name: options.name ?? 'crafted', bytes, image: IMAGE, loaded: options.loaded ?? [], ...(options.loadAddress !== undefined ? { loadAddress: options.loadAddress } : {}) });
}

/** The XenError fn throws; fails the test if it throws anything else or nothing. */
export function refusal(fn: () => unknown): XenError {
  try {
    fn();
  } catch (e) {
    if (e instanceof XenError) return e;
    if (e instanceof FleetpatchError) throw new Error(`expected a XenError, got ${e.code}: ${e.message}`);
    throw e;
  }
  throw new Error('expected a XenError, but the call succeeded');
}

export function asLoaded(c: CheckedPayload): LoadedPayload {
  return { name: c.name, buildId: c.payload.buildId, symbols: c.exportedSymbols, loadAddress: c.loadAddress, pages: c.pages };
}
