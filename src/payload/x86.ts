/**
 * x86-64 instruction decoding, through iced-x86 (the Rust decoder compiled to WebAssembly).
 *
 * `decodeX86(code, ip)` turns machine code into plain records — mnemonic, operands with the
 * place of their displacement and immediate fields inside the instruction (where relocations
 * apply), control flow, the general-purpose registers and memory an instruction writes, and the
 * GNU-syntax text objdump would print — and stops after the first instruction that does not fall
 * through to the next one. The return evaluator (returns.ts) works on these records only, so it
 * never touches WebAssembly objects, and this file is the only one that does.
 *
 * iced-x86 is published on npm as one build (decoder, encoder, formatter, instruction info); it
 * compiles its WebAssembly once, when this module is first imported (about 40 ms), and the
 * decoder, formatter and info factory below are created once per process. Every object the
 * WebAssembly side allocates per call is freed before returning: the npm build has no finalizers.
 *
 * No node: imports here (iced-x86 itself reads its .wasm file with Node's fs when loaded).
 */
import {
  Decoder, DecoderOptions, FlowControl, Formatter, FormatterSyntax, Instruction, InstructionInfoFactory, MemorySizeExt,
  Mnemonic, OpAccess, OpKind, Register,
} from 'iced-x86';

/** A general-purpose register as an operand: which of the 16 and which part of it. */
export interface Gpr {
  /** 0 rax, 1 rcx, 2 rdx, 3 rbx, 4 rsp, 5 rbp, 6 rsi, 7 rdi, 8..15 r8..r15. */
  readonly family: number;
  /** Bytes read or written: 8, 4 (writes zero-extend to 64 bits), 2 or 1. */
  readonly size: 1 | 2 | 4 | 8;
  /** ah, ch, dh, bh: bits 8..15. */
  readonly high: boolean;
  /** As objdump prints it, without the %: "eax", "r8d", "al". */
  readonly name: string;
}

/** Where a field (displacement or immediate) sits inside its instruction, in bytes from its start. */
export interface X86Field {
  readonly offset: number;
  readonly size: number;
}

export type X86Operand =
  | { readonly kind: 'gpr'; readonly reg: Gpr }
  /** Any other register (segment, vector, control...). */
  | { readonly kind: 'register'; readonly name: string }
  /** The value as the instruction uses it, sign-extended where the encoding says so, as a u64. */
  | { readonly kind: 'immediate'; readonly value: bigint; readonly field: X86Field | null }
  | {
      readonly kind: 'memory';
      /** 'rip': %rip-relative; `displacement` is then the target address (ip + length + disp32). */
      readonly base: Gpr | 'rip' | null;
      readonly index: Gpr | null;
      readonly scale: number;
      /** Signed displacement; for %rip-relative operands the resolved target. */
      readonly displacement: bigint;
      readonly displacementField: X86Field | null;
      /** Bytes accessed (0 for lea and nop). */
      readonly size: number;
      /** "fs" or "gs" when the operand is segment-relative (per-CPU data); null otherwise. */
      readonly segment: string | null;
    }
  /** A direct branch or call; `field` holds its rel8/rel32 (where a PLT32 relocation names the callee). */
  | { readonly kind: 'branch'; readonly target: bigint; readonly field: X86Field | null }
  | { readonly kind: 'other' };

export type X86Flow =
  | 'next' | 'return' | 'jump' | 'conditional' | 'indirect-jump' | 'call' | 'indirect-call' | 'interrupt' | 'exception' | 'transaction' | 'invalid';

export interface X86Instruction {
  /** Bytes from the start of the decoded code. */
  readonly offset: number;
  readonly length: number;
  /** Lower case, as iced-x86 names it: "mov", "lea", "endbr64", "ret". */
  readonly mnemonic: string;
  /** GNU (AT&T) syntax, as objdump -d prints it: "lea 0xe(%rip),%rax". */
  readonly text: string;
  readonly flow: X86Flow;
  readonly operands: readonly X86Operand[];
  /** General-purpose registers the instruction writes (families), and whether only conditionally. */
  readonly writes: readonly { readonly reg: Gpr; readonly conditional: boolean }[];
  /** Whether it writes memory (other than by push/call, which iced reports too). */
  readonly writesMemory: boolean;
}

const FULL = ['rax', 'rcx', 'rdx', 'rbx', 'rsp', 'rbp', 'rsi', 'rdi', 'r8', 'r9', 'r10', 'r11', 'r12', 'r13', 'r14', 'r15'];
const DWORD = ['eax', 'ecx', 'edx', 'ebx', 'esp', 'ebp', 'esi', 'edi', 'r8d', 'r9d', 'r10d', 'r11d', 'r12d', 'r13d', 'r14d', 'r15d'];
const WORD = ['ax', 'cx', 'dx', 'bx', 'sp', 'bp', 'si', 'di', 'r8w', 'r9w', 'r10w', 'r11w', 'r12w', 'r13w', 'r14w', 'r15w'];
/** objdump's names; iced calls r8b..r15b R8L..R15L. */
const BYTE = ['al', 'cl', 'dl', 'bl', 'spl', 'bpl', 'sil', 'dil', 'r8b', 'r9b', 'r10b', 'r11b', 'r12b', 'r13b', 'r14b', 'r15b'];
const HIGH = ['ah', 'ch', 'dh', 'bh'];
const NAMES = { 8: FULL, 4: DWORD, 2: WORD, 1: BYTE } as const;

/** The register of `family` with `size` bytes (not one of the high-byte ones). */
export function gpr(family: number, size: 1 | 2 | 4 | 8 = 8): Gpr {
  return { family, size, high: false, name: NAMES[size][family]! };
}

/** iced Register -> Gpr, built once from iced's own register names. */
const GPRS = new Map<number, Gpr>();
const ICED_REGISTERS = Register as unknown as Record<string, number>;
for (const size of [8, 4, 2, 1] as const) {
  NAMES[size].forEach((name, family) => {
    const id = ICED_REGISTERS[name.replace(/^(r\d+)b$/, '$1l').toUpperCase()];
    if (id !== undefined) GPRS.set(id, { family, size, high: false, name });
  });
}
HIGH.forEach((name, family) => {
  const id = ICED_REGISTERS[name.toUpperCase()];
  if (id !== undefined) GPRS.set(id, { family, size: 1, high: true, name });
});
if (GPRS.size !== 68) throw new Error(`iced-x86 register table: expected 68 general-purpose registers, found ${GPRS.size}`);

function registerName(r: Register): string {
  return String((Register as unknown as Record<number, string>)[r] ?? `r${r}`).toLowerCase();
}

const FLOW: Record<number, X86Flow> = {
  [FlowControl.Next]: 'next',
  [FlowControl.Return]: 'return',
  [FlowControl.UnconditionalBranch]: 'jump',
  [FlowControl.ConditionalBranch]: 'conditional',
  [FlowControl.IndirectBranch]: 'indirect-jump',
  [FlowControl.Call]: 'call',
  [FlowControl.IndirectCall]: 'indirect-call',
  [FlowControl.Interrupt]: 'interrupt',
  [FlowControl.Exception]: 'exception',
  [FlowControl.XbeginXabortXend]: 'transaction',
};

const WRITE_ACCESS = new Set<number>([OpAccess.Write, OpAccess.CondWrite, OpAccess.ReadWrite, OpAccess.ReadCondWrite]);
const CONDITIONAL_ACCESS = new Set<number>([OpAccess.CondWrite, OpAccess.ReadCondWrite]);

// Created once per process: the WebAssembly module is compiled once, these objects are reused.
let shared: { formatter: Formatter; info: InstructionInfoFactory; instruction: Instruction } | undefined;
function tools() {
  if (!shared) {
    const formatter = new Formatter(FormatterSyntax.Gas);
    formatter.gasShowMnemonicSizeSuffix = false;
    formatter.spaceAfterOperandSeparator = false;
    formatter.firstOperandCharIndex = 0;
    formatter.ripRelativeAddresses = true;
    formatter.showZeroDisplacements = true;
    formatter.uppercaseHex = false;
    formatter.branchLeadingZeros = false;
    formatter.smallHexNumbersInDecimal = false;
    shared = { formatter, info: new InstructionInfoFactory(), instruction: new Instruction() };
  }
  return shared;
}

export interface DecodeOptions {
  /** Address of code[0]: %rip-relative targets and branch targets are computed from it. */
  readonly ip?: bigint;
  /** Stop after this many instructions (default 256). */
  readonly maxInstructions?: number;
}

/**
 * Decodes `code` from its first byte until an instruction that does not fall through (ret, a
 * branch, a call, a trap, an invalid encoding) or the end of the bytes. Always returns at least
 * what could be decoded; an invalid encoding is the last record, with flow 'invalid'.
 */
export function decodeX86(code: Uint8Array, options: DecodeOptions = {}): X86Instruction[] {
  const { formatter, info, instruction } = tools();
  const max = options.maxInstructions ?? 256;
  const ip = options.ip ?? 0n;
  const decoder = new Decoder(64, code, DecoderOptions.None);
  const out: X86Instruction[] = [];
  try {
    decoder.ip = ip;
    while (decoder.canDecode && out.length < max) {
      const offset = decoder.position;
      decoder.decodeOut(instruction);
      const mnemonic = String((Mnemonic as unknown as Record<number, string>)[instruction.mnemonic] ?? 'invalid').toLowerCase();
      if (instruction.isInvalid) {
        out.push({ offset, length: Math.max(1, instruction.length), mnemonic: '(bad)', text: '(bad)', flow: 'invalid', operands: [], writes: [], writesMemory: false });
        break;
      }
      const record = describe(decoder, instruction, info, offset, mnemonic, formatter.format(instruction));
      out.push(record);
      if (record.flow !== 'next') break;
    }
  } finally {
    decoder.free();
  }
  return out;
}

function describe(decoder: Decoder, insn: Instruction, factory: InstructionInfoFactory, offset: number, mnemonic: string, text: string): X86Instruction {
  const offsets = decoder.getConstantOffsets(insn);
  const displacementField = offsets.hasDisplacement ? { offset: offsets.displacementOffset, size: offsets.displacementSize } : null;
  const immediateField = offsets.hasImmediate ? { offset: offsets.immediateOffset, size: offsets.immediateSize } : null;
  offsets.free();

  const operands: X86Operand[] = [];
  for (let i = 0; i < insn.opCount; i++) {
    const kind = insn.opKind(i);
    switch (kind) {
      case OpKind.Register: {
        const r = insn.opRegister(i);
        const g = GPRS.get(r);
        operands.push(g ? { kind: 'gpr', reg: g } : { kind: 'register', name: registerName(r) });
        break;
      }
      case OpKind.Immediate8:
      case OpKind.Immediate16:
      case OpKind.Immediate32:
      case OpKind.Immediate64:
      case OpKind.Immediate8to16:
      case OpKind.Immediate8to32:
      case OpKind.Immediate8to64:
      case OpKind.Immediate32to64:
        operands.push({ kind: 'immediate', value: insn.immediate(i), field: immediateField });
        break;
      case OpKind.Immediate8_2nd:
        operands.push({ kind: 'immediate', value: insn.immediate(i), field: null });
        break;
      case OpKind.NearBranch16:
      case OpKind.NearBranch32:
      case OpKind.NearBranch64:
        operands.push({ kind: 'branch', target: insn.nearBranchTarget, field: immediateField });
        break;
      case OpKind.Memory: {
        const rip = insn.isIpRelMemoryOperand;
        const base = rip ? 'rip' : insn.memoryBase === Register.None ? null : (GPRS.get(insn.memoryBase) ?? null);
        const index = insn.memoryIndex === Register.None ? null : (GPRS.get(insn.memoryIndex) ?? null);
        const seg = insn.segmentPrefix;
        const segment = seg === Register.FS ? 'fs' : seg === Register.GS ? 'gs' : null;
        const unusual = (insn.memoryBase !== Register.None && !rip && !GPRS.has(insn.memoryBase)) || (insn.memoryIndex !== Register.None && !GPRS.has(insn.memoryIndex));
        if (unusual) {
          operands.push({ kind: 'other' });
          break;
        }
        operands.push({
          kind: 'memory',
          base,
          index,
          scale: insn.memoryIndexScale,
          displacement: rip ? insn.ipRelMemoryAddress : BigInt.asIntN(64, insn.memoryDisplacement),
          displacementField,
          size: mnemonic === 'lea' ? 0 : MemorySizeExt.size(insn.memorySize),
          segment,
        });
        break;
      }
      default:
        operands.push({ kind: 'other' });
    }
  }

  const writes: { reg: Gpr; conditional: boolean }[] = [];
  let writesMemory = false;
  const facts = factory.info(insn);
  try {
    for (const used of facts.usedRegisters() as { register: Register; access: OpAccess; free(): void }[]) {
      const g = GPRS.get(used.register);
      if (g && WRITE_ACCESS.has(used.access)) writes.push({ reg: g, conditional: CONDITIONAL_ACCESS.has(used.access) });
      used.free();
    }
    for (const used of facts.usedMemory() as { access: OpAccess; free(): void }[]) {
      if (WRITE_ACCESS.has(used.access)) writesMemory = true;
      used.free();
    }
  } finally {
    facts.free();
  }

  return { offset, length: insn.length, mnemonic, text, flow: FLOW[insn.flowControl] ?? 'exception', operands, writes, writesMemory };
}
