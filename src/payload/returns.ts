/**
 * What calling a function returns, for the two shapes of constant function Xen's test payloads and
 * version getters compile to (gcc -O2, -fpic):
 *
 *   lea rel32(%rip),%rax ; ret     48 8d 05 <rel32> c3    returns a pointer to a string
 *   mov $imm32,%eax ; ret          b8 <imm32> c3          returns an unsigned int
 *   xor %eax,%eax ; ret            31 c0 c3               returns 0
 *
 * optionally after an `endbr64` (f3 0f 1e fa). In a payload (ET_REL) the rel32 is filled by a
 * R_X86_64_PC32/PLT32 relocation: the string is at S + A + 4 (the lea's displacement counts from
 * the end of the 4-byte field). In a linked image the rel32 is already resolved: the string is at
 * address + 7 + rel32. The emulated hypervisor uses this to answer "what does xen_extra_version
 * return now" for built and for gcc-compiled payloads alike.
 *
 * Pure: no node: imports.
 */
import { R_X86_64_PC32, R_X86_64_PLT32, cString } from './elf.ts';
import type { LivepatchPayload, PayloadAddress } from './model.ts';

export type ConstantReturn =
  | { readonly kind: 'string'; readonly value: string }
  | { readonly kind: 'u32'; readonly value: number };

const ENDBR64 = [0xf3, 0x0f, 0x1e, 0xfa];
const LEA_RAX_RIP = [0x48, 0x8d, 0x05];
const RET = 0xc3;

type Shape = { kind: 'lea'; rel32At: number; rel32: number; end: number } | { kind: 'u32'; value: number };

/** Decodes one of the shapes at `offset` of `code`; null if the code is anything else. */
export function decodeConstantFunction(code: Uint8Array, offset: number): Shape | null {
  let at = offset;
  if (ENDBR64.every((b, i) => code[at + i] === b)) at += 4;
  if (LEA_RAX_RIP.every((b, i) => code[at + i] === b) && at + 8 <= code.length && code[at + 7] === RET) {
    const v = new DataView(code.buffer, code.byteOffset, code.byteLength);
    return { kind: 'lea', rel32At: at + 3, rel32: v.getInt32(at + 3, true), end: at + 7 };
  }
  if (code[at] === 0xb8 && at + 6 <= code.length && code[at + 5] === RET) {
    const v = new DataView(code.buffer, code.byteOffset, code.byteLength);
    return { kind: 'u32', value: v.getUint32(at + 1, true) };
  }
  if (code[at] === 0x31 && code[at + 1] === 0xc0 && code[at + 2] === RET) return { kind: 'u32', value: 0 };
  return null;
}

/**
 * What the payload function `func` (a symbol name, or an address such as a func's newAddress)
 * returns when called, or null when its code is not one of the constant shapes.
 */
export function constantReturnOf(payload: LivepatchPayload, func: string | PayloadAddress | null): ConstantReturn | null {
  let sectionIndex: number;
  let offset: bigint;
  if (func === null) return null;
  if (typeof func === 'string') {
    const sym = payload.symbolByName(func);
    if (!sym || sym.shndx >= payload.sections.length) return null;
    sectionIndex = sym.shndx;
    offset = sym.value;
  } else {
    if (func.kind !== 'payload') return null;
    sectionIndex = func.sectionIndex;
    offset = func.offset;
  }
  const section = payload.sections[sectionIndex];
  if (!section || offset >= BigInt(section.data.length)) return null;
  const shape = decodeConstantFunction(section.data, Number(offset));
  if (!shape) return null;
  if (shape.kind === 'u32') return shape;

  // The relocation that fills the displacement decides where the string is.
  const reloc = (payload.relocations.get(sectionIndex) ?? []).find(
    (r) => r.offset === BigInt(shape.rel32At) && (r.type === R_X86_64_PC32 || r.type === R_X86_64_PLT32),
  );
  let targetSection: number;
  let targetOffset: bigint;
  if (reloc) {
    const sym = payload.symbols[reloc.symbolIndex];
    if (!sym || sym.shndx === 0 || sym.shndx >= payload.sections.length) return null;
    targetSection = sym.shndx;
    targetOffset = sym.value + reloc.addend + 4n;
  } else {
    // No relocation: a displacement within the same section.
    targetSection = sectionIndex;
    targetOffset = BigInt(shape.end + shape.rel32);
  }
  const target = payload.sections[targetSection]!;
  if (targetOffset < 0n || targetOffset >= BigInt(target.data.length)) return null;
  return { kind: 'string', value: cString(target.data, Number(targetOffset)) };
}

/** Read access to a linked image's memory by virtual address. */
export interface CodeMemory {
  /** `length` bytes at `address`, or null unless they all lie in one loaded section. */
  bytesAt(address: bigint, length: number): Uint8Array | null;
  /** The NUL-terminated string at `address` (cut at its section's end), or null. */
  stringAt(address: bigint): string | null;
}

/** The same decoding for a linked image, where the displacement is already resolved. */
export function constantReturnAt(memory: CodeMemory, address: bigint): ConstantReturn | null {
  const code = memory.bytesAt(address, 12) ?? memory.bytesAt(address, 8) ?? memory.bytesAt(address, 6) ?? memory.bytesAt(address, 3);
  if (!code) return null;
  const shape = decodeConstantFunction(code, 0);
  if (!shape) return null;
  if (shape.kind === 'u32') return shape;
  const value = memory.stringAt(BigInt.asUintN(64, address + BigInt(shape.end + shape.rel32)));
  return value === null ? null : { kind: 'string', value };
}
