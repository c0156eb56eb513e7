/**
 * Fuzz target: the payload parser, Xen's upload checks, and what the emulator decides from a
 * payload's code (iced-x86 decoding and the return-value evaluator).
 *
 * Inputs are bytes, generated five ways:
 *   - havoc: byte, field, truncate/extend/copy mutations of real payloads (gcc-built by
 *     test/fixtures/toolchain.ts, and builder-made ones with hooks, NOPs, xSplice, .bss);
 *   - structure-aware: one field of the ELF header, of a section header (offset, size, entsize,
 *     link, info, type, flags, alignment), of a note (namesz, descsz, type), of a RELA entry
 *     (offset, symbol, type, addend), of a symbol, or of a struct livepatch_func, set to a value
 *     chosen to hit a boundary (0, 1, the file's length and around it, 2^31, 2^32, 2^63, 2^64-1, ...);
 *   - object-level: a random builder spec turned into an ELF object, then sections, symbols and
 *     relocations added, duplicated (up to ~2 MiB of them) or corrupted before it is written with a
 *     consistent layout, so the lie sits deep inside an otherwise well-formed file;
 *   - random code: valid payloads whose functions are random bytes or random x86 snippets, uploaded,
 *     applied and called on an emulated host (decoding and evaluating whatever is there);
 *   - raw random bytes, with and without an ELF header in front.
 *
 * Oracles, per case:
 *   - parsePayload, checkUpload (against the built-in image and the gcc-built one), readElf +
 *     relocatableCode + objectFunctionResult, and the emulator's upload/apply/call only ever throw
 *     the catalogue's errors (XenError, FleetpatchError);
 *   - a payload the parser refuses is refused by the upload check too (Xen's upload runs the same
 *     checks and more; the one exception is documented: an xSplice payload with struct version 2);
 *   - the same bytes give the same outcome and the same sentence again, and are not modified;
 *   - no case allocates more than 64 MiB of array buffers or takes more than the per-case limit
 *     (the runner's hang oracle), whatever sizes the file claims.
 */
import { readFile } from 'node:fs/promises';
import fc from 'fast-check';
import { XenError } from '../../src/errors.ts';
import * as sm from '../../src/emulator/state-machine.ts';
import { callFunction } from '../../src/emulator/functions.ts';
import { factsFromChecked, hostImage, payloadLibraryChecker } from '../../src/emulator/payload-adapter.ts';
import { ELF_RELA_SIZE, SHT_NOBITS, SHT_NOTE, SHT_PROGBITS, SHT_REL, SHT_RELA, SHT_STRTAB, SHT_SYMTAB } from '../../src/payload/elf.ts';
import {
  DEFAULT_IMAGE, buildPayload, checkUpload, constantReturnOf, objectFunctionResult, parsePayload, payloadObject, readElf, readImage,
  relocatableCode, withBuildId, writeElfObject, type ElfObject, type ElfObjectRelocation, type ElfObjectSection,
  type ElfObjectSymbol, type HypervisorImage, type PayloadSpec,
} from '../../src/payload/index.ts';
import { buildFixtures } from '../../test/fixtures/toolchain.ts';
import { editBytes, OracleViolation, outcomeOf, timed, type FuzzTarget } from '../lib.ts';

/** The most array-buffer memory one case may allocate (the file itself is at most 2 MiB + a bit). */
export const MAX_CASE_ALLOCATION = 64 * 1024 * 1024;

export interface PayloadInput {
  readonly how: string;
  readonly bytes: Uint8Array;
}

interface Seed {
  readonly name: string;
  readonly bytes: Uint8Array;
  readonly info: SeedInfo;
}

interface SectionInfo {
  readonly index: number;
  readonly name: string;
  readonly type: number;
  readonly headerAt: number;
  readonly offset: number;
  readonly size: number;
  readonly entsize: number;
}

interface SeedInfo {
  readonly shoff: number;
  readonly shentsize: number;
  readonly sections: readonly SectionInfo[];
}

function seedInfo(bytes: Uint8Array): SeedInfo {
  const elf = readElf(bytes);
  return {
    shoff: Number(elf.header.shoff),
    shentsize: elf.header.shentsize,
    sections: elf.sections.map((s) => ({
      index: s.index,
      name: s.name,
      type: s.type,
      headerAt: Number(elf.header.shoff) + s.index * elf.header.shentsize,
      offset: Number(s.offset),
      size: Number(s.size),
      entsize: Number(s.entsize),
    })),
  };
}

// ---- values at the edges ----------------------------------------------------------------------

const EDGE_64 = [
  0n, 1n, 2n, 3n, 4n, 7n, 8n, 12n, 16n, 23n, 24n, 25n, 31n, 32n, 48n, 63n, 64n, 65n, 103n, 104n, 105n, 127n, 128n, 255n, 256n,
  0xff00n, 0xfff1n, 0xfff2n, 0xffffn, 0x10000n, 0x1fffffn, 0x200000n, 0x200001n, 0x7fffffffn, 0x80000000n, 0xfffffff0n,
  0xffffffffn, 1n << 32n, (1n << 32n) + 1n, 1n << 53n, (1n << 53n) + 1n, 1n << 62n, (1n << 63n) - 1n, 1n << 63n, (1n << 64n) - 24n, (1n << 64n) - 1n,
];
const EDGE_32 = EDGE_64.filter((v) => v <= 0xffffffffn);
const EDGE_16 = [0n, 1n, 2n, 3n, 4n, 5n, 8n, 63n, 64n, 65n, 128n, 1023n, 1024n, 0xff00n, 0xfff1n, 0xfff2n, 0xfffen, 0xffffn];

/** A value for a field: an edge, a random number, or one relative to the file (its length, a section's end). */
const fieldValue = fc.oneof(
  { weight: 5, arbitrary: fc.record({ kind: fc.constant('edge' as const), pick: fc.nat() }) },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('relative' as const), base: fc.constantFrom('fileLength', 'sectionEnd', 'sectionOffset', 'sectionSize', 'shoff'), pick: fc.nat(), delta: fc.integer({ min: -32, max: 32 }) }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('random' as const), value: fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }) }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('small' as const), value: fc.integer({ min: 0, max: 4096 }) }) },
);
type FieldValue = typeof fieldValue extends fc.Arbitrary<infer V> ? V : never;

function resolveValue(v: FieldValue, width: 1 | 2 | 4 | 8, bytes: Uint8Array, info: SeedInfo): bigint {
  const mask = (1n << BigInt(width * 8)) - 1n;
  switch (v.kind) {
    case 'edge': {
      const pool = width === 8 ? EDGE_64 : width === 4 ? EDGE_32 : EDGE_16;
      return pool[v.pick % pool.length]! & mask;
    }
    case 'random':
      return v.value & mask;
    case 'small':
      return BigInt(v.value) & mask;
    case 'relative': {
      const s = info.sections[v.pick % info.sections.length]!;
      const base = { fileLength: bytes.length, sectionEnd: s.offset + s.size, sectionOffset: s.offset, sectionSize: s.size, shoff: info.shoff }[v.base];
      return BigInt.asUintN(width * 8, BigInt(base + v.delta));
    }
  }
}

function put(bytes: Uint8Array, at: number, width: 1 | 2 | 4 | 8, value: bigint): void {
  if (at < 0 || at + width > bytes.length) return;
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (width === 1) v.setUint8(at, Number(value & 0xffn));
  else if (width === 2) v.setUint16(at, Number(value & 0xffffn), true);
  else if (width === 4) v.setUint32(at, Number(value & 0xffffffffn), true);
  else v.setBigUint64(at, BigInt.asUintN(64, value), true);
}

// ---- mutations of a seed ----------------------------------------------------------------------

const HEADER_FIELDS: readonly (readonly [number, 1 | 2 | 4 | 8])[] = [
  [4, 1], [5, 1], [6, 1], [7, 1], [8, 1], [16, 2], [18, 2], [20, 4], [32, 8], [40, 8], [52, 2], [54, 2], [56, 2], [58, 2], [60, 2], [62, 2],
];
const SHDR_FIELDS: readonly (readonly [number, 1 | 2 | 4 | 8])[] = [[0, 4], [4, 4], [8, 8], [16, 8], [24, 8], [32, 8], [40, 4], [44, 4], [48, 8], [56, 8]];
const SYM_FIELDS: readonly (readonly [number, 1 | 2 | 4 | 8])[] = [[0, 4], [4, 1], [5, 1], [6, 2], [8, 8], [16, 8]];
const RELA_FIELDS: readonly (readonly [number, 1 | 2 | 4 | 8])[] = [[0, 8], [8, 4], [12, 4], [8, 8], [16, 8]];
/** struct livepatch_func: name, new_addr, old_addr, new_size, old_size, version, opaque, expect. */
const FUNC_FIELDS: readonly (readonly [number, 1 | 2 | 4 | 8])[] = [[0, 8], [8, 8], [16, 8], [24, 4], [28, 4], [32, 1], [33, 1], [72, 1], [73, 1]];
const NOTE_FIELDS: readonly (readonly [number, 1 | 2 | 4 | 8])[] = [[0, 4], [4, 4], [8, 4], [12, 4]];

type Mutation =
  | { kind: 'byte'; at: number; value: number }
  | { kind: 'header'; field: number; value: FieldValue }
  | { kind: 'section'; section: number; field: number; value: FieldValue }
  | { kind: 'note'; pick: number; field: number; value: FieldValue }
  | { kind: 'rela'; pick: number; entry: number; field: number; value: FieldValue }
  | { kind: 'symbol'; entry: number; field: number; value: FieldValue }
  | { kind: 'func'; entry: number; field: number; value: FieldValue }
  | { kind: 'truncate'; at: number }
  | { kind: 'extend'; bytes: Uint8Array }
  | { kind: 'copy'; from: number; to: number; length: number }
  | { kind: 'code'; pick: number; code: Uint8Array };

const mutation: fc.Arbitrary<Mutation> = fc.oneof(
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('byte' as const), at: fc.nat(), value: fc.integer({ min: 0, max: 255 }) }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('header' as const), field: fc.nat(), value: fieldValue }) },
  { weight: 6, arbitrary: fc.record({ kind: fc.constant('section' as const), section: fc.nat(), field: fc.nat(), value: fieldValue }) },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('note' as const), pick: fc.nat(), field: fc.nat(), value: fieldValue }) },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('rela' as const), pick: fc.nat(), entry: fc.nat(), field: fc.nat(), value: fieldValue }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('symbol' as const), entry: fc.nat(), field: fc.nat(), value: fieldValue }) },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('func' as const), entry: fc.nat(), field: fc.nat(), value: fieldValue }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('truncate' as const), at: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('extend' as const), bytes: fc.uint8Array({ maxLength: 128 }) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('copy' as const), from: fc.nat(), to: fc.nat(), length: fc.integer({ min: 1, max: 256 }) }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('code' as const), pick: fc.nat(), code: fc.uint8Array({ maxLength: 64 }) }) },
);

function sectionsOfType(info: SeedInfo, pred: (s: SectionInfo) => boolean): SectionInfo[] {
  return info.sections.filter((s) => s.index > 0 && pred(s));
}

function mutate(seed: Seed, mutations: readonly Mutation[]): Uint8Array {
  let bytes = seed.bytes.slice();
  const info = seed.info;
  for (const m of mutations) {
    if (bytes.length === 0) break;
    switch (m.kind) {
      case 'byte':
        bytes[m.at % bytes.length] = m.value;
        break;
      case 'header': {
        const [at, w] = HEADER_FIELDS[m.field % HEADER_FIELDS.length]!;
        put(bytes, at, w, resolveValue(m.value, w, bytes, info));
        break;
      }
      case 'section': {
        const s = info.sections[m.section % info.sections.length]!;
        const [at, w] = SHDR_FIELDS[m.field % SHDR_FIELDS.length]!;
        put(bytes, s.headerAt + at, w, resolveValue(m.value, w, bytes, info));
        break;
      }
      case 'note': {
        const notes = sectionsOfType(info, (s) => s.type === SHT_NOTE || s.name.includes('depends') || s.name.includes('build-id'));
        if (notes.length === 0) break;
        const s = notes[m.pick % notes.length]!;
        const [at, w] = NOTE_FIELDS[m.field % NOTE_FIELDS.length]!;
        put(bytes, s.offset + at, w, resolveValue(m.value, w, bytes, info));
        break;
      }
      case 'rela': {
        const relas = sectionsOfType(info, (s) => s.type === SHT_RELA && s.size >= ELF_RELA_SIZE);
        if (relas.length === 0) break;
        const s = relas[m.pick % relas.length]!;
        const entry = m.entry % Math.max(1, Math.floor(s.size / ELF_RELA_SIZE));
        const [at, w] = RELA_FIELDS[m.field % RELA_FIELDS.length]!;
        put(bytes, s.offset + entry * ELF_RELA_SIZE + at, w, resolveValue(m.value, w, bytes, info));
        break;
      }
      case 'symbol': {
        const symtab = sectionsOfType(info, (s) => s.type === SHT_SYMTAB)[0];
        if (!symtab) break;
        const entry = m.entry % Math.max(1, Math.floor(symtab.size / 24));
        const [at, w] = SYM_FIELDS[m.field % SYM_FIELDS.length]!;
        put(bytes, symtab.offset + entry * 24 + at, w, resolveValue(m.value, w, bytes, info));
        break;
      }
      case 'func': {
        const funcs = sectionsOfType(info, (s) => s.name === '.livepatch.funcs' || s.name === '.xsplice.funcs')[0];
        if (!funcs) break;
        const size = funcs.name === '.xsplice.funcs' ? 64 : 104;
        const entry = m.entry % Math.max(1, Math.floor(funcs.size / size));
        const [at, w] = FUNC_FIELDS[m.field % FUNC_FIELDS.length]!;
        put(bytes, funcs.offset + entry * size + at, w, resolveValue(m.value, w, bytes, info));
        break;
      }
      case 'truncate':
      case 'extend':
      case 'copy':
        bytes = editBytes(bytes, m);
        break;
      case 'code': {
        const text = sectionsOfType(info, (s) => s.type === SHT_PROGBITS && s.name.startsWith('.text'));
        if (text.length === 0) break;
        const s = text[m.pick % text.length]!;
        if (s.offset >= bytes.length) break;
        bytes.set(m.code.subarray(0, Math.max(0, Math.min(s.size, bytes.length - s.offset))), s.offset);
        break;
      }
    }
  }
  return bytes;
}

// ---- x86 code that looks like what compilers emit, and what they do not -----------------------

const X86_SNIPPETS: readonly number[][] = [
  [0xc3], [0xf3, 0x0f, 0x1e, 0xfa], [0x48, 0x8d, 0x05, 0, 0, 0, 0], [0xb8, 42, 0, 0, 0], [0x31, 0xc0], [0xeb, 0x00], [0xeb, 0xfe],
  [0xe9, 0, 0, 0, 0], [0xe8, 0, 0, 0, 0], [0x55], [0x48, 0x89, 0xe5], [0x5d], [0xc9], [0x90], [0x0f, 0x1f, 0x44, 0, 0], [0x75, 0x02],
  [0x48, 0x8b, 0x05, 0, 0, 0, 0], [0x48, 0xb8, 1, 2, 3, 4, 5, 6, 7, 8], [0x83, 0xc0, 0x01], [0x0f, 0x0b], [0xcc], [0xf4], [0xff, 0x25, 0, 0, 0, 0],
  [0x89, 0x05, 0, 0, 0, 0], [0xff, 0xd0], [0xff, 0xe0], [0x48, 0x83, 0xec, 0x08], [0x48, 0x83, 0xc4, 0x08], [0x50], [0x58], [0x48, 0x89, 0xc7],
  [0xc2, 0x08, 0x00], [0x66, 0x90], [0x0f, 0x05], [0x48, 0x31, 0xc0], [0xe2, 0xfe], [0x74, 0xfc], [0x0f, 0x84, 0, 0, 0, 0], [0x48, 0x8d, 0x04, 0x24],
  [0x8b, 0x04, 0x25, 0, 0, 0, 0], [0x48, 0xc7, 0xc0, 0xff, 0xff, 0xff, 0xff], [0x0f, 0xb6, 0xc0], [0x66, 0xb8, 0x34, 0x12],
];

const randomCode: fc.Arbitrary<Uint8Array> = fc.oneof(
  fc.uint8Array({ minLength: 1, maxLength: 96 }),
  fc.array(fc.nat(X86_SNIPPETS.length - 1), { minLength: 1, maxLength: 24 }).map((picks) => Uint8Array.from(picks.flatMap((p) => X86_SNIPPETS[p]!))),
  fc.tuple(fc.array(fc.nat(X86_SNIPPETS.length - 1), { maxLength: 12 }), fc.uint8Array({ maxLength: 16 })).map(([picks, tail]) => Uint8Array.from([...picks.flatMap((p) => X86_SNIPPETS[p]!), ...tail])),
);

// ---- random builder specs and object-level corruption -----------------------------------------

const TARGETS = [...DEFAULT_IMAGE.symbols.values()].filter((s) => s.kind === 'function').map((s) => s.name);
const ident = fc.stringMatching(/^[a-z_][a-z0-9_]{0,20}$/);

const funcSpec = fc.record(
  {
    target: fc.oneof({ weight: 4, arbitrary: fc.constantFrom(...TARGETS) }, { weight: 1, arbitrary: ident }),
    returns: fc.oneof(fc.string({ maxLength: 40 }), fc.integer({ min: 0, max: 0xffffffff })),
    nop: fc.boolean(),
    oldAddress: fc.constantFrom('symbol', 'name', 'ffff82d040200000', '0000000000000010'),
    oldSize: fc.constantFrom(0, 1, 4, 5, 8, 31, 32, 64, 0xffffffff),
    newSize: fc.constantFrom(0, 1, 4, 5, 31, 32, 0xffffffff),
    expect: fc.oneof(fc.constant(true as const), fc.uint8Array({ minLength: 1, maxLength: 31 }).map((b) => Buffer.from(b).toString('hex'))),
    version: fc.constantFrom(0, 1, 2, 3, 255),
  },
  { requiredKeys: ['target'] },
);

const specArb: fc.Arbitrary<PayloadSpec> = fc.record(
  {
    name: fc.constant('fz'),
    format: fc.constantFrom('livepatch' as const, 'xsplice' as const),
    funcs: fc.array(funcSpec, { maxLength: 6 }),
    hooks: fc.record({ load: fc.nat(3), unload: fc.nat(3), preApply: fc.boolean(), apply: fc.boolean(), postApply: fc.boolean(), preRevert: fc.boolean(), revert: fc.boolean(), postRevert: fc.boolean() }),
    modinfo: fc.array(fc.stringMatching(/^[a-z]{1,8}(=[ -~]{0,12})?$/), { maxLength: 3 }),
    writableData: fc.constantFrom(0, 0, 8, 4096, 1 << 20),
    depends: fc.constantFrom(DEFAULT_IMAGE.buildIdHex, '00', 'ab'.repeat(20), 'ff'.repeat(64)),
    xenDepends: fc.constantFrom(DEFAULT_IMAGE.buildIdHex, null, '01'.repeat(20)),
    buildId: fc.constantFrom('11'.repeat(20), '22', 'ab'.repeat(64)),
  },
  { requiredKeys: ['name', 'funcs'] },
);

type ObjectEdit =
  | { kind: 'addSection'; name: string; type: number; flags: bigint; data: Uint8Array; size: bigint; addralign: bigint; entsize: bigint; link: number; info: number }
  | { kind: 'addSymbol'; name: string; shndx: number; value: bigint; size: bigint; type: 'notype' | 'object' | 'func' | 'section' | 'file'; bind: 'local' | 'global' | 'weak' }
  | { kind: 'addRela'; section: number; offset: bigint; type: number; symbol: number; addend: bigint }
  | { kind: 'repeatRelas'; times: number }
  | { kind: 'repeatFuncs'; times: number }
  | { kind: 'code'; code: Uint8Array }
  | { kind: 'sectionField'; section: number; field: 'addralign' | 'entsize' | 'flags' | 'type'; value: bigint };

const SECTION_NAMES = [
  '.text', '.rodata', '.data', '.bss', '.livepatch.funcs', '.livepatch.depends', '.livepatch.xen_depends', '.note.gnu.build-id', '.modinfo',
  '.xsplice.funcs', '.xsplice.depends', '.livepatch.hooks.load', '.livepatch.hooks.apply', '.livepatch.hooks.preapply', '.rela.text', '.extra', '',
];

const objectEdit: fc.Arbitrary<ObjectEdit> = fc.oneof(
  fc.record({
    kind: fc.constant('addSection' as const),
    name: fc.constantFrom(...SECTION_NAMES),
    type: fc.constantFrom(SHT_PROGBITS, SHT_NOBITS, SHT_NOTE, SHT_RELA, SHT_REL, SHT_SYMTAB, SHT_STRTAB, 0, 0x6ffffff6),
    flags: fc.constantFrom(0n, 2n, 3n, 6n, 7n, 0x32n, (1n << 64n) - 1n),
    data: fc.uint8Array({ maxLength: 200 }),
    size: fc.constantFrom(...EDGE_64),
    // The writer pads to the alignment: huge ones are tried in place by the 'section' mutation.
    addralign: fc.constantFrom(0n, 1n, 3n, 8n, 4096n),
    entsize: fc.constantFrom(0n, 1n, 8n, 24n, 32n, 104n, (1n << 64n) - 1n),
    link: fc.nat(40),
    info: fc.nat(40),
  }),
  fc.record({
    kind: fc.constant('addSymbol' as const),
    name: fc.oneof(fc.constantFrom(...TARGETS), ident),
    shndx: fc.constantFrom(0, 1, 2, 3, 5, 8, 40, 0xff00, 0xfff1, 0xfff2, 0xffff),
    value: fc.constantFrom(...EDGE_64),
    size: fc.constantFrom(...EDGE_64),
    type: fc.constantFrom('notype' as const, 'object' as const, 'func' as const, 'section' as const, 'file' as const),
    bind: fc.constantFrom('local' as const, 'global' as const, 'weak' as const),
  }),
  fc.record({
    kind: fc.constant('addRela' as const),
    section: fc.nat(),
    offset: fc.constantFrom(...EDGE_64),
    type: fc.constantFrom(0, 1, 2, 4, 8, 9, 10, 11, 24, 41, 42, 0xffffffff),
    symbol: fc.nat(64),
    addend: fc.constantFrom(0n, -4n, 4n, 1n << 31n, -(1n << 31n), (1n << 63n) - 1n, -(1n << 63n)),
  }),
  // Mostly a few copies; now and then as many as fit in 2 MiB (slow cases: kept rare).
  fc.record({ kind: fc.constant('repeatRelas' as const), times: fc.oneof({ weight: 30, arbitrary: fc.constantFrom(2, 3, 16, 100) }, { weight: 1, arbitrary: fc.constantFrom(1000, 20_000, 80_000) }) }),
  fc.record({ kind: fc.constant('repeatFuncs' as const), times: fc.oneof({ weight: 30, arbitrary: fc.constantFrom(2, 3, 16, 100) }, { weight: 1, arbitrary: fc.constantFrom(1000, 10_000, 20_000) }) }),
  fc.record({ kind: fc.constant('code' as const), code: randomCode }),
  fc.record({ kind: fc.constant('sectionField' as const), section: fc.nat(), field: fc.constantFrom('addralign' as const, 'entsize' as const, 'flags' as const, 'type' as const), value: fc.constantFrom(...EDGE_64) }),
);

/** Up to this many bytes of relocations or funcs an edit may add (Xen's upload takes 2 MiB in all). */
const MAX_GROWTH = 2 * 1024 * 1024 - 16 * 1024;

function editObject(o: ElfObject, edits: readonly ObjectEdit[]): ElfObject {
  let sections: ElfObjectSection[] = [...o.sections];
  const symbols: ElfObjectSymbol[] = [...(o.symbols ?? [])];
  const relocations: Record<string, ElfObjectRelocation[]> = Object.fromEntries(Object.entries(o.relocations ?? {}).map(([k, v]) => [k, [...v]]));
  for (const e of edits) {
    switch (e.kind) {
      case 'addSection':
        sections.push(e.type === SHT_NOBITS ? { name: e.name, type: e.type, flags: e.flags, size: e.size, addralign: e.addralign, entsize: e.entsize, link: e.link, info: e.info } : { name: e.name, type: e.type, flags: e.flags, data: e.data, addralign: e.addralign, entsize: e.entsize, link: e.link, info: e.info });
        break;
      case 'addSymbol':
        symbols.push({ name: e.name, section: e.shndx, value: e.value, size: e.size, type: e.type, bind: e.bind });
        break;
      case 'addRela': {
        const target = sections[e.section % Math.max(1, sections.length)];
        if (!target) break;
        (relocations[target.name] ??= []).push({ offset: e.offset, type: e.type, symbol: e.symbol, addend: e.addend });
        break;
      }
      case 'repeatRelas': {
        const [name, list] = Object.entries(relocations).sort((a, b) => b[1].length - a[1].length)[0] ?? [];
        if (!name || !list || list.length === 0) break;
        const times = Math.min(e.times, Math.floor(MAX_GROWTH / (list.length * ELF_RELA_SIZE)));
        relocations[name] = Array.from({ length: times }, () => list).flat();
        break;
      }
      case 'repeatFuncs': {
        const i = sections.findIndex((s) => s.name === '.livepatch.funcs' || s.name === '.xsplice.funcs');
        const s = sections[i];
        if (!s?.data || s.data.length === 0) break;
        const relas = relocations[s.name] ?? [];
        // Bounded by the relocations too: after a repeatRelas they may be 80,000 already, and
        // 20,000 copies of those made this generator (not the parser) run out of memory.
        const times = Math.max(1, Math.min(e.times, Math.floor(MAX_GROWTH / s.data.length), Math.floor(MAX_GROWTH / ELF_RELA_SIZE / Math.max(1, relas.length))));
        const data = new Uint8Array(s.data.length * times);
        for (let k = 0; k < times; k++) data.set(s.data, k * s.data.length);
        sections[i] = { ...s, data };
        relocations[s.name] = Array.from({ length: times }, (_, k) => relas.map((r) => ({ ...r, offset: r.offset + BigInt(k * s.data!.length) }))).flat();
        break;
      }
      case 'code': {
        const i = sections.findIndex((s) => s.name === '.text');
        const s = sections[i];
        if (!s?.data) break;
        const data = s.data.slice();
        data.set(e.code.subarray(0, data.length));
        sections[i] = { ...s, data };
        break;
      }
      case 'sectionField': {
        const i = e.section % Math.max(1, sections.length);
        const s = sections[i];
        if (!s) break;
        if (e.field === 'type') sections[i] = { ...s, type: Number(e.value & 0xffffffffn) };
        else if (e.field === 'addralign' && e.value > 4096n) break;
        else sections[i] = { ...s, [e.field]: e.value };
        break;
      }
    }
  }
  // Repeats of repeats multiply: keep the relocations within what a payload can hold.
  let room = Math.floor(MAX_GROWTH / ELF_RELA_SIZE);
  for (const [k, list] of Object.entries(relocations)) {
    relocations[k] = list.slice(0, Math.max(0, room));
    room -= relocations[k]!.length;
  }
  sections = sections.map((s) => (s.type === SHT_NOBITS ? { ...s, data: undefined, size: s.size ?? BigInt(s.data?.length ?? 0) } : s));
  return { sections, symbols, relocations };
}

// ---- the target -------------------------------------------------------------------------------

let seeds: Seed[] = [];
let images: HypervisorImage[] = [DEFAULT_IMAGE];
const figures = { parsed: 0, uploaded: 0, applied: 0, called: 0, elfRead: 0, determinismChecks: 0, maxAllocatedBytes: 0, largestInput: 0 };

function fallbackPayload(): Uint8Array {
  return buildPayload({ name: 'fz', funcs: [{ target: 'xen_extra_version', returns: 'Hello' }] }, { image: DEFAULT_IMAGE });
}

function objectPayload(spec: PayloadSpec, edits: readonly ObjectEdit[]): Uint8Array {
  let o: ElfObject;
  try {
    o = payloadObject(spec, { image: DEFAULT_IMAGE });
  } catch {
    // The spec itself was refused by the builder (e.g. a NOP that returns something): simplify.
    try {
      o = payloadObject({ ...spec, funcs: (spec.funcs ?? []).map((f) => ({ target: f.target, returns: 'x' })) }, { image: DEFAULT_IMAGE });
    } catch {
      return fallbackPayload();
    }
  }
  try {
    return withBuildId(writeElfObject(editObject(o, edits)));
  } catch {
    try {
      return writeElfObject(editObject(o, edits));
    } catch {
      return withBuildId(writeElfObject(o));
    }
  }
}

function withRandomCode(spec: PayloadSpec, code: readonly Uint8Array[]): Uint8Array {
  const targets = [...new Set((spec.funcs ?? []).map((f) => f.target).filter((t) => TARGETS.includes(t)))];
  const funcs = targets.map((target, i) => ({ target, returns: i % 2 === 0 ? 'x' : 7 }));
  const base: PayloadSpec = { name: 'fz', funcs: funcs.length > 0 ? funcs : [{ target: 'xen_extra_version', returns: 'x' }] };
  const o = payloadObject(base, { image: DEFAULT_IMAGE });
  const sections = o.sections.map((s) => {
    if (s.name !== '.text' || !s.data) return s;
    // Each function gets random code in place of its own, the relocations stay where they were.
    const data = new Uint8Array(Math.max(s.data.length, 16 * code.length + 96));
    data.fill(0xcc);
    data.set(s.data);
    code.forEach((c, i) => data.set(c.subarray(0, Math.min(c.length, data.length - i * 16)), i * 16));
    return { ...s, data };
  });
  return withBuildId(writeElfObject({ ...o, sections }));
}

export const payloadTarget: FuzzTarget<PayloadInput> = {
  name: 'payload',
  extension: '.bin',

  async setup() {
    const fx = await buildFixtures();
    const fromFiles = await Promise.all(Object.entries(fx.payloads).map(async ([name, p]) => ({ name, bytes: new Uint8Array(await readFile(p.path)) })));
    const built: { name: string; bytes: Uint8Array }[] = [
      { name: 'builder-hooks', bytes: buildPayload({ name: 'fz_a', funcs: [{ target: 'xen_extra_version', returns: 'Hello' }, { target: 'xen_minor_version', nop: true }], hooks: { load: 1, apply: true }, modinfo: ['a=b'], writableData: 8 }, { image: DEFAULT_IMAGE }) },
      { name: 'builder-xsplice', bytes: buildPayload({ name: 'fz_x', format: 'xsplice', funcs: [{ target: 'xen_extra_version', returns: 'Bye' }] }, { image: DEFAULT_IMAGE }) },
      { name: 'builder-many', bytes: buildPayload({ name: 'fz_m', funcs: TARGETS.slice(0, 6).map((t, i) => ({ target: t, returns: i % 2 ? i : `s${i}`, ...(i === 2 ? { expect: true as const } : {}) })) }, { image: DEFAULT_IMAGE }) },
      { name: 'builder-name', bytes: buildPayload({ name: 'fz_n', funcs: [{ target: 'xen_extra_version', returns: 'by name', oldAddress: 'name' }] }, { image: DEFAULT_IMAGE }) },
    ];
    seeds = [...fromFiles, ...built].map((s) => ({ ...s, info: seedInfo(s.bytes) }));
    images = [DEFAULT_IMAGE, readImage(new Uint8Array(await readFile(fx.images.xen.path)), 'xen-syms')];
  },

  arbitrary() {
    const seedPick = fc.nat(seeds.length - 1);
    return fc.oneof(
      { weight: 10, arbitrary: fc.tuple(seedPick, fc.array(mutation, { minLength: 1, maxLength: 8 })).map(([s, ms]) => ({ how: `mutated ${seeds[s]!.name}`, bytes: mutate(seeds[s]!, ms) })) },
      { weight: 4, arbitrary: fc.tuple(specArb, fc.array(objectEdit, { maxLength: 5 })).map(([spec, edits]) => ({ how: `object ${edits.map((e) => e.kind).join('+') || 'plain'}`, bytes: objectPayload(spec, edits) })) },
      { weight: 3, arbitrary: fc.tuple(specArb, fc.array(randomCode, { minLength: 1, maxLength: 6 })).map(([spec, code]) => ({ how: 'random code', bytes: withRandomCode(spec, code) })) },
      {
        weight: 1,
        arbitrary: fc.tuple(fc.boolean(), fc.uint8Array({ maxLength: 4096 })).map(([header, tail]) => {
          if (!header) return { how: 'random bytes', bytes: tail };
          const bytes = new Uint8Array(64 + tail.length);
          bytes.set(seeds[0]!.bytes.subarray(0, 64));
          bytes.set(tail, 64);
          return { how: 'random bytes behind an ELF header', bytes };
        }),
      },
    );
  },

  run({ bytes }) {
    figures.largestInput = Math.max(figures.largestInput, bytes.length);
    const before = process.memoryUsage().arrayBuffers;
    const original = bytes.slice();
    let messages = '';
    const remember = (o: string, fn: () => unknown) => {
      try {
        fn();
        return o;
      } catch (e) {
        if (e instanceof XenError || (e as { code?: unknown })?.code) messages += `${(e as Error).message}\n`;
        throw e;
      }
    };

    // The parser, and what it decides about every function's code.
    const parsed = outcomeOf(() =>
      remember('parse', () => {
        const p = timed('parsePayload', () => parsePayload(bytes, { name: 'fz' }), bytes.length);
        figures.parsed++;
        timed('constantReturnOf for every function', () => {
          for (const f of p.funcs) constantReturnOf(p, f.newAddress);
        }, bytes.length);
        JSON.stringify(p.funcs, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v));
      }),
    );

    // Xen's upload against both images; an accepted one goes on an emulated host: apply, call.
    let uploaded = '';
    images.forEach((image, i) => {
      const o = outcomeOf(() =>
        remember('upload', () => {
          const checked = timed(`checkUpload on ${image.name}`, () => checkUpload({ name: 'fz', bytes, image }), bytes.length);
          timed('factsFromChecked', () => factsFromChecked(checked, hostImage(image)), bytes.length);
          figures.uploaded++;
          if (i === 0 || bytes.length < 64 * 1024) timed('upload, apply and call on an emulated host', () => emulate(bytes, image), bytes.length);
        }),
      );
      // The one documented difference: the parser takes each format's own struct version (1 for
      // xSplice), the upload check Xen 4.14+'s (2) whatever the format (docs/payloads.md).
      if (parsed !== 'accepted' && parsed !== 'refused EOPNOTSUPP func-version' && o === 'accepted') throw new OracleViolation(`the parser refuses (${parsed}) what Xen's upload check accepts on ${image.name}`);
      if (i === 0) uploaded = o;
    });

    // The generic reader and the evaluator for any relocatable object (payload inspect, codegen).
    outcomeOf(() => {
      const elf = timed('readElf', () => readElf(bytes), bytes.length);
      figures.elfRead++;
      if (elf.header.type !== 1) return;
      const code = timed('relocatableCode', () => relocatableCode(elf), bytes.length);
      timed('objectFunctionResult', () => {
        let n = 0;
        for (const s of elf.symbols) {
          if (s.type !== 2 || !s.name || ++n > 32) continue;
          objectFunctionResult(code, s.name);
        }
      }, bytes.length);
    });

    // Determinism: the same bytes, the same outcome and the same sentence; the bytes untouched.
    if (figures.parsed % 4 === 0 || bytes.length < 2048) {
      figures.determinismChecks++;
      let again = '';
      const parsedAgain = outcomeOf(() => {
        try {
          parsePayload(bytes, { name: 'fz' });
        } catch (e) {
          again += `${(e as Error).message}\n`;
          throw e;
        }
      });
      const uploadedAgain = outcomeOf(() => {
        try {
          checkUpload({ name: 'fz', bytes, image: images[0]! });
        } catch (e) {
          again += `${(e as Error).message}\n`;
          throw e;
        }
      });
      const first = messages.split('\n').filter((l, i, all) => l && all.indexOf(l) === i);
      if (parsedAgain !== parsed || uploadedAgain !== uploaded) throw new OracleViolation(`not deterministic: ${parsed} / ${uploaded}, then ${parsedAgain} / ${uploadedAgain}`);
      for (const line of again.split('\n').filter(Boolean)) if (!first.includes(line)) throw new OracleViolation(`not deterministic: a different sentence the second time: ${line}`);
    }
    if (bytes.length !== original.length || bytes.some((b, i) => b !== original[i])) throw new OracleViolation('the parser modified its input');

    const allocated = process.memoryUsage().arrayBuffers - before;
    figures.maxAllocatedBytes = Math.max(figures.maxAllocatedBytes, allocated);
    if (allocated > MAX_CASE_ALLOCATION + 8 * bytes.length) {
      throw new OracleViolation(`one ${bytes.length}-byte payload made ${allocated} bytes of array buffers`, { allocated });
    }
    return uploaded;
  },

  encode: ({ bytes }) => bytes,
  decode: (bytes) => ({ how: 'corpus', bytes }),
  figures: () => ({ ...figures }),
  async teardown() {},
};

/** Upload, apply and call every patched function on a fresh emulated host running `image`. */
function emulate(bytes: Uint8Array, image: HypervisorImage): void {
  let host = sm.createHost('fuzz-host', hostImage(image));
  let now = 0;
  const up = sm.upload(host, { name: 'fz', bytes }, { now, check: payloadLibraryChecker });
  if (!up.ok) return;
  host = up.host;
  const act = sm.action(host, { name: 'fz', cmd: 'apply' }, { now });
  host = act.host;
  now += 60_000;
  host = sm.settle(host, now);
  if (host.stack.includes('fz')) figures.applied++;
  for (const f of up.value.payload.facts.funcs) {
    const r = callFunction(host, f.target, now);
    if (r.ok) figures.called++;
  }
  sm.dump(host, now);
}
