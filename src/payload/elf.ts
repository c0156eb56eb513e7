/**
 * A small ELF64 little-endian reader with no native dependency.
 *
 * It reads exactly what live patching needs: the file header, the section table, string tables,
 * symbols and RELA relocations. Every offset and size in the file is untrusted: each read is checked
 * against the bytes actually present, so a malformed file ends in a typed error (never a RangeError
 * from a bad index, never an allocation sized by a lying header, never a loop bounded by one).
 *
 * Two layers:
 * - the `read*` primitives take raw bytes and return raw records; the payload model (model.ts)
 *   calls them in Xen's order and turns each refusal into Xen's errno;
 * - `readElf` checks the basic invariants itself and returns an `ElfFile` view, for hypervisor
 *   images and tools. It throws FleetpatchError('ELF_MALFORMED').
 *
 * Pure: no node: imports, so workflow bundles and browsers can use it.
 */
import { FleetpatchError } from '../errors.ts';

export const ELF_HEADER_SIZE = 64;
export const ELF_SECTION_HEADER_SIZE = 64;
export const ELF_SYMBOL_SIZE = 24;
export const ELF_RELA_SIZE = 24;
export const ELF_REL_SIZE = 16;

export const ELFCLASS64 = 2;
export const ELFDATA2LSB = 1;
export const EV_CURRENT = 1;
export const ELFOSABI_NONE = 0;
export const ELFOSABI_FREEBSD = 9;

export const ET_REL = 1;
export const ET_EXEC = 2;
export const ET_DYN = 3;
export const EM_X86_64 = 62;

export const SHT_NULL = 0;
export const SHT_PROGBITS = 1;
export const SHT_SYMTAB = 2;
export const SHT_STRTAB = 3;
export const SHT_RELA = 4;
export const SHT_NOTE = 7;
export const SHT_NOBITS = 8;
export const SHT_REL = 9;

export const SHF_WRITE = 0x1n;
export const SHF_ALLOC = 0x2n;
export const SHF_EXECINSTR = 0x4n;
export const SHF_MERGE = 0x10n;
export const SHF_STRINGS = 0x20n;
export const SHF_INFO_LINK = 0x40n;

export const SHN_UNDEF = 0;
export const SHN_LORESERVE = 0xff00;
export const SHN_ABS = 0xfff1;
export const SHN_COMMON = 0xfff2;
export const SHN_XINDEX = 0xffff;

export const STB_LOCAL = 0;
export const STB_GLOBAL = 1;
export const STB_WEAK = 2;
export const STT_NOTYPE = 0;
export const STT_OBJECT = 1;
export const STT_FUNC = 2;
export const STT_SECTION = 3;
export const STT_FILE = 4;

export const R_X86_64_NONE = 0;
export const R_X86_64_64 = 1;
export const R_X86_64_PC32 = 2;
export const R_X86_64_PLT32 = 4;
/** Absolute 32-bit, zero- and sign-extended: -fno-pic code; Xen refuses both at upload. */
export const R_X86_64_32 = 10;
export const R_X86_64_32S = 11;
/** In linked PIE images (.rela.dyn): base + addend. */
export const R_X86_64_RELATIVE = 8;

export const ELF_MAGIC = [0x7f, 0x45, 0x4c, 0x46] as const;

const RELOCATION_NAMES: Record<number, string> = {
  0: 'R_X86_64_NONE', 1: 'R_X86_64_64', 2: 'R_X86_64_PC32', 3: 'R_X86_64_GOT32', 4: 'R_X86_64_PLT32',
  9: 'R_X86_64_GOTPCREL', 10: 'R_X86_64_32', 11: 'R_X86_64_32S', 24: 'R_X86_64_PC64',
  41: 'R_X86_64_GOTPCRELX', 42: 'R_X86_64_REX_GOTPCRELX',
};

export function relocationTypeName(type: number): string {
  return RELOCATION_NAMES[type] ?? `relocation type ${type}`;
}

export interface ElfHeader {
  /** EI_CLASS, EI_DATA, EI_VERSION, EI_OSABI, EI_ABIVERSION. */
  readonly elfClass: number;
  readonly dataEncoding: number;
  readonly identVersion: number;
  readonly osabi: number;
  readonly abiVersion: number;
  readonly type: number;
  readonly machine: number;
  readonly version: number;
  readonly entry: bigint;
  readonly phoff: bigint;
  readonly shoff: bigint;
  readonly flags: number;
  readonly ehsize: number;
  readonly phentsize: number;
  readonly phnum: number;
  readonly shentsize: number;
  readonly shnum: number;
  readonly shstrndx: number;
}

export interface ElfSectionHeader {
  readonly index: number;
  /** sh_name: offset of the name in the section-name string table. */
  readonly nameOffset: number;
  readonly type: number;
  readonly flags: bigint;
  readonly addr: bigint;
  readonly offset: bigint;
  readonly size: bigint;
  readonly link: number;
  readonly info: number;
  readonly addralign: bigint;
  readonly entsize: bigint;
}

export interface ElfSymbolRecord {
  readonly index: number;
  /** st_name: offset in the associated string table. */
  readonly nameOffset: number;
  readonly info: number;
  readonly bind: number;
  readonly type: number;
  readonly other: number;
  readonly shndx: number;
  readonly value: bigint;
  readonly size: bigint;
}

export interface ElfRelaRecord {
  readonly offset: bigint;
  readonly symbolIndex: number;
  readonly type: number;
  readonly addend: bigint;
}

function view(bytes: Uint8Array): DataView {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** Throws unless [offset, offset+length) lies inside bytes. Used by every primitive below. */
function requireRange(bytes: Uint8Array, offset: bigint | number, length: bigint | number, what: string): void {
  const start = BigInt(offset);
  const end = start + BigInt(length);
  if (start < 0n || end > BigInt(bytes.length)) {
    throw new FleetpatchError('ELF_MALFORMED', `${what} (bytes ${start}..${end}) lies outside the ${bytes.length}-byte file`, {
      offset: start.toString(),
      length: BigInt(length).toString(),
      fileSize: bytes.length,
    });
  }
}

export function hasElfMagic(bytes: Uint8Array): boolean {
  return bytes.length >= 4 && ELF_MAGIC.every((b, i) => bytes[i] === b);
}

/** The 64-byte ELF64 header, read little-endian. Needs at least 64 bytes. */
export function readElfHeader(bytes: Uint8Array): ElfHeader {
  requireRange(bytes, 0, ELF_HEADER_SIZE, 'the ELF header');
  const v = view(bytes);
  return {
    elfClass: bytes[4]!,
    dataEncoding: bytes[5]!,
    identVersion: bytes[6]!,
    osabi: bytes[7]!,
    abiVersion: bytes[8]!,
    type: v.getUint16(16, true),
    machine: v.getUint16(18, true),
    version: v.getUint32(20, true),
    entry: v.getBigUint64(24, true),
    phoff: v.getBigUint64(32, true),
    shoff: v.getBigUint64(40, true),
    flags: v.getUint32(48, true),
    ehsize: v.getUint16(52, true),
    phentsize: v.getUint16(54, true),
    phnum: v.getUint16(56, true),
    shentsize: v.getUint16(58, true),
    shnum: v.getUint16(60, true),
    shstrndx: v.getUint16(62, true),
  };
}

/** Section header `index` (stride e_shentsize from e_shoff), bounds-checked. */
export function readSectionHeader(bytes: Uint8Array, header: ElfHeader, index: number): ElfSectionHeader {
  const at = header.shoff + BigInt(index) * BigInt(header.shentsize);
  requireRange(bytes, at, ELF_SECTION_HEADER_SIZE, `section header ${index}`);
  const o = Number(at);
  const v = view(bytes);
  return {
    index,
    nameOffset: v.getUint32(o, true),
    type: v.getUint32(o + 4, true),
    flags: v.getBigUint64(o + 8, true),
    addr: v.getBigUint64(o + 16, true),
    offset: v.getBigUint64(o + 24, true),
    size: v.getBigUint64(o + 32, true),
    link: v.getUint32(o + 40, true),
    info: v.getUint32(o + 44, true),
    addralign: v.getBigUint64(o + 48, true),
    entsize: v.getBigUint64(o + 56, true),
  };
}

/** The bytes of a section's contents; empty for SHT_NOBITS (whose contents are zeros in memory). */
export function sectionBytes(bytes: Uint8Array, section: ElfSectionHeader): Uint8Array {
  if (section.type === SHT_NOBITS) return new Uint8Array(0);
  requireRange(bytes, section.offset, section.size, `the contents of section ${section.index}`);
  return bytes.subarray(Number(section.offset), Number(section.offset + section.size));
}

/** Symbol `index` of a symbol table whose contents are `table` and entry size `entsize`. */
export function readSymbol(table: Uint8Array, entsize: number, index: number): ElfSymbolRecord {
  const at = index * entsize;
  requireRange(table, at, ELF_SYMBOL_SIZE, `symbol ${index}`);
  const v = view(table);
  const info = table[at + 4]!;
  return {
    index,
    nameOffset: v.getUint32(at, true),
    info,
    bind: info >> 4,
    type: info & 0xf,
    other: table[at + 5]!,
    shndx: v.getUint16(at + 6, true),
    value: v.getBigUint64(at + 8, true),
    size: v.getBigUint64(at + 16, true),
  };
}

/** RELA entry `index` of a relocation section's contents with entry size `entsize`. */
export function readRela(table: Uint8Array, entsize: number, index: number): ElfRelaRecord {
  const at = index * entsize;
  requireRange(table, at, ELF_RELA_SIZE, `relocation ${index}`);
  const v = view(table);
  const info = v.getBigUint64(at + 8, true);
  return {
    offset: v.getBigUint64(at, true),
    symbolIndex: Number(info >> 32n),
    type: Number(info & 0xffffffffn),
    addend: v.getBigInt64(at + 16, true),
  };
}

const utf8 = new TextDecoder('utf-8', { fatal: false });

/** The NUL-terminated string at `offset` in `table`, stopping at the table's end if no NUL comes. */
export function cString(table: Uint8Array, offset: number, limit = table.length): string {
  if (offset < 0 || offset >= limit) return '';
  const end = Math.min(limit, table.length);
  let i = offset;
  while (i < end && table[i] !== 0) i++;
  return utf8.decode(table.subarray(offset, i));
}

/** The longest name (of a section, a symbol, a patched function) read in full; Xen's own symbol names have at most 127 bytes (KSYM_NAME_LEN). */
export const MAX_NAME_BYTES = 512;

/**
 * A name: cString, reading at most MAX_NAME_BYTES. A longer one keeps its first bytes and ends in
 * "…", so it equals no real name. Thousands of entries may point at one long string, or into it:
 * read in full, each would be a copy of it (a 1 MB payload held 500 MB of names; found by fuzzing).
 */
export function cName(table: Uint8Array, offset: number): string {
  if (offset < 0 || offset >= table.length) return '';
  const end = Math.min(table.length, offset + MAX_NAME_BYTES);
  let i = offset;
  while (i < end && table[i] !== 0) i++;
  const name = utf8.decode(table.subarray(offset, i));
  return i === end && i < table.length && table[i] !== 0 ? `${name}\u2026` : name;
}

export function readU32(bytes: Uint8Array, offset: number): number {
  requireRange(bytes, offset, 4, 'a 32-bit field');
  return view(bytes).getUint32(offset, true);
}

export function readU64(bytes: Uint8Array, offset: number): bigint {
  requireRange(bytes, offset, 8, 'a 64-bit field');
  return view(bytes).getBigUint64(offset, true);
}

export function readI32(bytes: Uint8Array, offset: number): number {
  requireRange(bytes, offset, 4, 'a 32-bit field');
  return view(bytes).getInt32(offset, true);
}

export function isPowerOfTwo(n: bigint): boolean {
  return n > 0n && (n & (n - 1n)) === 0n;
}

/** A bigint offset/size as a number when it is safely one; Infinity otherwise (for comparisons). */
export function toIndex(n: bigint): number {
  return n <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(n) : Number.POSITIVE_INFINITY;
}

// ---------------------------------------------------------------------------------------------
// The checked view, for images and tools.
// ---------------------------------------------------------------------------------------------

export interface ElfSection extends ElfSectionHeader {
  readonly name: string;
  /** The section's bytes in the file (empty for NOBITS). */
  readonly data: Uint8Array;
}

export interface ElfSymbol extends ElfSymbolRecord {
  readonly name: string;
}

export interface ElfFile {
  readonly bytes: Uint8Array;
  readonly header: ElfHeader;
  /** All sections, index 0 (SHN_UNDEF) included. */
  readonly sections: readonly ElfSection[];
  sectionByName(name: string): ElfSection | undefined;
  /** Symbols of the (first) SHT_SYMTAB, index 0 included; empty when there is none. */
  readonly symbols: readonly ElfSymbol[];
  /** RELA entries of relocation section `section`. */
  relocations(section: ElfSection): ElfRelaRecord[];
}

function malformed(message: string, details: Record<string, unknown> = {}): FleetpatchError {
  return new FleetpatchError('ELF_MALFORMED', message, details);
}

/**
 * Reads any ELF64 little-endian file (ET_REL, ET_EXEC, ET_DYN) with its section table, section
 * names and symbol table. Every structural problem is an ELF_MALFORMED error.
 */
export function readElf(bytes: Uint8Array): ElfFile {
  if (bytes.length < ELF_HEADER_SIZE) throw malformed(`the file is ${bytes.length} bytes, shorter than an ELF header`);
  if (!hasElfMagic(bytes)) throw malformed('the file does not start with the ELF magic \\x7fELF');
  const header = readElfHeader(bytes);
  if (header.elfClass !== ELFCLASS64) throw malformed(`ELF class ${header.elfClass} is not ELFCLASS64`);
  if (header.dataEncoding !== ELFDATA2LSB) throw malformed(`ELF data encoding ${header.dataEncoding} is not little endian`);
  if (header.shnum === 0) throw malformed('the file has no section table');
  if (header.shentsize < ELF_SECTION_HEADER_SIZE) throw malformed(`e_shentsize ${header.shentsize} is smaller than a section header (64)`);
  if (header.shoff + BigInt(header.shnum) * BigInt(header.shentsize) > BigInt(bytes.length)) {
    throw malformed('the section table runs past the end of the file');
  }
  if (header.shstrndx === SHN_UNDEF || header.shstrndx >= header.shnum) {
    throw malformed(`e_shstrndx ${header.shstrndx} does not name one of the ${header.shnum} sections`);
  }
  const raw: ElfSectionHeader[] = [];
  for (let i = 0; i < header.shnum; i++) {
    const s = readSectionHeader(bytes, header, i);
    if (i > 0 && s.type !== SHT_NOBITS && s.type !== SHT_NULL && s.offset + s.size > BigInt(bytes.length)) {
      throw malformed(`section ${i}'s contents run past the end of the file`, { section: i });
    }
    raw.push(s);
  }
  const shstr = raw[header.shstrndx]!;
  if (shstr.type !== SHT_STRTAB) throw malformed('the section-name string table is not SHT_STRTAB');
  const names = sectionBytes(bytes, shstr);
  const sections: ElfSection[] = raw.map((s) => ({
    ...s,
    name: s.index === 0 ? '' : s.nameOffset < names.length ? cName(names, s.nameOffset) : '',
    data: s.index === 0 || s.type === SHT_NULL ? new Uint8Array(0) : sectionBytes(bytes, s),
  }));
  for (const s of sections) {
    if (s.index > 0 && s.nameOffset >= names.length) throw malformed(`section ${s.index}'s name lies outside the section-name string table`);
  }

  const symbols: ElfSymbol[] = [];
  const symtab = sections.find((s) => s.type === SHT_SYMTAB);
  if (symtab) {
    const entsize = toIndex(symtab.entsize);
    if (entsize < ELF_SYMBOL_SIZE || symtab.data.length % entsize !== 0) throw malformed('the symbol table has a bad entry size');
    const strtab = sections[symtab.link];
    if (!strtab || strtab.type !== SHT_STRTAB) throw malformed('the symbol table does not link to a string table');
    const count = symtab.data.length / entsize;
    for (let i = 0; i < count; i++) {
      const sym = readSymbol(symtab.data, entsize, i);
      if (sym.nameOffset >= strtab.data.length && sym.nameOffset !== 0) throw malformed(`symbol ${i}'s name lies outside the string table`);
      symbols.push({ ...sym, name: cName(strtab.data, sym.nameOffset) });
    }
  }

  const byName = new Map<string, ElfSection>();
  for (const s of sections) if (s.index > 0 && !byName.has(s.name)) byName.set(s.name, s);

  return {
    bytes,
    header,
    sections,
    symbols,
    sectionByName: (name) => byName.get(name),
    relocations(section) {
      if (section.type !== SHT_RELA) return [];
      const entsize = toIndex(section.entsize);
      if (entsize < ELF_RELA_SIZE) throw malformed(`relocation section ${section.name} has entry size ${section.entsize}`);
      const out: ElfRelaRecord[] = [];
      const count = Math.floor(section.data.length / entsize);
      for (let i = 0; i < count; i++) out.push(readRela(section.data, entsize, i));
      return out;
    },
  };
}
