/**
 * The livepatch payload model, and the one ordered pipeline of Xen's checks that produces it.
 *
 * `parsePayload(bytes)` runs every check that depends on the payload alone, in Xen's order and with
 * Xen's errno, and returns a `LivepatchPayload`: its build-ids, its functions resolved through the
 * relocations, its hooks, modinfo, writable data, and the ELF pieces (sections, symbols,
 * relocations) a hypervisor emulator needs. `checkUpload` (upload-check.ts) runs the same pipeline
 * with a hypervisor and the payloads already loaded, which adds the checks that need them
 * (unknown symbols, the xen_depends match, old-address lookup by name, distance, overflow) at the
 * place Xen makes them. One pipeline, so the order can never drift between the two.
 *
 * The order (xen-livepatch.md section 2; steps 1, 2 and 8 belong to upload-check.ts):
 *   3. ELF header   4. sections, string tables, symbols, writable+executable, relocations
 *   5. .livepatch.xen_depends   6. .livepatch.depends, .note.gnu.build-id, something to patch
 *   7. functions, hooks, .modinfo
 *
 * Two formats: `livepatch` (.livepatch.funcs, struct version 2, 104 bytes) and the 2016 xSplice
 * form (.xsplice.funcs / .xsplice.depends, struct version 1, 64 bytes). The parser accepts each in
 * its own form; the upload check models Xen 4.14+, which wants xen_depends and version 2.
 *
 * Pure: no node: imports.
 */
import { XenError, type XenErrnoName } from '../errors.ts';
import { buildIdToHex } from './build-id.ts';
import {
  ELF_HEADER_SIZE, ELF_MAGIC, ELF_RELA_SIZE, ELF_SECTION_HEADER_SIZE, ELF_SYMBOL_SIZE, ELFCLASS64, ELFDATA2LSB,
  ELFOSABI_FREEBSD, ELFOSABI_NONE, EM_X86_64, ET_REL, EV_CURRENT, R_X86_64_64, R_X86_64_NONE, R_X86_64_PC32,
  R_X86_64_PLT32, SHF_ALLOC, SHF_EXECINSTR, SHF_MERGE, SHF_WRITE, SHN_ABS, SHN_COMMON, SHN_LORESERVE, SHN_UNDEF,
  SHT_NOBITS, SHT_REL, SHT_RELA, SHT_STRTAB, SHT_SYMTAB, STT_FILE, STT_FUNC, STT_OBJECT, STT_SECTION, cName, cString, isPowerOfTwo, readElfHeader, readRela,
  readSectionHeader, readSymbol, readU32, readU64, relocationTypeName, toIndex, type ElfHeader, type ElfSectionHeader,
} from './elf.ts';
import { parseBuildIdNote } from './note.ts';

/** Xen's LIVEPATCH_MAX_SIZE (2 MiB): the largest payload, and the largest writable or allocated NOBITS section. */
const LIVEPATCH_MAX_SIZE = 2 * 1024 * 1024;

export const SECTION = {
  funcs: '.livepatch.funcs',
  depends: '.livepatch.depends',
  xenDepends: '.livepatch.xen_depends',
  buildId: '.note.gnu.build-id',
  modinfo: '.modinfo',
  xspliceFuncs: '.xsplice.funcs',
  xspliceDepends: '.xsplice.depends',
  hooks: {
    load: '.livepatch.hooks.load',
    unload: '.livepatch.hooks.unload',
    preApply: '.livepatch.hooks.preapply',
    apply: '.livepatch.hooks.apply',
    postApply: '.livepatch.hooks.postapply',
    preRevert: '.livepatch.hooks.prerevert',
    revert: '.livepatch.hooks.revert',
    postRevert: '.livepatch.hooks.postrevert',
  },
} as const;

export type PayloadFormat = 'livepatch' | 'xsplice';

/** struct livepatch_func: version 2 is 104 bytes (Xen 4.14+), version 1 (xSplice) 64 bytes. */
export const FUNC_STRUCT = {
  livepatch: { version: 2, size: 104 },
  xsplice: { version: 1, size: 64 },
} as const;
export const FUNC_FIELD = { name: 0, newAddr: 8, oldAddr: 16, newSize: 24, oldSize: 28, version: 32, opaque: 33, expect: 72 } as const;
/** sizeof(func->opaque): the most bytes a NOP entry may replace. */
export const NOP_MAX_SIZE = 31;
/** A 5-byte `jmp rel32` must fit in the old function (ARCH_PATCH_INSN_SIZE). */
export const PATCH_INSN_SIZE = 5;
/** ARCH_LIVEPATCH_RANGE on x86: new and old function must be within 2 GiB of each other. */
export const LIVEPATCH_RANGE = 1n << 31n;
export const PAGE_SIZE = 4096n;

/** Where a pointer in the payload points once Xen has relocated it. */
export type PayloadAddress =
  /** Into one of the payload's own sections (a symbol or section symbol plus addend). */
  | { readonly kind: 'payload'; readonly sectionIndex: number; readonly section: string; readonly offset: bigint; readonly symbol: string | null }
  /** An undefined symbol, resolved against the hypervisor or the payloads already loaded. */
  | { readonly kind: 'external'; readonly symbol: string; readonly addend: bigint }
  /** A number written in the payload (no relocation, or against an absolute symbol). */
  | { readonly kind: 'absolute'; readonly value: bigint };

export interface PayloadSection {
  readonly index: number;
  readonly name: string;
  readonly type: number;
  readonly flags: bigint;
  readonly offset: bigint;
  readonly size: bigint;
  readonly addralign: bigint;
  readonly link: number;
  readonly info: number;
  readonly entsize: bigint;
  readonly alloc: boolean;
  readonly write: boolean;
  readonly exec: boolean;
  /** Contents in the file; empty for SHT_NOBITS (zeros in memory). */
  readonly data: Uint8Array;
}

export interface PayloadSymbol {
  readonly index: number;
  readonly name: string;
  readonly value: bigint;
  readonly size: bigint;
  readonly bind: number;
  readonly type: number;
  readonly shndx: number;
  /** The section it is defined in, or null (undefined, absolute, common). */
  readonly section: string | null;
}

export interface PayloadRelocation {
  /** The SHT_RELA section holding it, and the section it patches. */
  readonly relocationSection: number;
  readonly targetSection: number;
  readonly offset: bigint;
  readonly type: number;
  readonly typeName: string;
  readonly symbolIndex: number;
  readonly symbol: string;
  readonly addend: bigint;
}

export interface FuncExpectation {
  readonly enabled: boolean;
  readonly len: number;
  readonly rsv: number;
  /** The 31 data bytes; the first `len` are the expected bytes at old_addr. */
  readonly data: Uint8Array;
}

export interface PayloadFunc {
  readonly index: number;
  /** The struct's version byte (2 for livepatch, 1 for xSplice). */
  readonly version: number;
  /** The string `name` points to, or null when it is 0 or points outside the payload. */
  readonly name: string | null;
  readonly nameAddress: PayloadAddress | null;
  /** null: new_addr is 0, a NOP entry. */
  readonly newAddress: PayloadAddress | null;
  /** null: old_addr is 0, so Xen looks `name` up in the symbol tables. */
  readonly oldAddress: PayloadAddress | null;
  /** The payload's function at new_addr (symbol name), if there is one. */
  readonly newSymbol: string | null;
  /** The hypervisor symbol old_addr is relocated against, if it is. */
  readonly oldSymbol: string | null;
  readonly newSize: number;
  readonly oldSize: number;
  readonly nop: boolean;
  /** Version 2 only; null for xSplice entries. */
  readonly expect: FuncExpectation | null;
}

export interface PayloadHooks {
  readonly load: readonly (PayloadAddress | null)[];
  readonly unload: readonly (PayloadAddress | null)[];
  readonly preApply: PayloadAddress | null;
  readonly apply: PayloadAddress | null;
  readonly postApply: PayloadAddress | null;
  readonly preRevert: PayloadAddress | null;
  readonly revert: PayloadAddress | null;
  readonly postRevert: PayloadAddress | null;
  /** Hook sections present in the payload (even if a pointer in them is 0). */
  readonly sections: readonly string[];
}

export interface ModinfoEntry {
  readonly key: string;
  /** null for a string without '=' (Xen's own test payload has "LIVEPATCH_RULEZ"). */
  readonly value: string | null;
  readonly raw: string;
}

/** Where each loaded section goes, relative to the payload's load address (move_payload). */
export interface PayloadLayout {
  /** Section index -> offset from the load address. Only sections Xen loads (ALLOC, size > 0). */
  readonly sections: ReadonlyMap<number, bigint>;
  readonly textSize: bigint;
  readonly rwSize: bigint;
  readonly roSize: bigint;
  /** Pages Xen allocates: PAGE_ALIGN(text) + PAGE_ALIGN(rw) + ro, rounded up. */
  readonly pages: bigint;
}

export interface LivepatchPayload {
  readonly format: PayloadFormat;
  /** File size in bytes. */
  readonly size: number;
  readonly bytes: Uint8Array;
  /** Own build-id (.note.gnu.build-id). */
  readonly buildId: Uint8Array;
  readonly buildIdHex: string;
  /** The build-id this payload must sit on (.livepatch.depends or .xsplice.depends). */
  readonly depends: Uint8Array;
  readonly dependsHex: string;
  /** The hypervisor it was built for (.livepatch.xen_depends), or null when absent. */
  readonly xenDepends: Uint8Array | null;
  readonly xenDependsHex: string | null;
  readonly funcs: readonly PayloadFunc[];
  readonly funcsSection: string | null;
  readonly hooks: PayloadHooks;
  readonly modinfo: readonly ModinfoEntry[];
  /** Allocated, writable, non-empty sections (Xen's RW region). */
  readonly writableSections: readonly string[];
  /**
   * Whether the payload has writable data: Xen marks a payload safe to re-apply after a revert only
   * if its only writable section is .livepatch.funcs, or it has none (move_payload).
   */
  readonly hasWritableData: boolean;
  readonly canReapply: boolean;
  readonly sections: readonly PayloadSection[];
  readonly symbols: readonly PayloadSymbol[];
  /** Relocations by the index of the section they patch. */
  readonly relocations: ReadonlyMap<number, readonly PayloadRelocation[]>;
  readonly layout: PayloadLayout;
  /** Undefined symbols the payload needs from the hypervisor or other payloads. */
  readonly undefinedSymbols: readonly string[];
  sectionByName(name: string): PayloadSection | undefined;
  symbolByName(name: string): PayloadSymbol | undefined;
}

/** What a hypervisor supplies to the pipeline when it checks an upload. */
export interface UploadEnvironment {
  /** The payload's name, for sentences. */
  readonly name: string;
  /** The running hypervisor's build-id. */
  readonly hypervisorBuildId: Uint8Array;
  /** Xen's symbols_lookup_by_name, then livepatch_symbols_lookup_by_name (new symbols of loaded payloads). */
  lookupSymbol(name: string): { address: bigint; from: string } | null;
  /** Where the payload is loaded (its text region starts here). */
  readonly loadAddress: bigint;
}

/** What the pipeline knows after an upload check, beyond the model. */
export interface UploadResolution {
  readonly loadAddress: bigint;
  /** Per function (same order as payload.funcs): addresses after relocation and lookup. */
  readonly funcs: readonly { readonly oldAddress: bigint; readonly newAddress: bigint; readonly oldResolvedBy: 'relocation' | 'absolute' | 'name'; readonly oldFrom: string }[];
}

export interface ParseOptions {
  /** Name used in sentences (default "payload"). */
  readonly name?: string;
}

/**
 * Parses a livepatch payload and runs every check of Xen's that needs only the payload.
 * Throws XenError (errno, a sentence, and details.step / details.check).
 */
export function parsePayload(bytes: Uint8Array, options: ParseOptions = {}): LivepatchPayload {
  return runPipeline(bytes, options.name ?? 'payload', undefined).payload;
}

/** The pipeline; `env` present means "as Xen's upload would". Used by upload-check.ts. */
export function runPipeline(bytes: Uint8Array, name: string, env: UploadEnvironment | undefined): { payload: LivepatchPayload; resolution: UploadResolution | null } {
  return new Pipeline(bytes, name, env).run();
}

type Step = 3 | 4 | 5 | 6 | 7;

class Pipeline {
  private header!: ElfHeader;
  private sections: PayloadSection[] = [];
  private sectionNameOffsets: number[] = [];
  private symtabIndex = -1;
  private symbols: PayloadSymbol[] = [];
  private relocations = new Map<number, PayloadRelocation[]>();
  private layout!: PayloadLayout;
  private resolvedSymbolValue = new Map<number, bigint>();

  constructor(
    private readonly bytes: Uint8Array,
    private readonly name: string,
    private readonly env: UploadEnvironment | undefined,
  ) {}

  private fail(errno: XenErrnoName, step: Step, check: string, reason: string, facts: Record<string, unknown> = {}): never {
    throw new XenError(errno, `${this.name}: ${reason}`, { step, check, payload: this.name, ...facts });
  }

  run(): { payload: LivepatchPayload; resolution: UploadResolution | null } {
    this.checkHeader();
    this.readSections();
    this.readStringTablesAndSymbols();
    this.resolveSymbols();
    this.checkWritableExecutable();
    this.layout = this.computeLayout();
    this.checkRelocations();

    const format = this.format();
    const xenDepends = this.checkXenDepends();
    const { buildId, depends } = this.checkSpecialSections(format);
    const funcsSection = this.checkPatchingSections(format);
    const { funcs, resolved } = this.checkFuncs(format, funcsSection);
    const hooks = this.checkHooks();
    const modinfo = this.checkModinfo();

    const writable = this.sections.filter((s) => s.index > 0 && this.isLoaded(s) && !s.exec && s.write);
    const lastWritable = writable[writable.length - 1];
    // Xen exempts .livepatch.funcs (it writes `applied` and `opaque` there); the xSplice form's
    // funcs section plays the same role.
    const canReapply = writable.length === 0 || (writable.length === 1 && lastWritable!.name === (funcsSection?.name ?? SECTION.funcs));

    const byName = new Map<string, PayloadSection>();
    for (const s of this.sections) if (s.index > 0 && !byName.has(s.name)) byName.set(s.name, s);
    const symByName = new Map<string, PayloadSymbol>();
    for (const s of this.symbols) if (s.index > 0 && s.name && s.shndx !== SHN_UNDEF && !symByName.has(s.name)) symByName.set(s.name, s);

    const payload: LivepatchPayload = {
      format,
      size: this.bytes.length,
      bytes: this.bytes,
      buildId,
      buildIdHex: buildIdToHex(buildId),
      depends,
      dependsHex: buildIdToHex(depends),
      xenDepends,
      xenDependsHex: xenDepends ? buildIdToHex(xenDepends) : null,
      funcs,
      funcsSection: funcsSection?.name ?? null,
      hooks,
      modinfo,
      writableSections: writable.map((s) => s.name),
      hasWritableData: !canReapply,
      canReapply,
      sections: this.sections,
      symbols: this.symbols,
      relocations: this.relocations,
      layout: this.layout,
      undefinedSymbols: [...new Set(this.symbols.filter((s) => s.index > 0 && s.shndx === SHN_UNDEF).map((s) => s.name))],
      sectionByName: (n) => byName.get(n),
      symbolByName: (n) => symByName.get(n),
    };
    return { payload, resolution: this.env ? { loadAddress: this.env.loadAddress, funcs: resolved } : null };
  }

  // ---- step 3: the ELF header (livepatch_header_check) ----------------------------------------

  private checkHeader(): void {
    const len = this.bytes.length;
    if (len < ELF_HEADER_SIZE) this.fail('EINVAL', 3, 'header-size', `the file is ${len} bytes, shorter than an ELF header (64)`);
    if (!ELF_MAGIC.every((b, i) => this.bytes[i] === b)) this.fail('EINVAL', 3, 'magic', 'not an ELF file (no \\x7fELF magic)');
    const h = (this.header = readElfHeader(this.bytes));
    const unsupported = (what: string) => this.fail('EOPNOTSUPP', 3, 'header-kind', `not a livepatch ELF: ${what}`);
    if (h.version !== EV_CURRENT) unsupported(`e_version is ${h.version}, not 1`);
    if (h.identVersion !== EV_CURRENT) unsupported(`EI_VERSION is ${h.identVersion}, not 1`);
    if (h.abiVersion !== 0) unsupported(`EI_ABIVERSION is ${h.abiVersion}, not 0`);
    if (h.osabi !== ELFOSABI_NONE && h.osabi !== ELFOSABI_FREEBSD) unsupported(`OS ABI ${h.osabi} is neither System V (0) nor FreeBSD (9)`);
    if (h.type !== ET_REL) unsupported(`e_type is ${h.type}, a payload must be a relocatable object (ET_REL, 1)`);
    if (h.phnum !== 0) unsupported(`it has ${h.phnum} program headers; a relocatable payload has none`);
    if (h.machine !== EM_X86_64) this.fail('EOPNOTSUPP', 3, 'machine', `e_machine is ${h.machine}, not x86-64 (62)`);
    if (h.elfClass !== ELFCLASS64) this.fail('EOPNOTSUPP', 3, 'machine', `ELF class ${h.elfClass} is not ELFCLASS64 (2)`);
    if (h.dataEncoding !== ELFDATA2LSB) this.fail('EOPNOTSUPP', 3, 'machine', `data encoding ${h.dataEncoding} is not little endian (1)`);
    if (h.shstrndx === SHN_UNDEF) this.fail('EINVAL', 3, 'shstrndx', 'e_shstrndx is 0: the section names are undefined');
    if (h.shnum >= 1024) this.fail('EOPNOTSUPP', 3, 'shnum', `${h.shnum} sections, Xen allows fewer than 1024`);
    if (h.shstrndx >= h.shnum) this.fail('EINVAL', 3, 'shstrndx', `e_shstrndx ${h.shstrndx} is past the ${h.shnum} sections`);
    if (h.shoff >= BigInt(len)) this.fail('EINVAL', 3, 'shoff', `e_shoff ${h.shoff} is beyond the ${len}-byte file`);
    if (h.shentsize < ELF_SECTION_HEADER_SIZE) this.fail('EINVAL', 3, 'shentsize', `e_shentsize is ${h.shentsize}, smaller than a section header (64)`);
    if ((BigInt(len) - h.shoff) / BigInt(h.shentsize) < BigInt(h.shnum)) {
      this.fail('EINVAL', 3, 'section-table', `the table of ${h.shnum} section headers runs past the end of the file`);
    }
  }

  // ---- step 4: sections, names, symbols (elf_resolve_sections & co) ----------------------------

  private readSections(): void {
    const len = BigInt(this.bytes.length);
    const raw: ElfSectionHeader[] = [];
    for (let i = 0; i < this.header.shnum; i++) raw.push(readSectionHeader(this.bytes, this.header, i));
    let symtab = -1;
    for (let i = 1; i < raw.length; i++) {
      const s = raw[i]!;
      if (s.offset < BigInt(ELF_HEADER_SIZE) || (s.type !== SHT_NOBITS && (s.offset > len || s.offset + s.size > len))) {
        this.fail('EINVAL', 4, 'section-data', s.offset < BigInt(ELF_HEADER_SIZE)
          ? `section ${i}'s data starts inside the ELF header (offset ${s.offset})`
          : `section ${i}'s data (offset ${s.offset}, ${s.size} bytes) runs past the end of the ${len}-byte file`, { section: i });
      }
      if (s.addralign !== 0n && !isPowerOfTwo(s.addralign)) {
        this.fail('EOPNOTSUPP', 4, 'section-align', `section ${i}'s alignment ${s.addralign} is not a power of two`, { section: i });
      }
      // Xen allocates .bss like the rest of the payload: no bigger than LIVEPATCH_MAX_SIZE. Its
      // test is (sh_flags & (SHF_WRITE | SHF_ALLOC)): a read-only but allocated NOBITS section of
      // 2^40 bytes is refused too (before, it was accepted with a layout of 2^28 pages).
      if (s.type === SHT_NOBITS && (s.flags & (SHF_WRITE | SHF_ALLOC)) !== 0n && s.size > BigInt(LIVEPATCH_MAX_SIZE)) {
        this.fail('EINVAL', 4, 'bss-size', `section ${i} is a NOBITS section (.bss) of ${s.size} bytes that Xen would allocate; it refuses more than 2 MiB (${LIVEPATCH_MAX_SIZE})`, { section: i });
      }
      if (s.type === SHT_SYMTAB) {
        if (symtab !== -1) this.fail('EOPNOTSUPP', 4, 'symtab-multiple', `more than one symbol table (sections ${symtab} and ${i})`);
        symtab = i;
        if (s.link >= this.header.shnum) this.fail('EINVAL', 4, 'symtab-link', `the symbol table's string table (section ${s.link}) is past the ${this.header.shnum} sections`);
      }
    }
    if (symtab === -1) this.fail('EINVAL', 4, 'symtab-missing', 'there is no symbol table');
    this.symtabIndex = symtab;
    this.sectionNameOffsets = raw.map((s) => s.nameOffset);
    this.sections = raw.map((s) => ({
      index: s.index,
      name: '',
      type: s.type,
      flags: s.flags,
      offset: s.offset,
      size: s.size,
      addralign: s.addralign,
      link: s.link,
      info: s.info,
      entsize: s.entsize,
      alloc: (s.flags & SHF_ALLOC) !== 0n,
      write: (s.flags & SHF_WRITE) !== 0n,
      exec: (s.flags & SHF_EXECINSTR) !== 0n,
      data: s.index === 0 || s.type === SHT_NOBITS ? new Uint8Array(0) : this.bytes.subarray(Number(s.offset), Number(s.offset + s.size)),
    }));
  }

  private verifyStrtab(s: PayloadSection | undefined): boolean {
    return !!s && s.index > 0 && s.type === SHT_STRTAB && s.size > 0n && s.data[0] === 0 && s.data[s.data.length - 1] === 0;
  }

  private readStringTablesAndSymbols(): void {
    const symtab = this.sections[this.symtabIndex]!;
    const entsize = toIndex(symtab.entsize);
    if (symtab.size === 0n || entsize < ELF_SYMBOL_SIZE || symtab.data.length % entsize !== 0) {
      this.fail('EINVAL', 4, 'symtab-corrupt', `the symbol table header is corrupt (size ${symtab.size}, entry size ${symtab.entsize})`);
    }
    const strtab = this.sections[symtab.link];
    if (!this.verifyStrtab(strtab)) {
      this.fail('EINVAL', 4, 'strtab', `the symbol string table (section ${symtab.link}) is not a NUL-first, NUL-last string table`);
    }
    const shstrtab = this.sections[this.header.shstrndx];
    if (!this.verifyStrtab(shstrtab)) {
      this.fail('EINVAL', 4, 'shstrtab', `the section-name string table (section ${this.header.shstrndx}) is not a NUL-first, NUL-last string table`);
    }
    const names = shstrtab!.data;
    this.sections = this.sections.map((s) => {
      if (s.index === 0) return s;
      const at = this.sectionNameOffsets[s.index]!;
      if (at >= names.length) {
        this.fail('EINVAL', 4, 'section-name', `section ${s.index}'s name (offset ${at}) is outside the section-name string table`, { section: s.index });
      }
      return { ...s, name: cName(names, at) };
    });

    const strings = strtab!.data;
    const count = symtab.data.length / entsize;
    const symbols: PayloadSymbol[] = [];
    for (let i = 0; i < count; i++) {
      const r = readSymbol(symtab.data, entsize, i);
      if (i > 0 && r.nameOffset >= strings.length) {
        this.fail('EINVAL', 4, 'symbol-name', `symbol ${i}'s name (offset ${r.nameOffset}) is outside the string table`, { symbol: i });
      }
      const section = r.shndx !== SHN_UNDEF && r.shndx < this.sections.length ? this.sections[r.shndx]!.name : null;
      symbols.push({ index: i, name: i === 0 ? '' : cName(strings, r.nameOffset), value: r.value, size: r.size, bind: r.bind, type: r.type, shndx: r.shndx, section });
    }
    this.symbols = symbols;
  }

  private resolveSymbols(): void {
    for (const sym of this.symbols) {
      if (sym.index === 0) continue;
      if (sym.shndx === SHN_COMMON) {
        this.fail('EINVAL', 4, 'symbol-common', `symbol ${sym.name} is a common symbol (SHN_COMMON); build with -fno-common`, { symbol: sym.name });
      } else if (sym.shndx === SHN_UNDEF) {
        if (!this.env) continue;
        const found = this.env.lookupSymbol(sym.name);
        if (!found) {
          this.fail('ENOENT', 4, 'symbol-unknown', `unknown symbol ${sym.name}: neither the hypervisor nor any loaded payload defines it`, { symbol: sym.name });
        }
        this.resolvedSymbolValue.set(sym.index, found.address);
      } else if (sym.shndx === SHN_ABS) {
        continue;
      } else if (sym.shndx >= SHN_LORESERVE) {
        this.fail('EOPNOTSUPP', 4, 'symbol-section', `symbol ${sym.name} has the reserved section index ${sym.shndx.toString(16)}`, { symbol: sym.name });
      } else if (sym.shndx >= this.header.shnum) {
        this.fail('EINVAL', 4, 'symbol-section', `symbol ${sym.name} is in section ${sym.shndx}, past the ${this.header.shnum} sections`, { symbol: sym.name });
      }
    }
  }

  /** livepatch_elf_ignore_section: Xen loads only allocated, non-empty sections. */
  private isLoaded(s: PayloadSection): boolean {
    return s.alloc && s.size > 0n;
  }

  private checkWritableExecutable(): void {
    for (const s of this.sections) {
      if (s.index > 0 && this.isLoaded(s) && s.exec && s.write) {
        this.fail('EOPNOTSUPP', 4, 'section-wx', `section ${s.name} is both writable and executable`, { section: s.name });
      }
    }
  }

  /** move_payload's layout: text (X), rw (W), ro; each section aligned within its region. */
  private computeLayout(): PayloadLayout {
    const sizes = { text: 0n, rw: 0n, ro: 0n };
    const placed: { index: number; region: 'text' | 'rw' | 'ro'; offset: bigint }[] = [];
    for (const s of this.sections) {
      if (s.index === 0 || !this.isLoaded(s)) continue;
      const region = s.exec ? 'text' : s.write ? 'rw' : 'ro';
      const align = s.addralign > 1n ? s.addralign : 1n;
      const offset = ((sizes[region] + align - 1n) / align) * align;
      placed.push({ index: s.index, region, offset });
      sizes[region] = offset + s.size;
    }
    const pageAlign = (n: bigint) => ((n + PAGE_SIZE - 1n) / PAGE_SIZE) * PAGE_SIZE;
    const start = { text: 0n, rw: pageAlign(sizes.text), ro: pageAlign(sizes.text) + pageAlign(sizes.rw) };
    const map = new Map<number, bigint>();
    for (const p of placed) map.set(p.index, start[p.region] + p.offset);
    const total = pageAlign(sizes.text) + pageAlign(sizes.rw) + sizes.ro;
    return { sections: map, textSize: sizes.text, rwSize: sizes.rw, roSize: sizes.ro, pages: (total + PAGE_SIZE - 1n) / PAGE_SIZE };
  }

  /** The address a defined or undefined symbol has once loaded (only meaningful with env). */
  private symbolAddress(sym: PayloadSymbol): bigint | null {
    if (sym.shndx === SHN_UNDEF) return this.resolvedSymbolValue.get(sym.index) ?? null;
    if (sym.shndx === SHN_ABS) return sym.value;
    const at = this.layout.sections.get(sym.shndx);
    // Symbols of sections Xen does not load keep their section-relative value (as in Xen).
    if (at === undefined) return sym.value;
    return this.env ? this.env.loadAddress + at + sym.value : null;
  }

  // ---- step 4 (end): relocations (livepatch_elf_perform_relocs, arch_livepatch_perform_rela) ----

  private checkRelocations(): void {
    const nsym = this.symbols.length;
    for (const r of this.sections) {
      if (r.index === 0 || (r.type !== SHT_RELA && r.type !== SHT_REL)) continue;
      if (r.info >= this.header.shnum) continue;
      const base = this.sections[r.info]!;
      if (!base.alloc) continue;
      if (r.link !== this.symtabIndex) {
        this.fail('EINVAL', 4, 'reloc-link', `relocation section ${r.name} links to section ${r.link}, not the symbol table (${this.symtabIndex})`, { section: r.name });
      }
      if (r.type === SHT_REL) this.fail('EOPNOTSUPP', 4, 'reloc-rel', `relocation section ${r.name} is SHT_REL; Xen on x86 supports only SHT_RELA`, { section: r.name });
      const entsize = toIndex(r.entsize);
      if (entsize < ELF_RELA_SIZE) this.fail('EINVAL', 4, 'reloc-entsize', `relocation section ${r.name} has entry size ${r.entsize}, smaller than a RELA entry (24)`, { section: r.name });
      if (r.size % r.entsize !== 0n) {
        this.fail('EINVAL', 4, 'reloc-entsize', `relocation section ${r.name} is ${r.size} bytes, not a multiple of its entry size ${r.entsize} (Xen: "Section relative header is corrupted"); its last relocation would be lost`, { section: r.name });
      }
      const count = Math.floor(r.data.length / entsize);
      const list: PayloadRelocation[] = this.relocations.get(base.index) ?? [];
      for (let i = 0; i < count; i++) {
        const rela = readRela(r.data, entsize, i);
        const where = `relocation ${i} in ${r.name}`;
        if (rela.symbolIndex === 0) this.fail('EOPNOTSUPP', 4, 'reloc-symbol', `${where} refers to symbol 0 (STN_UNDEF)`, { section: r.name, relocation: i });
        if (rela.symbolIndex >= nsym) this.fail('EINVAL', 4, 'reloc-symbol', `${where} wants symbol ${rela.symbolIndex}, past the ${nsym} symbols`, { section: r.name, relocation: i });
        const sym = this.symbols[rela.symbolIndex]!;
        const fits = (width: bigint) => rela.offset < base.size && rela.offset + width <= base.size;
        switch (rela.type) {
          case R_X86_64_NONE:
            break;
          case R_X86_64_64:
            if (!fits(8n)) this.fail('EINVAL', 4, 'reloc-offset', `${where} writes 8 bytes at ${rela.offset}, past the end of ${base.name}`, { section: r.name, relocation: i });
            break;
          case R_X86_64_PC32:
          case R_X86_64_PLT32: {
            if (!fits(4n)) this.fail('EINVAL', 4, 'reloc-offset', `${where} writes 4 bytes at ${rela.offset}, past the end of ${base.name}`, { section: r.name, relocation: i });
            if (this.env) this.checkPc32Overflow(rela.addend, sym, base, rela.offset, where);
            break;
          }
          default:
            this.fail('EOPNOTSUPP', 4, 'reloc-type', `${where} has type ${relocationTypeName(rela.type)}; Xen supports R_X86_64_NONE, _64, _PC32 and _PLT32`, { section: r.name, relocation: i, type: rela.type });
        }
        list.push({
          relocationSection: r.index,
          targetSection: base.index,
          offset: rela.offset,
          type: rela.type,
          typeName: relocationTypeName(rela.type),
          symbolIndex: rela.symbolIndex,
          symbol: sym.name || (sym.section ?? ''),
          addend: rela.addend,
        });
      }
      this.relocations.set(base.index, list);
    }
  }

  private checkPc32Overflow(addend: bigint, sym: PayloadSymbol, base: PayloadSection, offset: bigint, where: string): void {
    const s = this.symbolAddress(sym);
    const baseAt = this.layout.sections.get(base.index);
    if (s === null || baseAt === undefined) return;
    const p = this.env!.loadAddress + baseAt + offset;
    const val = BigInt.asIntN(64, s + addend - p);
    if (val !== BigInt.asIntN(32, val)) {
      this.fail('EOVERFLOW', 4, 'reloc-overflow', `${where} (to ${sym.name || sym.section}) does not fit in 32 bits: the target is ${val} bytes away`, { relocation: where });
    }
  }

  // ---- which format ------------------------------------------------------------------------------

  private find(name: string): PayloadSection | undefined {
    // livepatch_elf_sec_by_name: the first section with that name.
    for (let i = 1; i < this.sections.length; i++) if (this.sections[i]!.name === name) return this.sections[i];
    return undefined;
  }

  private format(): PayloadFormat {
    // The functions decide; a payload with hooks only is told apart by its depends section.
    if (this.find(SECTION.funcs)) return 'livepatch';
    if (this.find(SECTION.xspliceFuncs)) return 'xsplice';
    if (!this.find(SECTION.depends) && this.find(SECTION.xspliceDepends)) return 'xsplice';
    return 'livepatch';
  }

  // ---- step 5: .livepatch.xen_depends ---------------------------------------------------------------

  private noteOf(step: Step, check: string, s: PayloadSection): Uint8Array {
    // The note may legally end past the section (see note.ts): hand it the rest of the file.
    const data = s.type === SHT_NOBITS ? new Uint8Array(Math.min(toIndex(s.size), 64)) : this.bytes.subarray(Number(s.offset));
    try {
      return parseBuildIdNote(data, toIndex(s.size) > 0xffffffff ? 0xffffffff : toIndex(s.size)).buildId;
    } catch (e) {
      if (!(e instanceof XenError)) throw e;
      // prepare_payload turns every note refusal into EINVAL; keep the note's own errno as a fact.
      this.fail('EINVAL', step, check, `${s.name} is not a valid build-id note: ${e.message} (${e.errnoName})`, { section: s.name, noteErrno: e.errnoName, noteCheck: e.details.check });
    }
  }

  private checkXenDepends(): Uint8Array | null {
    const s = this.find(SECTION.xenDepends);
    if (!s) {
      if (this.env) {
        this.fail('EINVAL', 5, 'xen-depends-missing', `${SECTION.xenDepends} is missing: the payload does not say which hypervisor build it was made for (required since Xen 4.14)`);
      }
      return null;
    }
    if (s.size === 0n) this.fail('EINVAL', 5, 'xen-depends-empty', `${SECTION.xenDepends} is empty`);
    const id = this.noteOf(5, 'xen-depends-note', s);
    if (this.env && !bytesEqual(id, this.env.hypervisorBuildId)) {
      const want = buildIdToHex(id);
      const have = buildIdToHex(this.env.hypervisorBuildId);
      this.fail('EINVAL', 5, 'xen-depends-mismatch', `build-id mismatch: built for hypervisor ${want}, but this hypervisor is ${have}`, { expected: want, actual: have });
    }
    return id;
  }

  // ---- step 6: depends, own build-id, something to patch ---------------------------------------------

  private checkSpecialSections(format: PayloadFormat): { buildId: Uint8Array; depends: Uint8Array } {
    const dependsName = format === 'xsplice' ? SECTION.xspliceDepends : SECTION.depends;
    const presence = (name: string, check: string, why: string) => {
      const s = this.find(name);
      if (!s) this.fail('EINVAL', 6, `${check}-missing`, `${name} is missing: ${why}`);
      if (s.size === 0n) this.fail('EINVAL', 6, `${check}-empty`, `${name} is empty: ${why}`);
      return s;
    };
    const dep = presence(dependsName, 'depends', 'the payload does not say which build-id it must be applied on');
    const own = presence(SECTION.buildId, 'build-id', 'the payload has no build-id of its own (link it with ld --build-id)');
    const buildId = this.noteOf(6, 'build-id-note', own);
    const depends = this.noteOf(6, 'depends-note', dep);
    return { buildId, depends };
  }

  private checkPatchingSections(format: PayloadFormat): PayloadSection | undefined {
    const funcsName = format === 'xsplice' ? SECTION.xspliceFuncs : SECTION.funcs;
    let found = 0;
    for (const name of [funcsName, ...Object.values(SECTION.hooks)]) {
      const s = this.find(name);
      if (!s) continue;
      if (s.size === 0n) this.fail('EINVAL', 6, 'patching-section-empty', `${name} is empty`, { section: name });
      found++;
    }
    if (found === 0) this.fail('EINVAL', 6, 'nothing-to-patch', `nothing to patch: no ${funcsName} and no hooks`);
    return this.find(funcsName);
  }

  // ---- step 7: functions, hooks, modinfo (prepare_payload) -----------------------------------------

  /** What a 64-bit pointer at `offset` in `section` holds once relocated. */
  private pointerAt(section: PayloadSection, offset: number): PayloadAddress | null {
    let resolved: PayloadAddress | null | undefined;
    // The last R_X86_64_64 at that offset wins, as when Xen applies them in order.
    const r = this.pointerRelocations(section.index).get(BigInt(offset));
    if (r) {
      const sym = this.symbols[r.symbolIndex]!;
      if (sym.shndx === SHN_UNDEF) resolved = { kind: 'external', symbol: sym.name, addend: r.addend };
      else if (sym.shndx === SHN_ABS || sym.shndx >= this.sections.length) {
        const value = BigInt.asUintN(64, sym.value + r.addend);
        resolved = value === 0n ? null : { kind: 'absolute', value };
      } else {
        resolved = {
          kind: 'payload',
          sectionIndex: sym.shndx,
          section: this.sections[sym.shndx]!.name,
          offset: BigInt.asUintN(64, sym.value + r.addend),
          symbol: null,
        };
        resolved = { ...resolved, symbol: sym.type !== STT_SECTION && sym.name && r.addend === 0n ? sym.name : this.symbolAt(resolved) };
      }
    }
    if (resolved !== undefined) return resolved;
    const raw = section.type === SHT_NOBITS ? 0n : readU64(section.data, offset);
    return raw === 0n ? null : { kind: 'absolute', value: raw };
  }

  /** The string a pointer points to, if it points into the payload. */
  private stringAt(addr: PayloadAddress | null): string | null {
    if (!addr || addr.kind !== 'payload') return null;
    const s = this.sections[addr.sectionIndex]!;
    if (addr.offset >= BigInt(s.data.length)) return s.type === SHT_NOBITS && addr.offset < s.size ? '' : null;
    return cName(s.data, Number(addr.offset));
  }

  /** The function symbol defined exactly at a payload address. */
  private pointerRelocationIndex = new Map<number, Map<bigint, PayloadRelocation>>();
  private pointerRelocations(section: number): Map<bigint, PayloadRelocation> {
    let index = this.pointerRelocationIndex.get(section);
    if (!index) {
      index = new Map();
      for (const r of this.relocations.get(section) ?? []) if (r.type === R_X86_64_64) index.set(r.offset, r);
      this.pointerRelocationIndex.set(section, index);
    }
    return index;
  }

  private symbolsByPlace: Map<string, PayloadSymbol[]> | undefined;
  private symbolsAt(section: number, value: bigint): PayloadSymbol[] {
    if (!this.symbolsByPlace) {
      this.symbolsByPlace = new Map();
      for (const s of this.symbols) {
        if (s.index === 0 || !s.name || s.type === STT_SECTION || s.type === STT_FILE) continue;
        const key = `${s.shndx}:${s.value}`;
        const list = this.symbolsByPlace.get(key);
        if (list) list.push(s);
        else this.symbolsByPlace.set(key, [s]);
      }
    }
    return this.symbolsByPlace.get(`${section}:${value}`) ?? [];
  }

  private symbolAt(addr: PayloadAddress | null): string | null {
    if (!addr) return null;
    if (addr.kind === 'external') return addr.addend === 0n ? addr.symbol : null;
    if (addr.kind !== 'payload') return null;
    if (addr.symbol) return addr.symbol;
    const candidates = this.symbolsAt(addr.sectionIndex, addr.offset);
    const fn = candidates.find((s) => s.type === STT_FUNC) ?? candidates.find((s) => s.type === STT_OBJECT) ?? candidates[0];
    return fn?.name ?? null;
  }

  private checkFuncs(format: PayloadFormat, sec: PayloadSection | undefined): { funcs: PayloadFunc[]; resolved: UploadResolution['funcs'] } {
    const funcs: PayloadFunc[] = [];
    const resolved: { oldAddress: bigint; newAddress: bigint; oldResolvedBy: 'relocation' | 'absolute' | 'name'; oldFrom: string }[] = [];
    if (!sec) return { funcs, resolved };
    const struct = FUNC_STRUCT[format];
    if (sec.size % BigInt(struct.size) !== 0n) {
      this.fail('EINVAL', 7, 'funcs-size', `${sec.name} is ${sec.size} bytes, not a multiple of the ${struct.size}-byte struct livepatch_func`, { section: sec.name });
    }
    if (sec.type === SHT_NOBITS) {
      // Xen loads NOBITS as zeros: the first entry has version 0, which no Xen accepts.
      this.fail('EOPNOTSUPP', 7, 'func-version', `function 0 has struct version 0 (${sec.name} is SHT_NOBITS, all zeros)`, { func: 0, version: 0 });
    }
    const n = sec.data.length / struct.size;
    // Xen 4.14+ wants version 2 whatever the section is called; the parser accepts each format's own.
    const wantVersion = this.env ? FUNC_STRUCT.livepatch.version : struct.version;
    for (let i = 0; i < n; i++) {
      const at = i * struct.size;
      const version = sec.data[at + FUNC_FIELD.version]!;
      const nameAddress = this.pointerAt(sec, at + FUNC_FIELD.name);
      const name = this.stringAt(nameAddress);
      const label = name ? `function ${i} (${name})` : `function ${i}`;
      if (version !== wantVersion) {
        this.fail('EOPNOTSUPP', 7, 'func-version', `${label} has struct version ${version}; ${this.env ? 'Xen 4.14+' : `the ${format} format`} expects ${wantVersion}`, { func: i, version });
      }
      const newSize = readU32(sec.data, at + FUNC_FIELD.newSize);
      const oldSize = readU32(sec.data, at + FUNC_FIELD.oldSize);
      if (oldSize === 0) this.fail('EINVAL', 7, 'func-old-size', `${label} has old_size 0`, { func: i });
      const newAddress = this.pointerAt(sec, at + FUNC_FIELD.newAddr);
      const oldAddress = this.pointerAt(sec, at + FUNC_FIELD.oldAddr);
      const nop = newAddress === null;
      if (nop) {
        if (newSize > NOP_MAX_SIZE) this.fail('EOPNOTSUPP', 7, 'func-nop-size', `${label} NOPs ${newSize} bytes; at most ${NOP_MAX_SIZE} fit in opaque[]`, { func: i });
        if (oldSize < newSize) this.fail('EINVAL', 7, 'func-nop-size', `${label} NOPs ${newSize} bytes of a ${oldSize}-byte function`, { func: i });
      } else if (oldSize < PATCH_INSN_SIZE) {
        this.fail('EINVAL', 7, 'func-old-size', `${label} replaces a ${oldSize}-byte function; a ${PATCH_INSN_SIZE}-byte jump does not fit`, { func: i });
      }
      if (this.env) resolved.push(this.resolveFunc(i, label, name, oldAddress, newAddress));
      const expectAt = at + FUNC_FIELD.expect;
      const expect = format === 'livepatch'
        ? { enabled: (sec.data[expectAt]! & 1) === 1, len: (sec.data[expectAt]! >> 1) & 0x1f, rsv: sec.data[expectAt]! >> 6, data: sec.data.slice(expectAt + 1, expectAt + 32) }
        : null;
      funcs.push({
        index: i,
        version,
        name,
        nameAddress,
        newAddress,
        oldAddress,
        newSymbol: this.symbolAt(newAddress),
        oldSymbol: oldAddress?.kind === 'external' ? oldAddress.symbol : null,
        newSize,
        oldSize,
        nop,
        expect,
      });
    }
    return { funcs, resolved };
  }

  /** resolve_old_address and livepatch_verify_distance, with the hypervisor at hand. */
  private resolveFunc(i: number, label: string, name: string | null, oldAddress: PayloadAddress | null, newAddress: PayloadAddress | null) {
    const env = this.env!;
    let oldAt: bigint;
    let oldResolvedBy: 'relocation' | 'absolute' | 'name';
    let oldFrom = 'hypervisor';
    if (oldAddress === null) {
      const found = name ? env.lookupSymbol(name) : null;
      if (!found) {
        this.fail('ENOENT', 7, 'func-old-unknown', name
          ? `could not resolve the old address of ${name}: neither the hypervisor nor any loaded payload has that symbol`
          : `${label} has old_addr 0 and no name to look up`, { func: i, name });
      }
      oldAt = found.address;
      oldFrom = found.from;
      oldResolvedBy = 'name';
    } else {
      const at = this.addressOf(oldAddress);
      oldAt = at.address;
      oldFrom = at.from;
      oldResolvedBy = oldAddress.kind === 'absolute' ? 'absolute' : 'relocation';
    }
    const newAt = newAddress === null ? 0n : this.addressOf(newAddress).address;
    if (newAt !== 0n) {
      const distance = BigInt.asIntN(64, oldAt - newAt);
      if (distance > LIVEPATCH_RANGE || distance < -LIVEPATCH_RANGE) {
        this.fail('EOVERFLOW', 7, 'func-distance', `${label}: the new code at 0x${newAt.toString(16)} is more than 2 GiB from the old at 0x${oldAt.toString(16)}`, { func: i });
      }
    }
    return { oldAddress: oldAt, newAddress: newAt, oldResolvedBy, oldFrom };
  }

  private addressOf(a: PayloadAddress): { address: bigint; from: string } {
    const env = this.env!;
    switch (a.kind) {
      case 'absolute':
        return { address: a.value, from: 'absolute' };
      case 'external': {
        // Resolved in step 4 (ENOENT otherwise), so the lookup succeeds here.
        const found = env.lookupSymbol(a.symbol);
        return { address: BigInt.asUintN(64, (found?.address ?? 0n) + a.addend), from: found?.from ?? 'hypervisor' };
      }
      case 'payload': {
        const at = this.layout.sections.get(a.sectionIndex);
        return { address: BigInt.asUintN(64, env.loadAddress + (at ?? 0n) + a.offset), from: this.name };
      }
    }
  }

  private checkHooks(): PayloadHooks {
    const present: string[] = [];
    const multi = (name: string): (PayloadAddress | null)[] => {
      const s = this.find(name);
      if (!s) return [];
      present.push(name);
      if (s.size % 8n !== 0n) this.fail('EINVAL', 7, 'hook-size', `${name} is ${s.size} bytes, not a multiple of a function pointer (8)`, { section: name });
      const out: (PayloadAddress | null)[] = [];
      for (let i = 0; i < s.data.length / 8; i++) out.push(this.pointerAt(s, i * 8));
      return out;
    };
    const single = (name: string): PayloadAddress | null => {
      const s = this.find(name);
      if (!s) return null;
      present.push(name);
      if (s.size !== 8n) this.fail('EINVAL', 7, 'hook-size', `${name} is ${s.size} bytes; it must hold exactly one function pointer (8)`, { section: name });
      return s.type === SHT_NOBITS ? null : this.pointerAt(s, 0);
    };
    const h = SECTION.hooks;
    return {
      load: multi(h.load),
      unload: multi(h.unload),
      preApply: single(h.preApply),
      apply: single(h.apply),
      postApply: single(h.postApply),
      preRevert: single(h.preRevert),
      revert: single(h.revert),
      postRevert: single(h.postRevert),
      sections: present,
    };
  }

  private checkModinfo(): ModinfoEntry[] {
    const s = this.find(SECTION.modinfo);
    if (!s || s.size === 0n) return [];
    const data = s.type === SHT_NOBITS ? new Uint8Array(Math.min(toIndex(s.size), 1)) : s.data;
    if (data[data.length - 1] !== 0) this.fail('EINVAL', 7, 'modinfo', `${SECTION.modinfo} does not end with a NUL byte`);
    const entries: ModinfoEntry[] = [];
    let start = 0;
    for (let i = 0; i < data.length; i++) {
      if (data[i] !== 0) continue;
      if (i > start) {
        const raw = cString(data, start, i + 1);
        const eq = raw.indexOf('=');
        entries.push(eq === -1 ? { key: raw, value: null, raw } : { key: raw.slice(0, eq), value: raw.slice(eq + 1), raw });
      }
      start = i + 1;
    }
    return entries;
  }
}

function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** Symbols Xen keeps in a loaded payload's symbol table (is_payload_symbol). */
export function isPayloadSymbol(payload: LivepatchPayload, sym: PayloadSymbol): boolean {
  if (sym.index === 0 || sym.shndx === SHN_UNDEF || sym.shndx >= payload.sections.length) return false;
  const s = payload.sections[sym.shndx]!;
  if (!s.alloc) return false;
  if (sym.name === '') return false;
  if ((s.flags & SHF_MERGE) !== 0n && sym.name.startsWith('.L')) return false;
  return true;
}
