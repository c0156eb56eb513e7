/**
 * What calling a function returns, decided from its machine code: the emulated hypervisor answers
 * "what does xen_extra_version return now" for gcc-built images and payloads alike.
 *
 * The code is decoded by a real x86-64 decoder (iced-x86, see x86.ts) and run by a small evaluator
 * of the return register, from the function's first instruction to its `ret`:
 *
 * - it follows `mov`/`movabs`/`movzx`/`movsx`/`lea`/`xor`/`add`/`sub`/`and`/`or`/`inc`/`dec`/`neg`/
 *   `not` between registers, immediates and memory, with 32-bit writes zero-extending (and 8- and
 *   16-bit writes merging), `push`/`pop`/`leave` and its own stack frame (so -O0 locals work);
 * - it skips what changes only memory outside the frame, flags or nothing (a counter's `addl $1`,
 *   `endbr64`, `nop`s, fences);
 * - %rip-relative and absolute addresses: in a linked image (ET_EXEC or ET_DYN, PIE or not) they
 *   are numbers; in a relocatable object (a payload) the relocation on the field decides:
 *   R_X86_64_PC32/PLT32 give S + A - P, R_X86_64_64/_32/_32S give S + A (the last two come from
 *   -fno-pic code, which Xen refuses at upload, but the evaluator still reads it);
 * - loads from read-only memory (.rodata, .data.rel.ro, and the pointers relocations put there)
 *   are followed; loads from writable memory are not (a counter changes);
 * - anything else that writes a register makes that register unknown, with the reason; a branch,
 *   a call, a trap or bytes that do not decode end the evaluation.
 *
 * At the `ret`, a value that points into an allocated, non-executable section is a pointer to a
 * string: the NUL-terminated string there is the result. Any other number is an integer. A result
 * that cannot be decided is `{ kind: 'undefined', why }`, where `why` always starts with "it" and
 * names the offset: "it branches at +0x12 (jne 0x1a)". `cannotTell(fn, why)` makes the sentence.
 *
 * Pure: no node: imports.
 */
import {
  R_X86_64_32, R_X86_64_32S, R_X86_64_64, R_X86_64_PC32, R_X86_64_PLT32, SHF_ALLOC, SHF_EXECINSTR, SHF_WRITE, SHN_ABS,
  SHN_UNDEF, SHT_NOBITS, SHT_RELA, STT_FUNC, STT_SECTION, cString, relocationTypeName, type ElfFile,
} from './elf.ts';
import type { LivepatchPayload, PayloadAddress } from './model.ts';
import { decodeX86, type Gpr, type X86Field, type X86Instruction, type X86Operand } from './x86.ts';

/** What calling a function returns: the shape of the emulator's CallResult. */
export type FunctionResult =
  | { readonly kind: 'string'; readonly value: string }
  | { readonly kind: 'integer'; readonly value: number }
  /** Not decidable from the code; `why` starts with "it" and says where and why. */
  | { readonly kind: 'undefined'; readonly why: string };

/** A declared result (defineImage): a string, or an unsigned 32-bit number. */
export type ConstantReturn =
  | { readonly kind: 'string'; readonly value: string }
  | { readonly kind: 'u32'; readonly value: number };

export function fromConstant(c: ConstantReturn): FunctionResult {
  return c.kind === 'string' ? c : { kind: 'integer', value: c.value };
}

/** The sentence for an undecidable result: "cannot tell what xen_foo returns: it branches at +0x12". */
export function cannotTell(fn: string, why: string): string {
  return `cannot tell what ${fn} returns: ${why}`;
}

/** `why` with another subject than "it": "its replacement foo branches at +0x12". */
export function reasonAbout(subject: string, why: string): string {
  return why.startsWith('it ') ? `${subject} ${why.slice(3)}` : `${subject}: ${why}`;
}

/** A loaded section of a linked image, as the evaluator needs to know it. */
export interface MemoryRegion {
  readonly name: string;
  readonly start: bigint;
  readonly size: bigint;
  readonly writable: boolean;
  readonly executable: boolean;
}

/** Read access to a linked image's memory by virtual address. */
export interface CodeMemory {
  /** `length` bytes at `address`, or null unless they all lie in one loaded section. */
  bytesAt(address: bigint, length: number): Uint8Array | null;
  /** The NUL-terminated string at `address` (cut at its section's end), or null. */
  stringAt(address: bigint): string | null;
  /** The loaded section holding `address` (null: none). Without it every number is an integer. */
  regionAt?(address: bigint): MemoryRegion | null;
  /** What a dynamic relocation (R_X86_64_RELATIVE in a PIE image) puts at `address`, if one does. */
  relocatedAt?(address: bigint): bigint | null;
  /** The function that starts at `address`, for naming callees and jump targets. */
  symbolAt?(address: bigint): string | null;
}

/** A relocatable object, as much as the evaluator reads of it. A LivepatchPayload is one. */
export interface RelocatableCode {
  readonly sections: readonly { readonly index: number; readonly name: string; readonly type: number; readonly flags: bigint; readonly size: bigint; readonly data: Uint8Array }[];
  readonly symbols: readonly { readonly index: number; readonly name: string; readonly value: bigint; readonly size: bigint; readonly type: number; readonly shndx: number }[];
  /** RELA entries by the index of the section they patch. */
  readonly relocations: ReadonlyMap<number, readonly { readonly offset: bigint; readonly type: number; readonly symbolIndex: number; readonly addend: bigint }[]>;
}

/** Any ET_REL file read by readElf, as a RelocatableCode (for objects Xen would refuse, too). */
export function relocatableCode(elf: ElfFile): RelocatableCode {
  const relocations = new Map<number, { offset: bigint; type: number; symbolIndex: number; addend: bigint }[]>();
  for (const s of elf.sections) {
    if (s.type !== SHT_RELA || s.info === 0 || s.info >= elf.sections.length) continue;
    const list = relocations.get(s.info) ?? [];
    // Not push(...): a large relocation section would exceed the call stack's argument limit.
    for (const r of elf.relocations(s)) list.push(r);
    relocations.set(s.info, list);
  }
  return { sections: elf.sections, symbols: elf.symbols, relocations };
}

/** The hypervisor a payload is loaded into: payload code may point at its symbols and memory. */
export interface HypervisorView {
  readonly memory: CodeMemory;
  lookup(name: string): bigint | null;
}

export interface ObjectResultOptions {
  readonly hypervisor?: HypervisorView;
}

/**
 * What the function of a relocatable object at `fn` (a symbol name, or a section and offset)
 * returns. Decided from its code and the object's relocations; see the file comment.
 */
export function objectFunctionResult(obj: RelocatableCode, fn: string | { readonly section: number; readonly offset: bigint }, options: ObjectResultOptions = {}): FunctionResult {
  let section: number;
  let offset: bigint;
  let size: bigint | null = null;
  if (typeof fn === 'string') {
    const sym = obj.symbols.find((s) => s.name === fn && s.shndx !== SHN_UNDEF && s.shndx < obj.sections.length);
    if (!sym) return { kind: 'undefined', why: `it is not defined in the object (no symbol ${fn})` };
    section = sym.shndx;
    offset = sym.value;
    if (sym.size > 0n) size = sym.size;
  } else {
    section = fn.section;
    offset = fn.offset;
    const sym = obj.symbols.find((s) => s.shndx === section && s.value === offset && s.type === STT_FUNC && s.size > 0n);
    if (sym) size = sym.size;
  }
  const sec = obj.sections[section];
  if (!sec || sec.type === SHT_NOBITS || offset < 0n || offset >= BigInt(sec.data.length)) {
    return { kind: 'undefined', why: `it has no code in the object (${sec?.name ?? `section ${section}`}+0x${offset.toString(16)})` };
  }
  const end = size === null ? BigInt(sec.data.length) : offset + size > BigInt(sec.data.length) ? BigInt(sec.data.length) : offset + size;
  const code = sec.data.subarray(Number(offset), Number(end));
  return evaluate(code, offset, new ObjectSpace(obj, section, offset, options.hypervisor));
}

/**
 * What the payload function at `func` (a symbol, or a func's newAddress) returns once applied.
 * A NOP entry (null) has no function of its own: see the adapter, which evaluates the live code.
 */
export function constantReturnOf(payload: LivepatchPayload, func: string | PayloadAddress | null, options: ObjectResultOptions = {}): FunctionResult {
  if (func === null) return { kind: 'undefined', why: 'it is a NOP entry: the payload has no replacement function' };
  if (typeof func === 'string') return objectFunctionResult(payload, func, options);
  switch (func.kind) {
    case 'payload':
      return objectFunctionResult(payload, { section: func.sectionIndex, offset: func.offset }, options);
    case 'absolute':
      return options.hypervisor
        ? constantReturnAt(options.hypervisor.memory, func.value)
        : { kind: 'undefined', why: `it is code at 0x${func.value.toString(16)}, outside the payload` };
    case 'external': {
      const at = options.hypervisor?.lookup(func.symbol);
      return options.hypervisor && at !== null && at !== undefined
        ? constantReturnAt(options.hypervisor.memory, at + func.addend, { name: func.symbol })
        : { kind: 'undefined', why: `it is ${func.symbol}, a function outside the payload` };
    }
  }
}

export interface LinkedResultOptions {
  /** The function's name, for nothing but symmetry with the object form. */
  readonly name?: string;
  /** Its size in bytes (the symbol's); default: up to 512 bytes, to its section's end. */
  readonly size?: number;
  /** The bytes to run instead of memory's (the live code of a patched function). */
  readonly code?: Uint8Array;
}

/** What the function at `address` of a linked image returns. */
export function constantReturnAt(memory: CodeMemory, address: bigint, options: LinkedResultOptions = {}): FunctionResult {
  let code = options.code ?? null;
  if (!code) {
    let want = options.size && options.size > 0 ? options.size : 512;
    const region = memory.regionAt?.(address);
    if (region && address + BigInt(want) > region.start + region.size) want = Number(region.start + region.size - address);
    code = memory.bytesAt(address, want);
    // No region information and no size: take what is there.
    for (let n = want >> 1; !code && n > 0; n = n > 16 ? n >> 1 : n - 1) code = memory.bytesAt(address, n);
  }
  if (!code || code.length === 0) return { kind: 'undefined', why: `it has no code in the image at 0x${address.toString(16)}` };
  return evaluate(code, address, new LinkedSpace(memory));
}

// ---------------------------------------------------------------------------------------------
// Values
// ---------------------------------------------------------------------------------------------

/** A value the evaluator knows: a number, a place in an object's section, an unresolved symbol, a place in its own frame. */
type Known =
  | { readonly t: 'num'; readonly v: bigint }
  | { readonly t: 'sec'; readonly s: number; readonly o: bigint }
  | { readonly t: 'sym'; readonly name: string; readonly o: bigint }
  | { readonly t: 'stack'; readonly o: bigint };
type Unknown = { readonly t: 'unknown'; readonly why: string };
type Val = Known | Unknown;

const U64 = (1n << 64n) - 1n;
const mask = (size: number) => (size >= 8 ? U64 : (1n << BigInt(size * 8)) - 1n);
const num = (v: bigint): Known => ({ t: 'num', v: v & U64 });
const unknown = (why: string): Unknown => ({ t: 'unknown', why });
const hex = (v: bigint | number) => `0x${BigInt(v).toString(16)}`;

function isKnown(v: Val): v is Known {
  return v.t !== 'unknown';
}

function add(a: Val, b: Val, at: string): Val {
  if (!isKnown(a)) return a;
  if (!isKnown(b)) return b;
  if (a.t === 'num' && b.t === 'num') return num(a.v + b.v);
  if (b.t === 'num') return shift(a, BigInt.asIntN(64, b.v));
  if (a.t === 'num') return shift(b, BigInt.asIntN(64, a.v));
  return unknown(`it adds two addresses at ${at}`);
}

function shift(a: Known, by: bigint): Known {
  switch (a.t) {
    case 'num':
      return num(a.v + by);
    case 'sec':
      return { t: 'sec', s: a.s, o: a.o + by };
    case 'sym':
      return { t: 'sym', name: a.name, o: a.o + by };
    case 'stack':
      return { t: 'stack', o: a.o + by };
  }
}

function sub(a: Val, b: Val, at: string): Val {
  if (!isKnown(a)) return a;
  if (!isKnown(b)) return b;
  if (b.t === 'num') return a.t === 'num' ? num(a.v - b.v) : shift(a, -BigInt.asIntN(64, b.v));
  if (a.t === 'sec' && b.t === 'sec' && a.s === b.s) return num(a.o - b.o);
  if (a.t === 'stack' && b.t === 'stack') return num(a.o - b.o);
  return unknown(`it subtracts addresses at ${at}`);
}

/** A value seen through `size` bytes: numbers are cut; addresses survive 32 bits (-fno-pic code's model). */
function narrow(v: Val, size: number, what: string, at: string): Val {
  if (!isKnown(v) || size >= 8) return v;
  if (v.t === 'num') return num(v.v & mask(size));
  if (size === 4 && v.t !== 'stack') return v;
  return unknown(`it uses ${size * 8} bits of an address (${what}) at ${at}`);
}

function signExtend(v: bigint, fromSize: number): bigint {
  return BigInt.asUintN(64, BigInt.asIntN(fromSize * 8, v));
}

// ---------------------------------------------------------------------------------------------
// Address spaces: where the code lives and how its addresses resolve
// ---------------------------------------------------------------------------------------------

interface Space {
  /** The value a relocation puts into a field of the instruction at code offset `insnOffset`, or null if none does. */
  relocated(insn: X86Instruction, field: X86Field, ripRelative: boolean): Val | null;
  /** The address a %rip-relative operand without a relocation designates (target as decoded). */
  ripTarget(target: bigint): Known;
  /** `size` bytes at `addr` (not the stack), or why not. */
  load(addr: Known, size: number, at: string): Val;
  /** The result a final %rax means. */
  finish(v: Known): FunctionResult;
  /** The callee a call names, if a relocation or the memory says. */
  callee(insn: X86Instruction): string | null;
  /** The code a direct jump goes to (a tail call, a shared epilogue), or null if it cannot be followed. */
  jumpTarget(insn: X86Instruction): Segment | null;
  /** Names the place code at `ip` starts, to notice a jump back to code already run. */
  place(ip: bigint): string;
}

/** Code to run: its bytes, the address (or section offset) of the first, and a label for reasons. */
interface Segment {
  readonly code: Uint8Array;
  readonly ip: bigint;
  readonly space: Space;
  /** "" for the function itself; the jump target's name (or address) after a jump. */
  readonly label: string;
}

class ObjectSpace implements Space {
  private readonly relocs: Map<bigint, { offset: bigint; type: number; symbolIndex: number; addend: bigint }>;

  constructor(
    private readonly obj: RelocatableCode,
    private readonly section: number,
    private readonly start: bigint,
    private readonly hypervisor: HypervisorView | undefined,
  ) {
    this.relocs = relocationIndex(obj, section);
  }

  private symbolValue(index: number, addend: bigint): Val {
    const sym = this.obj.symbols[index];
    if (!sym) return unknown(`it uses relocation symbol ${index}, which the object does not have`);
    if (sym.shndx === SHN_UNDEF) {
      const at = this.hypervisor?.lookup(sym.name);
      return at !== null && at !== undefined ? num(at + addend) : { t: 'sym', name: sym.name, o: addend };
    }
    if (sym.shndx === SHN_ABS) return num(sym.value + addend);
    if (sym.shndx >= this.obj.sections.length) return unknown(`it uses ${sym.name || 'a symbol'} in a special section (${hex(sym.shndx)})`);
    return { t: 'sec', s: sym.shndx, o: sym.value + addend };
  }

  relocated(insn: X86Instruction, field: X86Field, ripRelative: boolean): Val | null {
    const place = this.start + BigInt(insn.offset + field.offset);
    const r = this.relocs.get(place);
    if (!r) return null;
    const at = `+${hex(insn.offset)}`;
    const s = this.symbolValue(r.symbolIndex, r.addend);
    if (ripRelative || r.type === R_X86_64_PC32 || r.type === R_X86_64_PLT32) {
      if (!ripRelative || (r.type !== R_X86_64_PC32 && r.type !== R_X86_64_PLT32) || field.size !== 4) {
        return unknown(`it has a ${relocationTypeName(r.type)} relocation the evaluator cannot apply at ${at} (${insn.text})`);
      }
      // The field holds S + A - P; the CPU adds the address of the next instruction.
      return isKnown(s) ? shift(s, BigInt(insn.length - field.offset)) : s;
    }
    if ((r.type === R_X86_64_32 || r.type === R_X86_64_32S) && field.size === 4) return s;
    if (r.type === R_X86_64_64 && field.size === 8) return s;
    return unknown(`it has a ${relocationTypeName(r.type)} relocation the evaluator cannot apply at ${at} (${insn.text})`);
  }

  ripTarget(target: bigint): Known {
    return { t: 'sec', s: this.section, o: target };
  }

  place(ip: bigint): string {
    return `section ${this.section}+${ip}`;
  }

  private describe(s: number, o: bigint): string {
    return `${this.obj.sections[s]?.name ?? `section ${s}`}+${hex(o)}`;
  }

  load(addr: Known, size: number, at: string): Val {
    if (addr.t === 'num') {
      return this.hypervisor ? loadLinked(this.hypervisor.memory, addr.v, size, at) : unknown(`it reads memory at ${hex(addr.v)}, outside the payload, at ${at}`);
    }
    if (addr.t === 'sym') return unknown(`it reads ${addr.name}${addr.o ? `+${hex(addr.o)}` : ''}, memory outside the payload, at ${at}`);
    if (addr.t !== 'sec') return unknown(`it reads memory it cannot follow at ${at}`);
    const sec = this.obj.sections[addr.s];
    const where = this.describe(addr.s, addr.o);
    if (!sec) return unknown(`it reads ${where} at ${at}, which does not exist`);
    if ((sec.flags & SHF_ALLOC) === 0n) return unknown(`it reads ${where} at ${at}, which Xen does not load`);
    if ((sec.flags & SHF_WRITE) !== 0n && !isRelro(sec.name)) {
      return unknown(`it reads writable memory (${where}) at ${at}: what it holds when the function runs is not known`);
    }
    const end = addr.o + BigInt(size);
    for (const [off, r] of relocationIndex(this.obj, addr.s)) {
      const width = RELOCATION_WIDTH[r.type] ?? 8n;
      if (width === 0n || off + width <= addr.o || off >= end) continue;
      const absolute = r.type === R_X86_64_64 || r.type === R_X86_64_32 || r.type === R_X86_64_32S;
      if (absolute && off === addr.o && width === BigInt(size)) return this.symbolValue(r.symbolIndex, r.addend);
      return unknown(`it reads ${where} at ${at}, which a ${relocationTypeName(r.type)} relocation fills in a way the evaluator does not follow`);
    }
    if (sec.type === SHT_NOBITS) return num(0n);
    if (addr.o < 0n || addr.o + BigInt(size) > BigInt(sec.data.length)) return unknown(`it reads ${where} at ${at}, past the end of ${sec.name}`);
    return num(readLE(sec.data, Number(addr.o), size));
  }

  finish(v: Known): FunctionResult {
    switch (v.t) {
      case 'num':
        return this.hypervisor ? finishLinked(this.hypervisor.memory, v.v) : integer(v.v);
      case 'sym':
        return { kind: 'undefined', why: `it returns the address of ${v.name}${v.o ? `+${hex(v.o)}` : ''}, which the emulator cannot resolve` };
      case 'stack':
        return { kind: 'undefined', why: 'it returns a pointer into its own stack frame' };
      case 'sec': {
        const sec = this.obj.sections[v.s];
        const where = this.describe(v.s, v.o);
        if (!sec || (sec.flags & SHF_ALLOC) === 0n) return { kind: 'undefined', why: `it returns an address in ${where}, which Xen does not load` };
        if ((sec.flags & SHF_EXECINSTR) !== 0n) return { kind: 'undefined', why: `it returns the address of code (${where}), not a value` };
        if (v.o < 0n || v.o > sec.size) return { kind: 'undefined', why: `it returns an address outside ${sec.name} (${where})` };
        if (sec.type === SHT_NOBITS) return { kind: 'string', value: '' };
        if (longString(sec.data, Number(v.o))) return { kind: 'undefined', why: `it returns a string of more than ${MAX_RESULT_BYTES} bytes (${where}), which the emulator does not read` };
        return { kind: 'string', value: cString(sec.data, Number(v.o)) };
      }
    }
  }

  jumpTarget(insn: X86Instruction): Segment | null {
    const op = insn.operands[0];
    if (!op || op.kind !== 'branch') return null;
    const v = (op.field && this.relocated(insn, op.field, true)) || this.ripTarget(op.target);
    if (!isKnown(v)) return null;
    if (v.t === 'num') return this.hypervisor ? linkedSegment(this.hypervisor.memory, v.v) : null;
    if (v.t !== 'sec') return null;
    const sec = this.obj.sections[v.s];
    if (!sec || (sec.flags & SHF_EXECINSTR) === 0n || sec.type === SHT_NOBITS || v.o < 0n || v.o >= BigInt(sec.data.length)) return null;
    const sym = this.obj.symbols.find((x) => x.shndx === v.s && x.value === v.o && x.type === STT_FUNC);
    const end = sym && sym.size > 0n && v.o + sym.size <= BigInt(sec.data.length) ? v.o + sym.size : BigInt(sec.data.length);
    return {
      code: sec.data.subarray(Number(v.o), Number(end)),
      ip: v.o,
      space: new ObjectSpace(this.obj, v.s, v.o, this.hypervisor),
      label: sym?.name || this.describe(v.s, v.o),
    };
  }

  callee(insn: X86Instruction): string | null {
    const op = insn.operands[0];
    if (!op || op.kind !== 'branch' || !op.field) return null;
    const r = this.relocs.get(this.start + BigInt(insn.offset + op.field.offset));
    const sym = r ? this.obj.symbols[r.symbolIndex] : undefined;
    if (!sym) return null;
    return sym.type === STT_SECTION ? `${this.obj.sections[sym.shndx]?.name ?? 'a section'}+${hex(r!.addend + 4n)}` : sym.name;
  }
}

const relocationIndexes = new WeakMap<RelocatableCode, Map<number, Map<bigint, { offset: bigint; type: number; symbolIndex: number; addend: bigint }>>>();
function relocationIndex(obj: RelocatableCode, section: number): Map<bigint, { offset: bigint; type: number; symbolIndex: number; addend: bigint }> {
  let perObject = relocationIndexes.get(obj);
  if (!perObject) relocationIndexes.set(obj, (perObject = new Map()));
  let index = perObject.get(section);
  if (!index) {
    index = new Map();
    for (const r of obj.relocations.get(section) ?? []) if (!index.has(r.offset)) index.set(r.offset, r);
    perObject.set(section, index);
  }
  return index;
}

/** Bytes a relocation writes (0: R_X86_64_NONE). */
const RELOCATION_WIDTH: Record<number, bigint> = { 0: 0n, [R_X86_64_64]: 8n, [R_X86_64_PC32]: 4n, [R_X86_64_PLT32]: 4n, [R_X86_64_32]: 4n, [R_X86_64_32S]: 4n };

/** .data.rel.ro holds pointers that are read-only once relocated (RELRO). */
function isRelro(name: string): boolean {
  return name === '.data.rel.ro' || name.startsWith('.data.rel.ro.');
}

class LinkedSpace implements Space {
  constructor(private readonly memory: CodeMemory) {}
  relocated(): Val | null {
    return null;
  }
  ripTarget(target: bigint): Known {
    return num(target);
  }
  place(ip: bigint): string {
    return `address ${ip}`;
  }
  load(addr: Known, size: number, at: string): Val {
    if (addr.t !== 'num') return unknown(`it reads memory it cannot follow at ${at}`);
    return loadLinked(this.memory, addr.v, size, at);
  }
  finish(v: Known): FunctionResult {
    if (v.t === 'stack') return { kind: 'undefined', why: 'it returns a pointer into its own stack frame' };
    if (v.t !== 'num') return { kind: 'undefined', why: 'it returns an address the emulator cannot resolve' };
    return finishLinked(this.memory, v.v);
  }
  callee(insn: X86Instruction): string | null {
    const op = insn.operands[0];
    return op?.kind === 'branch' ? (this.memory.symbolAt?.(op.target) ?? null) : null;
  }
  jumpTarget(insn: X86Instruction): Segment | null {
    const op = insn.operands[0];
    return op?.kind === 'branch' ? linkedSegment(this.memory, op.target) : null;
  }
}

/** Code at `address` of a linked image: to its section's end, at most 512 bytes. */
function linkedSegment(memory: CodeMemory, address: bigint): Segment | null {
  const region = memory.regionAt?.(address);
  if (memory.regionAt && (!region || !region.executable)) return null;
  let n = region ? Number(region.start + region.size - address) : 512;
  if (n > 512) n = 512;
  let code = memory.bytesAt(address, n);
  for (let k = n >> 1; !code && k > 0; k = k > 16 ? k >> 1 : k - 1) code = memory.bytesAt(address, k);
  if (!code) return null;
  return { code, ip: address, space: new LinkedSpace(memory), label: memory.symbolAt?.(address) ?? hex(address) };
}

function describeLinked(memory: CodeMemory, address: bigint): string {
  const r = memory.regionAt?.(address);
  return r ? `${r.name}+${hex(address - r.start)}` : hex(address);
}

function loadLinked(memory: CodeMemory, address: bigint, size: number, at: string): Val {
  const region = memory.regionAt?.(address);
  const where = describeLinked(memory, address);
  if (memory.regionAt && !region) return unknown(`it reads ${hex(address)} at ${at}, which is not in the image`);
  if (region?.writable && !isRelro(region.name)) {
    return unknown(`it reads writable memory (${where}) at ${at}: what it holds when the function runs is not known`);
  }
  if (size === 8) {
    const relocated = memory.relocatedAt?.(address);
    if (relocated !== null && relocated !== undefined) return num(relocated);
  }
  const bytes = memory.bytesAt(address, size);
  if (!bytes) return unknown(`it reads ${where} at ${at}, which the image does not hold`);
  return num(readLE(bytes, 0, size));
}

/**
 * The longest string a result may be. Every function of a payload may return (a pointer into) the
 * same long string, and each result is kept: unbounded, a 2 MiB payload could hold gigabytes
 * (found by fuzzing). Results are compared with a plan's verify.expect, at most 200 characters.
 */
export const MAX_RESULT_BYTES = 4096;

/** No NUL within MAX_RESULT_BYTES of `offset`, and the data goes on. */
function longString(data: Uint8Array, offset: number): boolean {
  return offset + MAX_RESULT_BYTES < data.length && data.subarray(offset, offset + MAX_RESULT_BYTES + 1).indexOf(0) === -1;
}

function finishLinked(memory: CodeMemory, value: bigint): FunctionResult {
  const region = memory.regionAt?.(value);
  if (region && !region.executable) {
    const s = memory.stringAt(value);
    if (s !== null && s.length > MAX_RESULT_BYTES) return { kind: 'undefined', why: `it returns a string of more than ${MAX_RESULT_BYTES} bytes, which the emulator does not read` };
    if (s !== null) return { kind: 'string', value: s };
    // NOBITS (.bss): zeros in memory, so an empty string.
    if (value < region.start + region.size) return { kind: 'string', value: '' };
  }
  return integer(value);
}

/** A number as the emulator's results hold it: unsigned up to 2^53, else as a signed 64-bit value. */
function integer(v: bigint): FunctionResult {
  if (v <= BigInt(Number.MAX_SAFE_INTEGER)) return { kind: 'integer', value: Number(v) };
  const signed = BigInt.asIntN(64, v);
  if (signed >= BigInt(Number.MIN_SAFE_INTEGER)) return { kind: 'integer', value: Number(signed) };
  return { kind: 'undefined', why: `it returns ${hex(v)}, a 64-bit value a JSON number cannot hold exactly` };
}

function readLE(bytes: Uint8Array, at: number, size: number): bigint {
  let v = 0n;
  for (let i = size - 1; i >= 0; i--) v = (v << 8n) | BigInt(bytes[at + i] ?? 0);
  return v;
}

// ---------------------------------------------------------------------------------------------
// The evaluator
// ---------------------------------------------------------------------------------------------

/** Registers and the frame; a register never written yet is `undefined` (the caller's). */
class Machine {
  readonly regs: (Val | undefined)[] = new Array(16).fill(undefined);
  /** The frame: value stored at (offset from %rsp at entry) with its size. */
  readonly stack = new Map<bigint, { size: number; v: Val }>();

  constructor() {
    this.regs[4] = { t: 'stack', o: 0n };
  }

  read(reg: Gpr, at: string): Val {
    const v = this.regs[reg.family];
    if (v === undefined) {
      return unknown(`it reads %${reg.name} at ${at} before setting it (an argument, or whatever the caller left there)`);
    }
    if (reg.high) return isKnown(v) && v.t === 'num' ? num((v.v >> 8n) & 0xffn) : unknown(`it uses %${reg.name} of an address at ${at}`);
    return narrow(v, reg.size, `%${reg.name}`, at);
  }

  write(reg: Gpr, v: Val, at: string): void {
    if (reg.size === 8) {
      this.regs[reg.family] = v;
      return;
    }
    if (reg.size === 4) {
      // 32-bit writes zero-extend.
      this.regs[reg.family] = narrow(v, 4, `%${reg.name}`, at);
      return;
    }
    const old = this.regs[reg.family];
    if (old !== undefined && isKnown(old) && old.t === 'num' && isKnown(v) && v.t === 'num') {
      const width = BigInt(reg.size * 8);
      const shiftBy = reg.high ? 8n : 0n;
      const m = ((1n << width) - 1n) << shiftBy;
      this.regs[reg.family] = num((old.v & ~m) | ((v.v << shiftBy) & m));
      return;
    }
    this.regs[reg.family] = unknown(`it sets only %${reg.name} at ${at}, and the rest of the register is not known`);
  }

  store(addr: Val, v: Val, size: number): void {
    if (!isKnown(addr)) {
      // It may have written into the frame.
      this.stack.clear();
      return;
    }
    if (addr.t !== 'stack') return; // memory outside the frame: not the evaluator's business
    const start = addr.o;
    const end = start + BigInt(size);
    for (const [o, slot] of this.stack) if (o < end && o + BigInt(slot.size) > start) this.stack.delete(o);
    this.stack.set(start, { size, v });
  }

  loadStack(addr: { o: bigint }, size: number, at: string): Val {
    const slot = this.stack.get(addr.o);
    if (slot && slot.size === size) return slot.v;
    if (slot && slot.size > size && isKnown(slot.v) && slot.v.t === 'num') return num(slot.v.v & mask(size));
    if (slot && slot.size === 8 && size === 4) return narrow(slot.v, 4, 'a stack slot', at);
    return unknown(`it reads a stack slot at ${at} that it did not write`);
  }
}

const MAX_INSTRUCTIONS = 256;

/** Direct jumps followed at most (tail calls, shared epilogues); loops end at the instruction budget. */
const MAX_JUMPS = 16;

function evaluate(code: Uint8Array, ip: bigint, space: Space): FunctionResult {
  const m = new Machine();
  let segment: Segment = { code, ip, space, label: '' };
  let budget = MAX_INSTRUCTIONS;
  const seen = new Set<string>([space.place(ip)]);
  for (let jumps = 0; ; jumps++) {
    const insns = decodeX86(segment.code, { ip: segment.ip, maxInstructions: budget });
    budget -= insns.length;
    let next: Segment | null = null;
    for (const insn of insns) {
      const at = `${segment.label}+${hex(insn.offset)}`;
      if (insn.flow === 'jump' && jumps < MAX_JUMPS) next = segment.space.jumpTarget(insn);
      if (next && seen.has(next.space.place(next.ip))) return { kind: 'undefined', why: `it loops forever at ${at} (${insn.text})` };
      if (next) break;
      const stop = step(m, insn, at, segment.space);
      if (stop) return stop;
    }
    if (next) {
      seen.add(next.space.place(next.ip));
      segment = next;
      continue;
    }
    if (budget <= 0) return { kind: 'undefined', why: `it runs more than ${MAX_INSTRUCTIONS} instructions without returning` };
    const last = insns[insns.length - 1];
    const end = last ? last.offset + last.length : 0;
    const whose = segment.label ? `the code at ${segment.label}` : 'its code';
    return { kind: 'undefined', why: `it runs past the end of ${whose} (${end} bytes) without returning` };
  }
}

function stopAt(insn: X86Instruction, at: string, space: Space): FunctionResult {
  const text = `(${insn.text})`;
  switch (insn.flow) {
    case 'conditional':
      return { kind: 'undefined', why: `it branches at ${at} ${text}` };
    case 'jump':
    case 'indirect-jump':
      return { kind: 'undefined', why: `it jumps elsewhere at ${at} ${text}` };
    case 'call':
    case 'indirect-call': {
      const callee = space.callee(insn);
      return { kind: 'undefined', why: `it calls ${callee ?? 'another function'} at ${at} ${text}` };
    }
    case 'interrupt':
    case 'exception':
      return { kind: 'undefined', why: `it traps at ${at} ${text}` };
    case 'transaction':
      return { kind: 'undefined', why: `it starts or ends a memory transaction at ${at} ${text}` };
    case 'invalid':
      return { kind: 'undefined', why: `it has bytes that are not an x86-64 instruction at ${at}` };
    case 'return':
      return { kind: 'undefined', why: `it returns from an interrupt or a system call at ${at} ${text}` };
    case 'next':
      return { kind: 'undefined', why: `it stops being followed at ${at} ${text}` };
  }
}

/** Runs one instruction; returns the result at a `ret` or a stop, undefined to go on. */
function step(m: Machine, insn: X86Instruction, at: string, space: Space): FunctionResult | undefined {
  if (insn.flow === 'return' && insn.mnemonic === 'ret') {
    const rax = m.regs[0];
    if (rax === undefined) return { kind: 'undefined', why: 'it returns without setting %rax' };
    return isKnown(rax) ? space.finish(rax) : { kind: 'undefined', why: rax.why };
  }
  if (insn.flow !== 'next') return stopAt(insn, at, space);

  const ops = insn.operands;
  const [dst, src] = ops;
  const text = `(${insn.text})`;

  /** Value of an operand read with `size` bytes. */
  const value = (op: X86Operand, size: number): Val => {
    switch (op.kind) {
      case 'gpr':
        return m.read(op.reg, at);
      case 'immediate': {
        const reloc = op.field ? space.relocated(insn, op.field, false) : null;
        if (reloc) return narrow(reloc, size, 'an immediate', at);
        return num(op.value & mask(size));
      }
      case 'memory': {
        const addr = address(op);
        if (!isKnown(addr)) return addr;
        if (op.segment) return unknown(`it reads %${op.segment}-relative (per-CPU) memory at ${at} ${text}`);
        if (addr.t === 'stack') return m.loadStack(addr, op.size || size, at);
        return space.load(addr, op.size || size, at);
      }
      default:
        return unknown(`it uses an operand the evaluator does not follow at ${at} ${text}`);
    }
  };

  /** The address a memory operand designates (lea's result). */
  const address = (op: Extract<X86Operand, { kind: 'memory' }>): Val => {
    if (op.segment) return unknown(`it uses %${op.segment}-relative (per-CPU) memory at ${at} ${text}`);
    if (op.base === 'rip') {
      const reloc = op.displacementField ? space.relocated(insn, op.displacementField, true) : null;
      return reloc ?? space.ripTarget(op.displacement);
    }
    let v: Val = (op.displacementField && space.relocated(insn, op.displacementField, false)) || num(op.displacement);
    if (op.base) v = add(v, m.read(op.base, at), at);
    if (op.index) {
      const i = m.read(op.index, at);
      if (op.scale === 1) v = add(v, i, at);
      else v = isKnown(i) && i.t === 'num' ? add(v, num(i.v * BigInt(op.scale)), at) : isKnown(i) ? unknown(`it scales an address at ${at} ${text}`) : i;
    }
    return v;
  };

  const sizeOf = (op: X86Operand | undefined): number => (op?.kind === 'gpr' ? op.reg.size : op?.kind === 'memory' ? op.size : 8);

  /** Writes `v` to a register or memory operand. */
  const put = (op: X86Operand, v: Val, size: number) => {
    if (op.kind === 'gpr') m.write(op.reg, v, at);
    else if (op.kind === 'memory') m.store(address(op), v, size);
  };

  const arithmetic = (fn: (a: Val, b: Val) => Val) => {
    if (!dst || !src) return generic(m, insn, at, address);
    const size = sizeOf(dst);
    if (dst.kind === 'memory' && !isStack(address(dst))) return memoryOnly(m, insn, address);
    put(dst, fn(value(dst, size), value(src, size)), size);
    return undefined;
  };

  switch (insn.mnemonic) {
    case 'nop':
    case 'endbr64':
    case 'endbr32':
    case 'pause':
    case 'lfence':
    case 'mfence':
    case 'sfence':
      return undefined;
    case 'mov': {
      if (!dst || !src || (dst.kind !== 'gpr' && dst.kind !== 'memory') || src.kind === 'register' || src.kind === 'other') return generic(m, insn, at, address);
      const size = sizeOf(dst);
      put(dst, value(src, size), size);
      return undefined;
    }
    case 'movzx':
    case 'movsx':
    case 'movsxd': {
      if (!dst || !src || dst.kind !== 'gpr') return generic(m, insn, at, address);
      const from = sizeOf(src);
      const v = value(src, from);
      if (isKnown(v) && v.t !== 'num' && from < 4) {
        m.write(dst.reg, unknown(`it extends part of an address at ${at} ${text}`), at);
      } else if (isKnown(v) && v.t === 'num') {
        m.write(dst.reg, num(insn.mnemonic === 'movzx' ? v.v & mask(from) : signExtend(v.v, from)), at);
      } else {
        m.write(dst.reg, v, at);
      }
      return undefined;
    }
    case 'cdqe': {
      const eax = m.read({ family: 0, size: 4, high: false, name: 'eax' }, at);
      m.write({ family: 0, size: 8, high: false, name: 'rax' }, isKnown(eax) && eax.t === 'num' ? num(signExtend(eax.v, 4)) : eax, at);
      return undefined;
    }
    case 'lea': {
      if (!dst || dst.kind !== 'gpr' || !src || src.kind !== 'memory') return generic(m, insn, at, address);
      m.write(dst.reg, address(src), at);
      return undefined;
    }
    case 'xor':
    case 'sub':
      if (dst?.kind === 'gpr' && src?.kind === 'gpr' && dst.reg.family === src.reg.family && dst.reg.size === src.reg.size && !dst.reg.high && !src.reg.high) {
        // The zero idiom: whatever the register held.
        m.write(dst.reg, num(0n), at);
        return undefined;
      }
      return insn.mnemonic === 'sub' ? arithmetic((a, b) => sub(a, b, at)) : arithmetic((a, b) => bitwise(a, b, (x, y) => x ^ y, at));
    case 'add':
      return arithmetic((a, b) => add(a, b, at));
    case 'and':
      return arithmetic((a, b) => bitwise(a, b, (x, y) => x & y, at));
    case 'or':
      return arithmetic((a, b) => bitwise(a, b, (x, y) => x | y, at));
    case 'inc':
    case 'dec':
    case 'neg':
    case 'not': {
      if (!dst || (dst.kind !== 'gpr' && dst.kind !== 'memory')) return generic(m, insn, at, address);
      if (dst.kind === 'memory' && !isStack(address(dst))) return memoryOnly(m, insn, address);
      const size = sizeOf(dst);
      const v = value(dst, size);
      const r =
        insn.mnemonic === 'inc' ? add(v, num(1n), at)
          : insn.mnemonic === 'dec' ? sub(v, num(1n), at)
            : isKnown(v) && v.t === 'num' ? num(insn.mnemonic === 'neg' ? -v.v : ~v.v)
              : isKnown(v) ? unknown(`it negates an address at ${at} ${text}`) : v;
      put(dst, narrow(r, size, 'the result', at), size);
      return undefined;
    }
    case 'push': {
      if (!dst || (dst.kind !== 'gpr' && dst.kind !== 'immediate' && dst.kind !== 'memory')) return generic(m, insn, at, address);
      const v = dst.kind === 'immediate' ? num(signExtend(dst.value & mask(4), 4)) : value(dst, 8);
      const rsp = sub(m.read(RSP, at), num(8n), at);
      m.write(RSP, rsp, at);
      m.store(rsp, v, 8);
      return undefined;
    }
    case 'pop': {
      if (!dst || dst.kind !== 'gpr' || dst.reg.size !== 8) return generic(m, insn, at, address);
      const rsp = m.read(RSP, at);
      const v = isKnown(rsp) && rsp.t === 'stack' ? m.loadStack(rsp, 8, at) : unknown(`it pops from a stack it lost track of at ${at}`);
      m.write(RSP, add(rsp, num(8n), at), at);
      m.write(dst.reg, v, at);
      return undefined;
    }
    case 'leave': {
      const rbp = m.read(RBP, at);
      const v = isKnown(rbp) && rbp.t === 'stack' ? m.loadStack(rbp, 8, at) : unknown(`it restores %rbp from a frame it lost track of at ${at}`);
      m.write(RSP, add(rbp, num(8n), at), at);
      m.write(RBP, v, at);
      return undefined;
    }
    case 'xchg': {
      if (dst?.kind === 'gpr' && src?.kind === 'gpr') {
        const a = m.read(dst.reg, at);
        const b = m.read(src.reg, at);
        m.write(dst.reg, b, at);
        m.write(src.reg, a, at);
        return undefined;
      }
      return generic(m, insn, at, address);
    }
    default:
      return generic(m, insn, at, address);
  }
}

const RSP: Gpr = { family: 4, size: 8, high: false, name: 'rsp' };
const RBP: Gpr = { family: 5, size: 8, high: false, name: 'rbp' };

function isStack(v: Val): boolean {
  return isKnown(v) && v.t === 'stack';
}

function bitwise(a: Val, b: Val, fn: (x: bigint, y: bigint) => bigint, at: string): Val {
  if (!isKnown(a)) return a;
  if (!isKnown(b)) return b;
  if (a.t === 'num' && b.t === 'num') return num(fn(a.v, b.v));
  return unknown(`it does bit operations on an address at ${at}`);
}

/** An instruction whose only effect is on memory outside the frame (and flags): a counter's increment. */
function memoryOnly(m: Machine, insn: X86Instruction, address: (op: Extract<X86Operand, { kind: 'memory' }>) => Val): undefined {
  for (const op of insn.operands) if (op.kind === 'memory') m.store(address(op), unknown('overwritten'), op.size || 8);
  return undefined;
}

/**
 * Any other instruction: whatever general-purpose register it writes (iced-x86's instruction info
 * says which) becomes unknown, with the reason; memory it writes outside the frame does not matter.
 */
function generic(m: Machine, insn: X86Instruction, at: string, address: (op: Extract<X86Operand, { kind: 'memory' }>) => Val): undefined {
  const text = `(${insn.text})`;
  for (const w of insn.writes) {
    // Name the register as the instruction does (%eax), not as iced's instruction info does (%rax).
    const named = insn.operands.find((o) => o.kind === 'gpr' && o.reg.family === w.reg.family);
    const name = named?.kind === 'gpr' ? named.reg.name : w.reg.name;
    m.regs[w.reg.family] = unknown(
      w.conditional
        ? `it sets %${name} only if a condition holds at ${at} ${text}`
        : `it computes %${name} with ${insn.mnemonic}, which the evaluator does not follow, at ${at} ${text}`,
    );
  }
  if (insn.writesMemory) {
    const mem = insn.operands.find((o): o is Extract<X86Operand, { kind: 'memory' }> => o.kind === 'memory');
    if (mem) m.store(address(mem), unknown(`it overwrites a stack slot at ${at} ${text}`), mem.size || 8);
    else m.stack.clear();
  }
  return undefined;
}
