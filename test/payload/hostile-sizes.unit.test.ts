/**
 * Payloads that claim hostile sizes (2^32 sections, a 2^63-byte symbol table, 4 GiB notes, a .bss
 * of 2^64-1 bytes, ...) are refused from the header fields alone: before anything of that size is
 * allocated, read or looped over. Each refusal is the catalogue's error, comes at once, and
 * allocates next to nothing. And what the long fuzzing (npm run fuzz, docs/reliability.md) found
 * in the payload library stays fixed.
 */
import { describe, expect, it } from 'vitest';
import { FleetpatchError, XenError } from '../../src/errors.ts';
import { factsFromChecked, hostImage } from '../../src/emulator/payload-adapter.ts';
import { MAX_NAME_BYTES } from '../../src/payload/elf.ts';
import {
  DEFAULT_IMAGE, buildPayload, checkUpload, constantReturnOf, objectFunctionResult, parsePayload, payloadObject, readElf, readImage, relocatableCode,
  withBuildId, writeElfObject, type ElfObject,
} from '../../src/payload/index.ts';
import { MAX_RESULT_BYTES } from '../../src/payload/returns.ts';
import { build, patchHeader, patchSection, putSectionData } from './craft.ts';

const U64_MAX = (1n << 64n) - 1n;

/** Runs fn, which must refuse; returns its error, how long it took and the array buffers it made. */
function measure(fn: () => unknown): { error: unknown; ms: number; allocated: number } {
  const before = process.memoryUsage().arrayBuffers;
  const t0 = performance.now();
  let error: unknown = null;
  try {
    fn();
  } catch (e) {
    error = e;
  }
  return { error, ms: performance.now() - t0, allocated: process.memoryUsage().arrayBuffers - before };
}

const base = build({ writableData: 8 });

const hostile: [string, () => Uint8Array, string][] = [
  // ELF's extended numbering: e_shnum 0 means "the count is in section 0's sh_size".
  ['2^32 sections (e_shnum 0, section 0 sh_size 2^32)', () => patchHeader(patchSection(base, 0, 'size', 1n << 32n), 'shnum', 0), 'EINVAL'],
  ['65535 sections (the most e_shnum can say)', () => patchHeader(base, 'shnum', 0xffff), 'EOPNOTSUPP'],
  ['a section table at 2^64-1', () => patchHeader(base, 'shoff', U64_MAX), 'EINVAL'],
  ['65535-byte section headers', () => patchHeader(base, 'shentsize', 0xffff), 'EINVAL'],
  ['a 2^63-byte symbol table', () => patchSection(base, '.symtab', 'size', 1n << 63n), 'EINVAL'],
  ['a symbol table of 2^32 symbols', () => patchSection(base, '.symtab', 'size', (1n << 32n) * 24n), 'EINVAL'],
  ['a string table of 2^64-1 bytes', () => patchSection(base, '.strtab', 'size', U64_MAX), 'EINVAL'],
  ['a .bss of 2^64-1 bytes', () => patchSection(base, '.bss', 'size', U64_MAX), 'EINVAL'],
  ['a 2^40-byte relocation section', () => patchSection(base, '.rela.livepatch.funcs', 'size', 1n << 40n), 'EINVAL'],
  ['relocations of 2^64-1 bytes each', () => patchSection(base, '.rela.livepatch.funcs', 'entsize', U64_MAX), 'EINVAL'],
  ['2^32 functions', () => patchSection(base, '.livepatch.funcs', 'size', (1n << 32n) * 104n), 'EINVAL'],
  ['a build-id note claiming namesz and descsz of 4 GiB', () => putSectionData(putSectionData(base, '.note.gnu.build-id', 0, 4, 0xffffffff), '.note.gnu.build-id', 4, 4, 0xffffffff), 'EINVAL'],
  ['a depends note claiming a 4 GiB build-id', () => putSectionData(base, '.livepatch.depends', 4, 4, 0xfffffff0), 'EINVAL'],
  // Allocated (the note is SHF_ALLOC): Xen would allocate it, so it is refused like a .bss.
  ['an allocated NOBITS build-id note of 2^63 bytes', () => patchSection(patchSection(base, '.note.gnu.build-id', 'type', 8), '.note.gnu.build-id', 'size', 1n << 63n), 'EINVAL'],
  ['a read-only allocated NOBITS section of 2^40 bytes', () => patchSection(patchSection(patchSection(base, '.rodata', 'type', 8), '.rodata', 'flags', 2), '.rodata', 'size', 1n << 40n), 'EINVAL'],
  // Not allocated: Xen never loads it, so its size is never used; the last byte read is a NUL.
  ['a NOBITS .modinfo of 2^63 bytes, not allocated', () => patchSection(patchSection(patchSection(base, '.modinfo', 'type', 8), '.modinfo', 'flags', 0), '.modinfo', 'size', 1n << 63n), 'accepted'],
];

describe('payloads that claim hostile sizes', () => {
  it.each(hostile)('%s: refused at once, allocating nothing of that size', (_what, make, errno) => {
    const bytes = make();
    for (const fn of [() => parsePayload(bytes), () => checkUpload({ name: 'hostile', bytes, image: DEFAULT_IMAGE })]) {
      const r = measure(fn);
      if (errno === 'accepted') expect(r.error).toBeNull();
      else {
        expect(r.error).toBeInstanceOf(XenError);
        expect((r.error as XenError).errnoName).toBe(errno);
      }
      expect(r.ms).toBeLessThan(250);
      expect(r.allocated).toBeLessThan(1024 * 1024);
    }
    // The generic reader (images, tools) refuses them too, or reads what is really there.
    const r = measure(() => readElf(bytes));
    if (r.error) expect(r.error).toBeInstanceOf(FleetpatchError);
    expect(r.allocated).toBeLessThan(1024 * 1024);
    const image = measure(() => readImage(bytes));
    expect(image.error).toBeInstanceOf(FleetpatchError);
    expect(image.allocated).toBeLessThan(1024 * 1024);
  });
});

describe('found by fuzzing', () => {
  it('an allocated read-only NOBITS section over 2 MiB is EINVAL, as in Xen (sh_flags & (SHF_WRITE | SHF_ALLOC)); 2 MiB is fine', () => {
    const ro = (size: bigint) => patchSection(patchSection(patchSection(base, '.rodata', 'type', 8), '.rodata', 'flags', 2), '.rodata', 'size', size);
    const refused = measure(() => checkUpload({ name: 'ro', bytes: ro(2n * 1024n * 1024n + 1n), image: DEFAULT_IMAGE })).error as XenError;
    expect(refused.errnoName).toBe('EINVAL');
    expect(refused.details.check).toBe('bss-size');
    expect(parsePayload(ro(2n * 1024n * 1024n)).layout.roSize).toBeGreaterThanOrEqual(2n * 1024n * 1024n);
  });

  it('relocatableCode reads an object with 200,000 relocations (it spread them into one call: RangeError)', () => {
    const o = payloadObject({ name: 'many', funcs: [{ target: 'xen_extra_version', returns: 'Hello' }] }, { image: DEFAULT_IMAGE });
    const one = o.relocations!['.text']!;
    const bytes = writeElfObject({ ...o, relocations: { ...o.relocations, '.text': Array.from({ length: 200_000 }, () => one[0]!) } });
    expect(bytes.length).toBeGreaterThan(200_000 * 24);
    const code = relocatableCode(readElf(bytes));
    const text = o.sections.findIndex((s) => s.name === '.text') + 1;
    expect(code.relocations.get(text)).toHaveLength(200_000);
    expect(objectFunctionResult(code, 'many_xen_extra_version')).toEqual({ kind: 'string', value: 'Hello' });
  });

  it('the builder writes a function returning a 600,000-character string (the same spread, in the builder: RangeError)', () => {
    const bytes = buildPayload({ name: 'long', funcs: [{ target: 'xen_extra_version', returns: 'a'.repeat(600_000) }] }, { image: DEFAULT_IMAGE });
    const checked = checkUpload({ name: 'long', bytes, image: DEFAULT_IMAGE });
    expect(checked.payload.funcs[0]!.name).toBe('xen_extra_version');
  });

});

/** `o` with its one struct livepatch_func (and its relocations) repeated `n` times. */
function repeatFuncs(o: ElfObject, n: number): Uint8Array {
  const funcs = o.sections.find((x) => x.name === '.livepatch.funcs')!;
  const data = new Uint8Array(funcs.data!.length * n);
  for (let k = 0; k < n; k++) data.set(funcs.data!, k * funcs.data!.length);
  const relas = o.relocations!['.livepatch.funcs']!;
  return withBuildId(writeElfObject({
    ...o,
    sections: o.sections.map((x) => (x === funcs ? { ...x, data } : x)),
    relocations: { ...o.relocations, '.livepatch.funcs': Array.from({ length: n }, (_, k) => relas.map((r) => ({ ...r, offset: r.offset + BigInt(k * funcs.data!.length) }))).flat() },
  }));
}

/** Heap growth (after collecting garbage, when the test runs with --expose-gc) while fn's result is alive. */
function heldBy<T>(fn: () => T): { value: T; bytes: number } {
  const gc = (globalThis as { gc?: () => void }).gc;
  gc?.();
  const before = process.memoryUsage().heapUsed;
  const value = fn();
  gc?.();
  return { value, bytes: process.memoryUsage().heapUsed - before };
}

describe('many entries pointing at one long string (found by fuzzing: a 1 MB payload held 500 MB)', () => {
  it('3,000 functions named by one 500,000-byte string: each name is its first bytes and "…"', () => {
    const o = payloadObject({ name: 'big', funcs: [{ target: 'a'.repeat(500_000), returns: 'x', oldAddress: 'ffff82d040200000', oldSize: 16 }] }, { image: DEFAULT_IMAGE });
    const bytes = repeatFuncs(o, 3000);
    const t0 = performance.now();
    const { value: p, bytes: held } = heldBy(() => parsePayload(bytes));
    expect(performance.now() - t0).toBeLessThan(2000);
    expect(p.funcs).toHaveLength(3000);
    expect(p.funcs[0]!.name).toBe(`${'a'.repeat(MAX_NAME_BYTES)}\u2026`);
    expect(held).toBeLessThan(64 * 1024 * 1024);
  });

  it('2,000 symbols named by one 400,000-byte string', () => {
    const o = payloadObject({ name: 'syms', funcs: [{ target: 'xen_extra_version', returns: 'x' }] }, { image: DEFAULT_IMAGE });
    const long = 'b'.repeat(400_000);
    const bytes = withBuildId(writeElfObject({ ...o, symbols: [...(o.symbols ?? []), ...Array.from({ length: 2000 }, () => ({ name: long, section: '.rodata', bind: 'local' as const }))] }));
    const { value: p, bytes: held } = heldBy(() => parsePayload(bytes));
    expect(p.symbols.filter((s) => s.name.startsWith('bbb'))).toHaveLength(2000);
    expect(held).toBeLessThan(64 * 1024 * 1024);
    const elf = readElf(bytes);
    expect(elf.symbols.find((s) => s.name.startsWith('bbb'))!.name).toHaveLength(MAX_NAME_BYTES + 1);
  });

  it('functions returning a string longer than 4 KiB cannot be told (each result was a copy of it)', () => {
    const o = payloadObject({ name: 'long', funcs: [{ target: 'xen_extra_version', returns: 'c'.repeat(400_000) }] }, { image: DEFAULT_IMAGE });
    const bytes = repeatFuncs(o, 1500);
    const checked = checkUpload({ name: 'long', bytes, image: DEFAULT_IMAGE });
    const { value: facts, bytes: held } = heldBy(() => factsFromChecked(checked, hostImage(DEFAULT_IMAGE)));
    expect(facts.funcs).toHaveLength(1500);
    expect(facts.funcs[0]!.result).toMatchObject({ kind: 'undefined', why: expect.stringContaining(`a string of more than ${MAX_RESULT_BYTES} bytes`) });
    expect(held).toBeLessThan(64 * 1024 * 1024);
    // At the limit, the string is read.
    const fits = payloadObject({ name: 'fits', funcs: [{ target: 'xen_extra_version', returns: 'd'.repeat(MAX_RESULT_BYTES) }] }, { image: DEFAULT_IMAGE });
    const p = parsePayload(withBuildId(writeElfObject(fits)));
    expect(constantReturnOf(p, p.funcs[0]!.newAddress)).toEqual({ kind: 'string', value: 'd'.repeat(MAX_RESULT_BYTES) });
  });
});
