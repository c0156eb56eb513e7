/**
 * Writes livepatch payloads in TypeScript: ET_REL x86-64 objects with the sections Xen's loader
 * reads (.livepatch.funcs and its relocations, .livepatch.depends, .livepatch.xen_depends,
 * .note.gnu.build-id with a sha1 build-id, optional hooks, .modinfo and .bss), laid out the way
 * `ld -r --build-id=sha1` lays them out, so `readelf -a` reads them without a warning and
 * `parsePayload` accepts them.
 *
 * Each replacement function is real code of the shape gcc -O2 -fpic emits for a constant function,
 * so the emulator decodes built and compiled payloads by the same rule (returns.ts):
 *   returns: "Hello World"  ->  lea str(%rip),%rax ; ret   (+ the string in .rodata + R_X86_64_PC32)
 *   returns: 42             ->  mov $42,%eax ; ret
 *   (nothing)               ->  xor %eax,%eax ; ret
 * and `expect: true` copies the target's first bytes from the image into the entry's expectation.
 *
 * Two layers: `buildPayload(spec)` from a zod-validated spec, and `writeElfObject(object)`, the
 * plain ELF writer underneath (also used by tests to craft malformed files).
 */
import { createHash } from 'node:crypto';
import { z } from 'zod';
import { FleetpatchError } from '../errors.ts';
import { buildIdFromHex } from './build-id.ts';
import {
  ELF_HEADER_SIZE, ELF_RELA_SIZE, ELF_SECTION_HEADER_SIZE, ELF_SYMBOL_SIZE, ELFCLASS64, ELFDATA2LSB, EM_X86_64, ET_REL,
  EV_CURRENT, R_X86_64_64, R_X86_64_PC32, SHF_ALLOC, SHF_EXECINSTR, SHF_INFO_LINK, SHF_WRITE, SHN_ABS, SHN_COMMON,
  SHN_UNDEF, SHT_NOBITS, SHT_NOTE, SHT_PROGBITS, SHT_RELA, SHT_STRTAB, SHT_SYMTAB, STB_GLOBAL, STB_LOCAL,
  STB_WEAK, STT_FILE, STT_FUNC, STT_NOTYPE, STT_OBJECT, STT_SECTION, readElf,
} from './elf.ts';
import type { HypervisorImage } from './image.ts';
import { FUNC_FIELD, FUNC_STRUCT, NOP_MAX_SIZE, SECTION } from './model.ts';
import { NOTE_HEADER_SIZE, encodeBuildIdNote } from './note.ts';

// ---------------------------------------------------------------------------------------------
// The ELF writer.
// ---------------------------------------------------------------------------------------------

export interface ElfObjectSection {
  readonly name: string;
  readonly type: number;
  readonly flags?: bigint;
  /** Contents (not for SHT_NOBITS). */
  readonly data?: Uint8Array;
  /** Size of a SHT_NOBITS section. */
  readonly size?: bigint;
  readonly addralign?: bigint;
  readonly entsize?: bigint;
  /** sh_link / sh_info: a number, or the name of a section. */
  readonly link?: number | string;
  readonly info?: number | string;
}

export type SymbolBinding = 'local' | 'global' | 'weak';
export type SymbolType = 'notype' | 'object' | 'func' | 'section' | 'file';

export interface ElfObjectSymbol {
  readonly name: string;
  readonly bind?: SymbolBinding;
  readonly type?: SymbolType;
  /** A section name, or 'UND', 'ABS', 'COMMON', or a raw index. */
  readonly section: string | number;
  readonly value?: bigint;
  readonly size?: bigint;
}

export interface ElfObjectRelocation {
  readonly offset: bigint;
  readonly type: number;
  /** A symbol name, `section:<name>` for a section's symbol, or a raw symbol index. */
  readonly symbol: string | number;
  readonly addend?: bigint;
}

export interface ElfObject {
  /** Sections in file order, without the null section 0 and without .symtab/.strtab/.shstrtab. */
  readonly sections: readonly ElfObjectSection[];
  /** Symbols besides the null symbol and the section symbols the writer adds for ALLOC sections. */
  readonly symbols?: readonly ElfObjectSymbol[];
  /** RELA entries by the name of the section they patch; written as .rela<name>. */
  readonly relocations?: Readonly<Record<string, readonly ElfObjectRelocation[]>>;
}

const BIND: Record<SymbolBinding, number> = { local: STB_LOCAL, global: STB_GLOBAL, weak: STB_WEAK };
const TYPE: Record<SymbolType, number> = { notype: STT_NOTYPE, object: STT_OBJECT, func: STT_FUNC, section: STT_SECTION, file: STT_FILE };

class StringTable {
  private readonly bytes: number[] = [0];
  private readonly index = new Map<string, number>([['', 0]]);
  private readonly encoder = new TextEncoder();
  add(s: string): number {
    const known = this.index.get(s);
    if (known !== undefined) return known;
    const at = this.bytes.length;
    for (const b of this.encoder.encode(s)) this.bytes.push(b);
    this.bytes.push(0);
    this.index.set(s, at);
    return at;
  }
  data(): Uint8Array {
    return Uint8Array.from(this.bytes);
  }
}

function alignTo(n: number, a: number): number {
  return a > 1 ? Math.ceil(n / a) * a : n;
}

/** Writes an ELF64 x86-64 relocatable object. */
export function writeElfObject(object: ElfObject): Uint8Array {
  type Out = { name: string; type: number; flags: bigint; data: Uint8Array; size: bigint; addralign: bigint; entsize: bigint; link: number | string; info: number | string };
  const out: Out[] = object.sections.map((s) => ({
    name: s.name,
    type: s.type,
    flags: s.flags ?? 0n,
    data: s.type === SHT_NOBITS ? new Uint8Array(0) : (s.data ?? new Uint8Array(0)),
    size: s.type === SHT_NOBITS ? (s.size ?? 0n) : BigInt(s.data?.length ?? 0),
    addralign: s.addralign ?? 1n,
    entsize: s.entsize ?? 0n,
    link: s.link ?? 0,
    info: s.info ?? 0,
  }));

  // Relocation sections follow the section they patch, as ld -r puts them.
  for (const [target, relas] of Object.entries(object.relocations ?? {})) {
    if (relas.length === 0) continue;
    const at = out.findIndex((s) => s.name === target);
    if (at === -1) throw new FleetpatchError('PAYLOAD_SPEC_INVALID', `relocations for a section that does not exist: ${target}`);
    out.splice(at + 1, 0, {
      name: `.rela${target}`, type: SHT_RELA, flags: SHF_INFO_LINK, data: new Uint8Array(relas.length * ELF_RELA_SIZE),
      size: BigInt(relas.length * ELF_RELA_SIZE), addralign: 8n, entsize: BigInt(ELF_RELA_SIZE), link: '.symtab', info: target,
    });
  }
  const indexOf = (name: string) => {
    const i = out.findIndex((s) => s.name === name);
    if (i === -1) throw new FleetpatchError('PAYLOAD_SPEC_INVALID', `no section named ${name}`);
    return i + 1;
  };

  // Symbols: null, section symbols of ALLOC sections, other locals, then globals.
  const strtab = new StringTable();
  type Sym = { name: string; bind: number; type: number; shndx: number; value: bigint; size: bigint; key: string };
  const shndxOf = (section: string | number) =>
    typeof section === 'number' ? section : section === 'UND' ? SHN_UNDEF : section === 'ABS' ? SHN_ABS : section === 'COMMON' ? SHN_COMMON : indexOf(section);
  const sectionSyms: Sym[] = out
    .map((s, i) => ({ s, i }))
    .filter(({ s }) => (s.flags & SHF_ALLOC) !== 0n)
    .map(({ s, i }) => ({ name: '', bind: STB_LOCAL, type: STT_SECTION, shndx: i + 1, value: 0n, size: 0n, key: `section:${s.name}` }));
  const declared: Sym[] = (object.symbols ?? []).map((s) => ({
    name: s.name,
    bind: BIND[s.bind ?? 'global'],
    type: TYPE[s.type ?? 'notype'],
    shndx: shndxOf(s.section),
    value: s.value ?? 0n,
    size: s.size ?? 0n,
    key: s.name,
  }));
  const symbols: Sym[] = [
    ...sectionSyms,
    ...declared.filter((s) => s.bind === STB_LOCAL),
    ...declared.filter((s) => s.bind !== STB_LOCAL),
  ];
  const firstGlobal = 1 + sectionSyms.length + declared.filter((s) => s.bind === STB_LOCAL).length;
  const byKey = new Map<string, number>();
  symbols.forEach((s, i) => {
    if (!byKey.has(s.key)) byKey.set(s.key, i + 1);
  });
  const symbolIndex = (ref: string | number) => {
    if (typeof ref === 'number') return ref;
    const i = byKey.get(ref);
    if (i === undefined) throw new FleetpatchError('PAYLOAD_SPEC_INVALID', `relocation against an unknown symbol: ${ref}`);
    return i;
  };
  const symtabData = new Uint8Array((symbols.length + 1) * ELF_SYMBOL_SIZE);
  const sv = new DataView(symtabData.buffer);
  symbols.forEach((s, i) => {
    const at = (i + 1) * ELF_SYMBOL_SIZE;
    sv.setUint32(at, strtab.add(s.name), true);
    symtabData[at + 4] = (s.bind << 4) | s.type;
    symtabData[at + 5] = 0;
    sv.setUint16(at + 6, s.shndx, true);
    sv.setBigUint64(at + 8, s.value, true);
    sv.setBigUint64(at + 16, s.size, true);
  });

  for (const [target, relas] of Object.entries(object.relocations ?? {})) {
    if (relas.length === 0) continue;
    const sec = out.find((s) => s.name === `.rela${target}`)!;
    const v = new DataView(sec.data.buffer);
    relas.forEach((r, i) => {
      const at = i * ELF_RELA_SIZE;
      v.setBigUint64(at, r.offset, true);
      v.setBigUint64(at + 8, (BigInt(symbolIndex(r.symbol)) << 32n) | BigInt(r.type), true);
      v.setBigInt64(at + 16, r.addend ?? 0n, true);
    });
  }

  out.push({ name: '.symtab', type: SHT_SYMTAB, flags: 0n, data: symtabData, size: BigInt(symtabData.length), addralign: 8n, entsize: BigInt(ELF_SYMBOL_SIZE), link: '.strtab', info: firstGlobal });
  const strData = strtab.data();
  out.push({ name: '.strtab', type: SHT_STRTAB, flags: 0n, data: strData, size: BigInt(strData.length), addralign: 1n, entsize: 0n, link: 0, info: 0 });
  const shstrtab = new StringTable();
  const nameOffsets = out.map((s) => shstrtab.add(s.name));
  const shstrOffset = shstrtab.add('.shstrtab');
  const shstrData = shstrtab.data();
  out.push({ name: '.shstrtab', type: SHT_STRTAB, flags: 0n, data: shstrData, size: BigInt(shstrData.length), addralign: 1n, entsize: 0n, link: 0, info: 0 });
  nameOffsets.push(shstrOffset);

  // Layout: header, section contents (aligned), section header table (8-aligned).
  const offsets: number[] = [];
  let pos = ELF_HEADER_SIZE;
  for (const s of out) {
    pos = alignTo(pos, Number(s.addralign > 0n ? s.addralign : 1n));
    offsets.push(pos);
    pos += s.data.length;
  }
  const shoff = alignTo(pos, 8);
  const shnum = out.length + 1;
  const file = new Uint8Array(shoff + shnum * ELF_SECTION_HEADER_SIZE);
  const v = new DataView(file.buffer);
  file.set([0x7f, 0x45, 0x4c, 0x46, ELFCLASS64, ELFDATA2LSB, EV_CURRENT], 0);
  v.setUint16(16, ET_REL, true);
  v.setUint16(18, EM_X86_64, true);
  v.setUint32(20, EV_CURRENT, true);
  v.setBigUint64(40, BigInt(shoff), true);
  v.setUint16(52, ELF_HEADER_SIZE, true);
  v.setUint16(58, ELF_SECTION_HEADER_SIZE, true);
  v.setUint16(60, shnum, true);
  v.setUint16(62, shnum - 1, true);
  const ref = (x: number | string) => (typeof x === 'number' ? x : indexOf(x));
  out.forEach((s, i) => {
    file.set(s.data, offsets[i]!);
    const at = shoff + (i + 1) * ELF_SECTION_HEADER_SIZE;
    v.setUint32(at, i === out.length - 1 ? shstrOffset : nameOffsets[i]!, true);
    v.setUint32(at + 4, s.type, true);
    v.setBigUint64(at + 8, s.flags, true);
    v.setBigUint64(at + 24, BigInt(offsets[i]!), true);
    v.setBigUint64(at + 32, s.size, true);
    v.setUint32(at + 40, ref(s.link), true);
    v.setUint32(at + 44, ref(s.info), true);
    v.setBigUint64(at + 48, s.addralign, true);
    v.setBigUint64(at + 56, s.entsize, true);
  });
  return file;
}

// ---------------------------------------------------------------------------------------------
// The payload builder.
// ---------------------------------------------------------------------------------------------

const hexBuildId = z.string().regex(/^(0x)?([0-9a-fA-F]{2})+$/, 'a build-id in hex');
const cIdentifier = z.string().regex(/^[A-Za-z_][A-Za-z0-9_.]*$/, 'a C identifier');

export const PayloadFuncSpecSchema = z.object({
  /** The hypervisor function to patch (the `name` string, and old_addr's symbol). */
  target: cIdentifier,
  /** The replacement function's symbol (default `<payload>_<target>`). */
  symbol: cIdentifier.optional(),
  /** What the replacement returns: a string (lea+ret) or an unsigned 32-bit number (mov+ret). */
  returns: z.union([z.string(), z.number().int().min(0).max(0xffffffff)]).optional(),
  /** A NOP entry: new_addr 0, `newSize` bytes of the old function become NOPs. */
  nop: z.boolean().default(false),
  /**
   * How old_addr is filled: a relocation against the target symbol ("symbol", what gcc does),
   * 0 so Xen looks the name up ("name", like xen_replace_world), or an absolute address
   * (like xen_nop).
   */
  oldAddress: z.union([z.literal('symbol'), z.literal('name'), hexBuildId]).default('symbol'),
  /** Bytes of the old function; default: its size in the image given to buildPayload. */
  oldSize: z.number().int().min(0).max(0xffffffff).optional(),
  /** Default: the size of the generated function; for a NOP, all but the old function's `ret`. */
  newSize: z.number().int().min(0).max(0xffffffff).optional(),
  /**
   * Xen 4.14+'s expectation: the bytes old_addr must hold when the payload is applied (expect.enabled,
   * len, data). Hex (up to 31 bytes), or true: the first min(oldSize, 31) bytes of the target in
   * the image given to buildPayload.
   */
  expect: z.union([z.literal(true), z.string().regex(/^([0-9a-fA-F]{2}){1,31}$/)]).optional(),
  /** Override the struct's version byte (default 2, or 1 for xSplice). */
  version: z.number().int().min(0).max(255).optional(),
});

export const PayloadSpecSchema = z.object({
  /** The payload's name; prefixes its symbols so two payloads never collide. */
  name: cIdentifier,
  format: z.enum(['livepatch', 'xsplice']).default('livepatch'),
  /** Build-id it must be applied on (default: the image's). */
  depends: hexBuildId.optional(),
  /** Hypervisor it is built for (default: the image's); null leaves the section out. */
  xenDepends: hexBuildId.nullable().optional(),
  funcs: z.array(PayloadFuncSpecSchema).default([]),
  hooks: z
    .object({
      load: z.number().int().min(0).max(64).default(0),
      unload: z.number().int().min(0).max(64).default(0),
      preApply: z.boolean().default(false),
      apply: z.boolean().default(false),
      postApply: z.boolean().default(false),
      preRevert: z.boolean().default(false),
      revert: z.boolean().default(false),
      postRevert: z.boolean().default(false),
    })
    .default({ load: 0, unload: 0, preApply: false, apply: false, postApply: false, preRevert: false, revert: false, postRevert: false }),
  /** .modinfo strings ("key=value" or a bare word), or key/value pairs. */
  modinfo: z.union([z.array(z.string().regex(/^[^\0]+$/)), z.record(z.string(), z.string())]).optional(),
  /** Bytes of .bss: writable data, which makes the payload impossible to re-apply after a revert. */
  writableData: z.number().int().min(0).max(1 << 20).default(0),
  /** Use this build-id instead of the sha1 of the contents (for tests of duplicates). */
  buildId: hexBuildId.optional(),
});

export type PayloadSpec = z.input<typeof PayloadSpecSchema>;
export type PayloadFuncSpec = z.input<typeof PayloadFuncSpecSchema>;

export interface BuildOptions {
  /** Supplies default depends/xenDepends (its build-id) and old sizes (its symbol sizes). */
  readonly image?: HypervisorImage;
}

function specError(message: string, details: Record<string, unknown> = {}): FleetpatchError {
  return new FleetpatchError('PAYLOAD_SPEC_INVALID', message, details);
}

/** Validates a spec (zod) and returns the parsed form, or throws PAYLOAD_SPEC_INVALID. */
export function parsePayloadSpec(input: unknown): z.output<typeof PayloadSpecSchema> {
  const r = PayloadSpecSchema.safeParse(input);
  if (!r.success) {
    const issues = r.error.issues.map((i) => `${i.path.join('.') || '(spec)'}: ${i.message}`);
    throw specError(`the payload spec is invalid: ${issues.join('; ')}`, { issues });
  }
  return r.data;
}

const CODE = {
  lea: [0x48, 0x8d, 0x05, 0, 0, 0, 0, 0xc3],
  mov: (v: number) => [0xb8, v & 0xff, (v >>> 8) & 0xff, (v >>> 16) & 0xff, (v >>> 24) & 0xff, 0xc3],
  zero: [0x31, 0xc0, 0xc3],
  ret: [0xc3],
};
/** gcc pads functions to 16 bytes with multi-byte NOPs; 0x90 NOPs read the same to objdump. */
const FUNCTION_ALIGN = 16;

/** expect: true — what the image holds at the target now: the first min(oldSize, 31) bytes. */
function expectedBytes(image: HypervisorImage | undefined, target: string, oldSize: number, i: number): Uint8Array {
  const sym = image?.symbols.get(target);
  if (!image || !sym) throw specError(`funcs.${i}.expect: true reads the bytes of ${target} from the image: build with an image that has it`);
  const bytes = image.bytesAt(sym.address, Math.min(oldSize, NOP_MAX_SIZE));
  if (!bytes) throw specError(`funcs.${i}.expect: the image ${image.name} has no code at ${target} (0x${sym.address.toString(16)})`);
  return bytes;
}

/** Builds a payload; its build-id is the sha1 of the file with the build-id zeroed (as ld does). */
export function buildPayload(input: PayloadSpec, options: BuildOptions = {}): Uint8Array {
  const spec = parsePayloadSpec(input);
  const file = writeElfObject(payloadObject(spec, options));
  return spec.buildId ? file : withBuildId(file);
}

/**
 * ld --build-id=sha1: the sha1 of the whole file with the descriptor of its .note.gnu.build-id
 * zeroed, written into that descriptor. Returns a new array.
 */
export function withBuildId(file: Uint8Array): Uint8Array {
  const out = file.slice();
  const note = readElf(out).sectionByName(SECTION.buildId);
  if (!note) throw specError('the object has no .note.gnu.build-id to fill');
  const v = new DataView(out.buffer, Number(note.offset));
  const namesz = v.getUint32(0, true);
  const descsz = v.getUint32(4, true);
  const descAt = Number(note.offset) + NOTE_HEADER_SIZE + Math.ceil(namesz / 4) * 4;
  out.fill(0, descAt, descAt + descsz);
  const digest = createHash('sha1').update(out).digest();
  out.set(digest.subarray(0, descsz), descAt);
  return out;
}

/** The ELF object of a payload before it is written: tests take it apart to craft bad files. */
export function payloadObject(input: PayloadSpec, options: BuildOptions = {}): ElfObject {
  const spec = parsePayloadSpec(input);
  const image = options.image;
  const format = spec.format;
  const struct = FUNC_STRUCT[format];

  const depends = spec.depends ?? image?.buildIdHex;
  if (!depends) throw specError('depends: give the build-id this payload applies on, or build with an image');
  const xenDepends = spec.xenDepends === undefined ? (format === 'livepatch' ? image?.buildIdHex : null) : spec.xenDepends;
  if (xenDepends === undefined) throw specError('xenDepends: give the hypervisor build-id, null to leave .livepatch.xen_depends out, or build with an image');

  const text: number[] = [];
  const textRelas: ElfObjectRelocation[] = [];
  const rodata: number[] = [];
  const encoder = new TextEncoder();
  const symbols: ElfObjectSymbol[] = [];
  const addString = (s: string) => {
    const at = rodata.length;
    // Byte by byte: a spec may hold a string of ~1 MiB, too many arguments for one push(...).
    for (const b of encoder.encode(s)) rodata.push(b);
    rodata.push(0);
    return at;
  };
  const addFunction = (code: number[]) => {
    while (text.length % FUNCTION_ALIGN !== 0) text.push(0x90);
    const at = text.length;
    text.push(...code);
    return at;
  };

  const funcsData = new Uint8Array(spec.funcs.length * struct.size);
  const fv = new DataView(funcsData.buffer);
  const funcRelas: ElfObjectRelocation[] = [];
  const undefinedTargets = new Set<string>();
  const seenSymbols = new Set<string>();

  spec.funcs.forEach((f, i) => {
    const at = i * struct.size;
    const oldSize = f.oldSize ?? (image ? Number(image.symbols.get(f.target)?.size ?? 0n) : undefined);
    if (oldSize === undefined || oldSize === 0) {
      throw specError(`funcs.${i}.oldSize: give the size of ${f.target}${image ? ` (the image has no sized symbol ${f.target})` : ', or build with an image'}`);
    }
    const nameAt = addString(f.target);
    funcRelas.push({ offset: BigInt(at + FUNC_FIELD.name), type: R_X86_64_64, symbol: 'section:.rodata', addend: BigInt(nameAt) });

    let newSize: number;
    if (f.nop) {
      if (f.returns !== undefined) throw specError(`funcs.${i}: a NOP entry has no replacement function, so it cannot return anything`);
      newSize = f.newSize ?? Math.min(oldSize - 1, NOP_MAX_SIZE);
    } else {
      const symbol = f.symbol ?? `${spec.name}_${f.target}`;
      if (seenSymbols.has(symbol)) throw specError(`funcs.${i}.symbol: ${symbol} is defined twice`);
      seenSymbols.add(symbol);
      let code: number[];
      if (typeof f.returns === 'string') code = CODE.lea;
      else if (typeof f.returns === 'number') code = CODE.mov(f.returns);
      else code = CODE.zero;
      const codeAt = addFunction(code);
      if (typeof f.returns === 'string') {
        const strAt = addString(f.returns);
        // lea's displacement counts from the end of its 4-byte field: S + A - P with A = -4.
        textRelas.push({ offset: BigInt(codeAt + 3), type: R_X86_64_PC32, symbol: 'section:.rodata', addend: BigInt(strAt - 4) });
      }
      symbols.push({ name: symbol, bind: 'global', type: 'func', section: '.text', value: BigInt(codeAt), size: BigInt(code.length) });
      funcRelas.push({ offset: BigInt(at + FUNC_FIELD.newAddr), type: R_X86_64_64, symbol });
      newSize = f.newSize ?? code.length;
    }

    if (f.oldAddress === 'symbol') {
      undefinedTargets.add(f.target);
      funcRelas.push({ offset: BigInt(at + FUNC_FIELD.oldAddr), type: R_X86_64_64, symbol: f.target });
    } else if (f.oldAddress !== 'name') {
      fv.setBigUint64(at + FUNC_FIELD.oldAddr, BigInt(`0x${f.oldAddress.replace(/^0x/, '')}`), true);
    }
    fv.setUint32(at + FUNC_FIELD.newSize, newSize, true);
    fv.setUint32(at + FUNC_FIELD.oldSize, oldSize, true);
    funcsData[at + FUNC_FIELD.version] = f.version ?? struct.version;
    if (f.expect) {
      if (format !== 'livepatch') throw specError(`funcs.${i}.expect: expectations exist only in struct version 2`);
      const data = f.expect === true ? expectedBytes(image, f.target, oldSize, i) : buildIdFromHex(f.expect);
      funcsData[at + FUNC_FIELD.expect] = 1 | (data.length << 1);
      funcsData.set(data, at + FUNC_FIELD.expect + 1);
    }
    symbols.push({ name: `${format}_${spec.name}_${i}`, bind: 'global', type: 'object', section: format === 'xsplice' ? SECTION.xspliceFuncs : SECTION.funcs, value: BigInt(at), size: BigInt(struct.size) });
  });

  // Hooks: each a `ret`, pointed to by an 8-byte pointer in its section.
  const hookSections: { name: string; count: number }[] = [];
  const h = spec.hooks;
  const hookList: [string, number][] = [
    [SECTION.hooks.load, h.load], [SECTION.hooks.unload, h.unload],
    [SECTION.hooks.preApply, +h.preApply], [SECTION.hooks.apply, +h.apply], [SECTION.hooks.postApply, +h.postApply],
    [SECTION.hooks.preRevert, +h.preRevert], [SECTION.hooks.revert, +h.revert], [SECTION.hooks.postRevert, +h.postRevert],
  ];
  const hookRelas: Record<string, ElfObjectRelocation[]> = {};
  for (const [section, count] of hookList) {
    if (count === 0) continue;
    hookSections.push({ name: section, count });
    hookRelas[section] = [];
    for (let k = 0; k < count; k++) {
      const kind = section.slice(SECTION.hooks.load.lastIndexOf('.') + 1);
      const fn = `${spec.name}_${kind}_hook_${k}`;
      const codeAt = addFunction(CODE.ret);
      symbols.push({ name: fn, bind: 'local', type: 'func', section: '.text', value: BigInt(codeAt), size: 1n });
      hookRelas[section]!.push({ offset: BigInt(k * 8), type: R_X86_64_64, symbol: fn });
    }
  }
  if (spec.funcs.length === 0 && hookSections.length === 0) {
    throw specError('nothing to patch: give at least one function or one hook');
  }
  for (const t of undefinedTargets) symbols.push({ name: t, bind: 'global', type: 'notype', section: 'UND' });

  const modinfoStrings = spec.modinfo === undefined ? [] : Array.isArray(spec.modinfo) ? spec.modinfo : Object.entries(spec.modinfo).map(([k, val]) => `${k}=${val}`);
  const noteBytes = (hex: string) => encodeBuildIdNote(buildIdFromHex(hex));
  const placeholder = spec.buildId ? buildIdFromHex(spec.buildId) : new Uint8Array(20);

  const sections: ElfObjectSection[] = [
    { name: SECTION.buildId, type: SHT_NOTE, flags: SHF_ALLOC, data: encodeBuildIdNote(placeholder), addralign: 4n },
  ];
  if (text.length > 0) sections.push({ name: '.text', type: SHT_PROGBITS, flags: SHF_ALLOC | SHF_EXECINSTR, data: Uint8Array.from(text), addralign: 16n });
  if (rodata.length > 0) sections.push({ name: '.rodata', type: SHT_PROGBITS, flags: SHF_ALLOC, data: Uint8Array.from(rodata), addralign: 1n });
  sections.push({ name: format === 'xsplice' ? SECTION.xspliceDepends : SECTION.depends, type: SHT_PROGBITS, flags: SHF_ALLOC, data: noteBytes(depends), addralign: 4n });
  if (xenDepends !== null) sections.push({ name: SECTION.xenDepends, type: SHT_PROGBITS, flags: SHF_ALLOC, data: noteBytes(xenDepends), addralign: 4n });
  if (modinfoStrings.length > 0) {
    sections.push({ name: SECTION.modinfo, type: SHT_PROGBITS, flags: SHF_ALLOC, data: encoder.encode(modinfoStrings.map((m) => `${m}\0`).join('')), addralign: 1n });
  }
  if (spec.funcs.length > 0) {
    // Writable, like gcc's output for Xen's payloads: Xen stores `applied` and `opaque` in it.
    sections.push({ name: format === 'xsplice' ? SECTION.xspliceFuncs : SECTION.funcs, type: SHT_PROGBITS, flags: SHF_ALLOC | SHF_WRITE, data: funcsData, addralign: 8n });
  }
  for (const hs of hookSections) sections.push({ name: hs.name, type: SHT_PROGBITS, flags: SHF_ALLOC, data: new Uint8Array(hs.count * 8), addralign: 8n });
  if (spec.writableData > 0) sections.push({ name: '.bss', type: SHT_NOBITS, flags: SHF_ALLOC | SHF_WRITE, size: BigInt(spec.writableData), addralign: 8n });

  const relocations: Record<string, ElfObjectRelocation[]> = { '.text': textRelas, ...hookRelas };
  relocations[format === 'xsplice' ? SECTION.xspliceFuncs : SECTION.funcs] = funcRelas;
  return { sections, symbols, relocations };
}
