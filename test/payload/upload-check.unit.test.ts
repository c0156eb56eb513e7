/**
 * Every upload check a crafted file can reach, with Xen's errno, and the order between them.
 * Each crafted file starts from a valid payload and breaks one thing.
 */
import { describe, expect, it } from 'vitest';
import {
  SHF_ALLOC, SHF_EXECINSTR, SHF_WRITE, SHT_PROGBITS, SHT_REL, SHT_SYMTAB, R_X86_64_PC32,
} from '../../src/payload/elf.ts';
import { MAX_PAYLOAD_SIZE, parsePayload, checkDepends, defineImage, checkUpload, readElf } from '../../src/payload/index.ts';
import {
  IMAGE, asLoaded, build, hideSection, object, patchHeader, patchRela, patchSection, patchSectionData, patchSymbol,
  putSectionData, refusal, upload, write,
} from './craft.ts';

const valid = build();

/** Expects both the upload and (unless `uploadOnly`) the parser to refuse with errno and check. */
function expectRefused(bytes: Uint8Array, errnoName: string, check: string, options: { uploadOnly?: boolean } = {}) {
  const e = refusal(() => upload(bytes));
  expect({ errno: e.errnoName, check: e.details.check }).toEqual({ errno: errnoName, check });
  expect(e.message.length).toBeGreaterThan(20);
  if (options.uploadOnly) {
    expect(() => parsePayload(bytes)).not.toThrow();
  } else {
    const p = refusal(() => parsePayload(bytes));
    expect({ errno: p.errnoName, check: p.details.check }).toEqual({ errno: errnoName, check });
  }
  return e;
}

describe('the crafted baseline', () => {
  it('is accepted by the parser and the upload', () => {
    const c = upload(valid);
    expect(c.funcs).toHaveLength(1);
    expect(c.funcs[0]!.oldAddress).toBe(IMAGE.symbols.get('xen_extra_version')!.address);
  });
});

describe('1. name and size', () => {
  it('refuses an empty name and one longer than 127 bytes; accepts 127', () => {
    expect(refusal(() => upload(valid, { name: '' }))).toMatchObject({ errnoName: 'EINVAL', details: { step: 1, check: 'name-length' } });
    expect(refusal(() => upload(valid, { name: 'a'.repeat(128) }))).toMatchObject({ errnoName: 'EINVAL', details: { check: 'name-length' } });
    expect(refusal(() => upload(valid, { name: 'é'.repeat(64) }))).toMatchObject({ errnoName: 'EINVAL', details: { check: 'name-length' } });
    expect(refusal(() => upload(valid, { name: 'a\0b' }))).toMatchObject({ errnoName: 'EINVAL', details: { check: 'name-length' } });
    expect(upload(valid, { name: 'a'.repeat(127) }).name).toHaveLength(127);
  });

  it('refuses size 0 and more than 2 MiB', () => {
    expect(refusal(() => upload(new Uint8Array(0)))).toMatchObject({ errnoName: 'EINVAL', details: { step: 1, check: 'size' } });
    const big = build({ modinfo: [`note=${'x'.repeat(MAX_PAYLOAD_SIZE)}`] });
    expect(big.length).toBeGreaterThan(MAX_PAYLOAD_SIZE);
    expect(refusal(() => upload(big))).toMatchObject({ errnoName: 'EINVAL', details: { step: 1, check: 'size' } });
    expect(parsePayload(big).modinfo[0]!.key).toBe('note');
  });

  it('checks the name before the bytes', () => {
    expect(refusal(() => upload(new Uint8Array(0), { name: '' }))).toMatchObject({ details: { check: 'name-length' } });
  });
});

describe('2. a payload with that name is loaded', () => {
  it('is EEXIST before the bytes are even read', () => {
    const garbage = new Uint8Array(10);
    const e = refusal(() => upload(garbage, { name: 'x', loaded: [{ name: 'x', buildId: 'aa' }] }));
    expect(e).toMatchObject({ errnoName: 'EEXIST', errno: 17, details: { step: 2, check: 'name-exists' } });
  });
});

describe('3. the ELF header', () => {
  it('too short or no magic: EINVAL', () => {
    expectRefused(valid.subarray(0, 63), 'EINVAL', 'header-size');
    expectRefused(patchHeader(valid, 'class', 2).fill(0x7e, 0, 1), 'EINVAL', 'magic');
  });

  it.each([
    ['version', 2],
    ['identVersion', 0],
    ['abiVersion', 1],
    ['osabi', 3],
    ['type', 2],
    ['phnum', 1],
  ] as const)('%s = %i: EOPNOTSUPP', (field, value) => {
    expectRefused(patchHeader(valid, field, value), 'EOPNOTSUPP', 'header-kind');
  });

  it('accepts OS ABI FreeBSD (9)', () => {
    expect(upload(patchHeader(valid, 'osabi', 9)).name).toBe('crafted');
  });

  it.each([
    ['machine', 3],
    ['class', 1],
    ['data', 2],
  ] as const)('%s = %i: EOPNOTSUPP (not x86-64 ELF64 LE)', (field, value) => {
    expectRefused(patchHeader(valid, field, value), 'EOPNOTSUPP', 'machine');
  });

  it('section table checks', () => {
    const shnum = new DataView(valid.buffer).getUint16(60, true);
    expectRefused(patchHeader(valid, 'shstrndx', 0), 'EINVAL', 'shstrndx');
    expectRefused(patchHeader(valid, 'shnum', 1024), 'EOPNOTSUPP', 'shnum');
    expectRefused(patchHeader(valid, 'shstrndx', shnum), 'EINVAL', 'shstrndx');
    expectRefused(patchHeader(valid, 'shoff', valid.length), 'EINVAL', 'shoff');
    expectRefused(patchHeader(valid, 'shentsize', 63), 'EINVAL', 'shentsize');
    expectRefused(patchHeader(valid, 'shnum', shnum + 1), 'EINVAL', 'section-table');
  });

  it("in Xen's order: the machine before the section names, 1024 sections before a bad e_shstrndx", () => {
    expectRefused(patchHeader(patchHeader(valid, 'shstrndx', 0), 'machine', 3), 'EOPNOTSUPP', 'machine');
    expectRefused(patchHeader(patchHeader(valid, 'shstrndx', 2000), 'shnum', 1500), 'EOPNOTSUPP', 'shnum');
    expectRefused(patchHeader(patchHeader(valid, 'version', 0), 'shoff', 1n << 40n), 'EOPNOTSUPP', 'header-kind');
  });
});

describe('4. sections, string tables, symbols, relocations', () => {
  it('section data at the header or beyond the file: EINVAL; NOBITS may point anywhere', () => {
    expectRefused(patchSection(valid, '.text', 'offset', 10), 'EINVAL', 'section-data');
    expectRefused(patchSection(valid, '.rodata', 'size', valid.length), 'EINVAL', 'section-data');
    expectRefused(patchSection(valid, '.modinfo', 'offset', BigInt(valid.length) + 1n), 'EINVAL', 'section-data');
    const withBss = build({ writableData: 16 });
    expect(upload(patchSection(withBss, '.bss', 'offset', 1n << 40n)).payload.hasWritableData).toBe(true);
  });

  it('alignment not a power of two: EOPNOTSUPP; 0 and powers of two are fine', () => {
    expectRefused(patchSection(valid, '.rodata', 'addralign', 3), 'EOPNOTSUPP', 'section-align');
    expect(upload(patchSection(valid, '.rodata', 'addralign', 0)).name).toBe('crafted');
    expect(upload(patchSection(valid, '.rodata', 'addralign', 64)).name).toBe('crafted');
  });

  it('two symbol tables: EOPNOTSUPP; none: EINVAL; link past the sections: EINVAL', () => {
    const o = object();
    o.sections.push({ name: '.symtab2', type: SHT_SYMTAB, data: new Uint8Array(48), entsize: 24n, addralign: 8n, link: '.strtab' });
    expectRefused(write(o), 'EOPNOTSUPP', 'symtab-multiple');
    expectRefused(patchSection(valid, '.symtab', 'type', SHT_PROGBITS), 'EINVAL', 'symtab-missing');
    expectRefused(patchSection(valid, '.symtab', 'link', 500), 'EINVAL', 'symtab-link');
  });

  it('a corrupt symbol table header: EINVAL', () => {
    expectRefused(patchSection(valid, '.symtab', 'entsize', 0), 'EINVAL', 'symtab-corrupt');
    expectRefused(patchSection(valid, '.symtab', 'entsize', 16), 'EINVAL', 'symtab-corrupt');
    expectRefused(patchSection(valid, '.symtab', 'size', 25), 'EINVAL', 'symtab-corrupt');
    expectRefused(patchSection(valid, '.symtab', 'size', 0), 'EINVAL', 'symtab-corrupt');
  });

  it('string tables not NUL-first and NUL-last, or names out of range: EINVAL', () => {
    expectRefused(patchSectionData(valid, '.strtab', 0, [0x41]), 'EINVAL', 'strtab');
    expectRefused(patchSection(valid, '.symtab', 'link', 0), 'EINVAL', 'strtab');
    expectRefused(patchSection(valid, '.symtab', 'link', 1), 'EINVAL', 'strtab');
    const shstrtabSize = Number(new DataView(valid.buffer).getBigUint64(sectionHeader(valid, '.shstrtab') + 32, true));
    expectRefused(patchSectionData(valid, '.shstrtab', shstrtabSize - 1, [0x41]), 'EINVAL', 'shstrtab');
    expectRefused(patchSection(valid, '.text', 'name', 100_000), 'EINVAL', 'section-name');
    expectRefused(patchSymbol(valid, 'crafted_xen_extra_version', 'name', 100_000), 'EINVAL', 'symbol-name');
  });

  it('a common symbol: EINVAL', () => {
    const o = object();
    o.symbols.push({ name: 'shared_counter', bind: 'global', type: 'object', section: 'COMMON', value: 4n, size: 4n });
    expectRefused(write(o), 'EINVAL', 'symbol-common');
  });

  it('an undefined symbol nobody defines: ENOENT at upload; a loaded payload may define it', () => {
    const bytes = build({ funcs: [{ target: 'xen_secret_function', oldSize: 16, returns: 'x' }] });
    expectRefused(bytes, 'ENOENT', 'symbol-unknown', { uploadOnly: true });
    expect(parsePayload(bytes).undefinedSymbols).toEqual(['xen_secret_function']);
    const provider = { name: 'provider', buildId: 'ab'.repeat(20), symbols: [{ name: 'xen_secret_function', address: IMAGE.payloadBase + 0x10n, size: 16n }], loadAddress: IMAGE.payloadBase, pages: 1n };
    const c = upload(bytes, { loaded: [provider] });
    expect(c.funcs[0]).toMatchObject({ oldAddress: IMAGE.payloadBase + 0x10n, oldFrom: 'provider' });
    expect(c.loadAddress).toBe(IMAGE.payloadBase + 4096n);
  });

  it('a symbol in a reserved or missing section: EOPNOTSUPP / EINVAL', () => {
    expectRefused(patchSymbol(valid, 'crafted_xen_extra_version', 'shndx', 0xff00), 'EOPNOTSUPP', 'symbol-section');
    expectRefused(patchSymbol(valid, 'crafted_xen_extra_version', 'shndx', 200), 'EINVAL', 'symbol-section');
  });

  it('a section both writable and executable: EOPNOTSUPP (unless it is empty)', () => {
    expectRefused(patchSection(valid, '.text', 'flags', SHF_ALLOC | SHF_EXECINSTR | SHF_WRITE), 'EOPNOTSUPP', 'section-wx');
    const o = object();
    o.sections.push({ name: '.wx', type: SHT_PROGBITS, flags: SHF_ALLOC | SHF_EXECINSTR | SHF_WRITE, data: new Uint8Array(0) });
    expect(upload(write(o)).name).toBe('crafted');
  });

  it('relocations: wrong symbol table, REL, bad entry size, symbol 0 or past the end, bad type, past the section', () => {
    expectRefused(patchSection(valid, '.rela.livepatch.funcs', 'link', 1), 'EINVAL', 'reloc-link');
    expectRefused(patchSection(valid, '.rela.livepatch.funcs', 'type', SHT_REL), 'EOPNOTSUPP', 'reloc-rel');
    expectRefused(patchSection(valid, '.rela.livepatch.funcs', 'entsize', 8), 'EINVAL', 'reloc-entsize');
    expectRefused(patchRela(valid, '.rela.livepatch.funcs', 1, 'info', 1), 'EOPNOTSUPP', 'reloc-symbol');
    expectRefused(patchRela(valid, '.rela.livepatch.funcs', 1, 'info', (999n << 32n) | 1n), 'EINVAL', 'reloc-symbol');
    expectRefused(patchRela(valid, '.rela.text', 0, 'info', (3n << 32n) | 10n), 'EOPNOTSUPP', 'reloc-type');
    expectRefused(patchRela(valid, '.rela.livepatch.funcs', 0, 'offset', 100), 'EINVAL', 'reloc-offset');
    expectRefused(patchRela(valid, '.rela.text', 0, 'offset', 5), 'EINVAL', 'reloc-offset');
  });

  it('a RELA section whose size is not a multiple of its entry size: EINVAL, no relocation silently dropped', () => {
    const rela = readElf(valid).sectionByName('.rela.livepatch.funcs')!;
    expect(rela.size).toBeGreaterThanOrEqual(48n);
    // entsize 32, size 48: one whole entry and half of another (the case).
    const e = expectRefused(patchSection(patchSection(valid, '.rela.livepatch.funcs', 'entsize', 32), '.rela.livepatch.funcs', 'size', 48), 'EINVAL', 'reloc-entsize');
    expect(e.message).toMatch(/48 bytes, not a multiple of its entry size 32/);
    // A whole number of larger entries is still read (Xen steps by sh_entsize).
    expect(() => parsePayload(patchSection(valid, '.rela.livepatch.funcs', 'size', rela.size - 24n))).not.toThrow();
  });

  it('a writable NOBITS section (.bss) over 2 MiB: EINVAL, like the payload itself; 2 MiB is fine', () => {
    const withBss = build({ writableData: 16 });
    expectRefused(patchSection(withBss, '.bss', 'size', MAX_PAYLOAD_SIZE + 1), 'EINVAL', 'bss-size');
    expect(upload(patchSection(withBss, '.bss', 'size', MAX_PAYLOAD_SIZE)).payload.hasWritableData).toBe(true);
  });

  it('relocations of sections Xen does not load are not looked at', () => {
    const o = object();
    o.sections.push({ name: '.comment', type: SHT_PROGBITS, data: new TextEncoder().encode('GCC\0') });
    o.relocations['.comment'] = [{ offset: 1000n, type: 42, symbol: 'section:.rodata' }];
    expect(upload(write(o)).name).toBe('crafted');
  });

  it('a PC32 relocation that cannot reach its target: EOVERFLOW at upload', () => {
    const o = object();
    o.relocations['.text'] = [{ offset: 3n, type: R_X86_64_PC32, symbol: 'xen_extra_version', addend: -4n }];
    const bytes = write(o);
    const e = refusal(() => upload(bytes, { loadAddress: 0x10000n }));
    expect(e).toMatchObject({ errnoName: 'EOVERFLOW', errno: 75, details: { step: 4, check: 'reloc-overflow' } });
    expect(upload(bytes).name).toBe('crafted');
  });
});

describe('5. .livepatch.xen_depends', () => {
  it('missing: EINVAL at upload (the parser reports null)', () => {
    const bytes = build({ xenDepends: null });
    expectRefused(bytes, 'EINVAL', 'xen-depends-missing', { uploadOnly: true });
    expect(parsePayload(bytes).xenDepends).toBeNull();
  });

  it('empty or not a build-id note: EINVAL, with the note check behind it', () => {
    expectRefused(patchSection(valid, '.livepatch.xen_depends', 'size', 0), 'EINVAL', 'xen-depends-empty');
    const e = expectRefused(putSectionData(valid, '.livepatch.xen_depends', 8, 4, 1), 'EINVAL', 'xen-depends-note');
    expect(e.details).toMatchObject({ noteErrno: 'ENODATA', noteCheck: 2 });
  });

  it('built for another hypervisor: EINVAL build-id mismatch', () => {
    const e = expectRefused(build({ xenDepends: 'ab'.repeat(20) }), 'EINVAL', 'xen-depends-mismatch', { uploadOnly: true });
    expect(e.message).toContain(`build-id mismatch: built for hypervisor ${'ab'.repeat(20)}, but this hypervisor is ${IMAGE.buildIdHex}`);
  });

  it('comes before the depends and build-id checks', () => {
    const both = hideSection(build({ xenDepends: 'ab'.repeat(20) }), '.livepatch.depends');
    expect(refusal(() => upload(both)).details.check).toBe('xen-depends-mismatch');
    expect(refusal(() => parsePayload(both)).details.check).toBe('depends-missing');
  });
});

describe('6. depends, build-id, something to patch', () => {
  it('.livepatch.depends missing or empty: EINVAL', () => {
    expectRefused(hideSection(valid, '.livepatch.depends'), 'EINVAL', 'depends-missing');
    expectRefused(patchSection(valid, '.livepatch.depends', 'size', 0), 'EINVAL', 'depends-empty');
  });

  it('.note.gnu.build-id missing or empty: EINVAL', () => {
    expectRefused(hideSection(valid, '.note.gnu.build-id'), 'EINVAL', 'build-id-missing');
    expectRefused(patchSection(valid, '.note.gnu.build-id', 'size', 0), 'EINVAL', 'build-id-empty');
  });

  it('malformed notes: EINVAL (the note errno kept as a fact)', () => {
    const e = expectRefused(putSectionData(valid, '.note.gnu.build-id', 0, 4, 3), 'EINVAL', 'build-id-note');
    expect(e.details).toMatchObject({ noteErrno: 'EINVAL', noteCheck: 4 });
    const d = expectRefused(patchSectionData(valid, '.livepatch.depends', 12, [0x58]), 'EINVAL', 'depends-note');
    expect(d.details).toMatchObject({ noteErrno: 'ENODATA', noteCheck: 6 });
  });

  it('an empty patching section: EINVAL; no funcs and no hooks: EINVAL', () => {
    const o = object();
    o.sections.push({ name: '.livepatch.hooks.unload', type: SHT_PROGBITS, flags: SHF_ALLOC, data: new Uint8Array(0), addralign: 8n });
    expectRefused(write(o), 'EINVAL', 'patching-section-empty');
    const hooksOnly = build({ funcs: [], hooks: { load: 1 } });
    expect(upload(hooksOnly).payload.funcs).toEqual([]);
    expectRefused(hideSection(hooksOnly, '.livepatch.hooks.load'), 'EINVAL', 'nothing-to-patch');
  });
});

describe('7. functions, hooks, modinfo', () => {
  it('funcs not a multiple of 104 bytes: EINVAL', () => {
    expectRefused(patchSection(valid, '.livepatch.funcs', 'size', 100), 'EINVAL', 'funcs-size');
  });

  it('struct version other than 2: EOPNOTSUPP', () => {
    expectRefused(build({ funcs: [{ target: 'xen_extra_version', returns: 'x', version: 1 }] }), 'EOPNOTSUPP', 'func-version');
    expectRefused(build({ funcs: [{ target: 'xen_extra_version', returns: 'x', version: 3 }] }), 'EOPNOTSUPP', 'func-version');
  });

  it('a legacy xSplice payload that had xen_depends would still be refused by Xen 4.14+: version 1', () => {
    const bytes = build({ format: 'xsplice', xenDepends: IMAGE.buildIdHex });
    expect(parsePayload(bytes).format).toBe('xsplice');
    expectRefused(bytes, 'EOPNOTSUPP', 'func-version', { uploadOnly: true });
  });

  it('old_size 0: EINVAL', () => {
    expectRefused(putSectionData(valid, '.livepatch.funcs', 28, 4, 0), 'EINVAL', 'func-old-size');
  });

  it('NOP entries: more than 31 bytes EOPNOTSUPP, more than the old function EINVAL', () => {
    expectRefused(build({ funcs: [{ target: 'xen_extra_version', nop: true, oldSize: 40, newSize: 32 }] }), 'EOPNOTSUPP', 'func-nop-size');
    expectRefused(build({ funcs: [{ target: 'xen_extra_version', nop: true, oldSize: 4, newSize: 5 }] }), 'EINVAL', 'func-nop-size');
    expect(upload(build({ funcs: [{ target: 'xen_extra_version', nop: true, oldSize: 4, newSize: 4 }] })).funcs[0]!.newAddress).toBe(0n);
  });

  it('a replacement into fewer than 5 bytes: EINVAL', () => {
    expectRefused(build({ funcs: [{ target: 'xen_extra_version', returns: 'x', oldSize: 4 }] }), 'EINVAL', 'func-old-size');
  });

  it('old_addr 0 and a name nobody has: ENOENT; a loaded payload may have it', () => {
    const bytes = build({ funcs: [{ target: 'xen_secret_function', oldAddress: 'name', oldSize: 16, returns: 'x' }] });
    expectRefused(bytes, 'ENOENT', 'func-old-unknown', { uploadOnly: true });
    const provider = { name: 'provider', buildId: 'cd'.repeat(20), symbols: [{ name: 'xen_secret_function', address: IMAGE.payloadBase + 0x40n, size: 16n }] };
    expect(upload(bytes, { loaded: [provider] }).funcs[0]).toMatchObject({ oldResolvedBy: 'name', oldFrom: 'provider', oldAddress: IMAGE.payloadBase + 0x40n });
  });

  it('old and new more than 2 GiB apart: EOVERFLOW; exactly 2 GiB is allowed', () => {
    const at = (old: bigint) => build({ funcs: [{ target: 'xen_extra_version', returns: 'x', oldAddress: `0x${old.toString(16)}`, oldSize: 8 }] });
    const newAddress = IMAGE.payloadBase; // .text is the first region of the first payload
    expect(upload(at(newAddress + (1n << 31n))).funcs[0]!.newAddress).toBe(newAddress);
    expectRefused(at(newAddress + (1n << 31n) + 1n), 'EOVERFLOW', 'func-distance', { uploadOnly: true });
    expectRefused(at(0x1000n), 'EOVERFLOW', 'func-distance', { uploadOnly: true });
  });

  it('hook sections of the wrong size: EINVAL', () => {
    const single = object();
    single.sections.push({ name: '.livepatch.hooks.apply', type: SHT_PROGBITS, flags: SHF_ALLOC, data: new Uint8Array(16), addralign: 8n });
    expectRefused(write(single), 'EINVAL', 'hook-size');
    const multi = object();
    multi.sections.push({ name: '.livepatch.hooks.load', type: SHT_PROGBITS, flags: SHF_ALLOC, data: new Uint8Array(12), addralign: 4n });
    expectRefused(write(multi), 'EINVAL', 'hook-size');
  });

  it('.modinfo not ending with NUL: EINVAL', () => {
    const s = parsePayload(valid).sectionByName('.modinfo')!;
    expectRefused(patchSectionData(valid, '.modinfo', s.data.length - 1, [0x41]), 'EINVAL', 'modinfo');
  });
});

describe('8. duplicates', () => {
  it('the same build-id as a loaded payload: EEXIST', () => {
    const a = build({ buildId: 'ee'.repeat(20) });
    const b = build({ buildId: 'ee'.repeat(20), funcs: [{ target: 'xen_extra_version', returns: 'other' }] });
    const e = refusal(() => upload(b, { name: 'b', loaded: [asLoaded(upload(a, { name: 'a' }))] }));
    expect(e).toMatchObject({ errnoName: 'EEXIST', details: { step: 8, check: 'build-id-loaded', loadedAs: 'a' } });
  });

  it('a new symbol the hypervisor already has: EEXIST', () => {
    const o = object();
    o.symbols.push({ name: 'xen_major_version', bind: 'local', type: 'object', section: '.rodata', value: 0n, size: 1n });
    const e = refusal(() => upload(write(o)));
    expect(e).toMatchObject({ errnoName: 'EEXIST', details: { check: 'symbol-exists', symbol: 'xen_major_version', definedBy: 'hypervisor' } });
  });

  it('a new symbol a loaded payload added: EEXIST; the replacement function itself is not new', () => {
    const a = upload(build(), { name: 'a' });
    expect(a.symbols.find((s) => s.name === 'crafted_xen_extra_version')!.isNew).toBe(false);
    expect(a.exportedSymbols.map((s) => s.name)).toContain('livepatch_crafted_0');
    const b = build({ funcs: [{ target: 'xen_extra_version', returns: 'Bye' }] });
    const e = refusal(() => upload(b, { name: 'b', loaded: [asLoaded(a)] }));
    expect(e).toMatchObject({ errnoName: 'EEXIST', details: { check: 'symbol-exists', symbol: 'livepatch_crafted_0', definedBy: 'a' } });
    expect(upload(build({ name: 'other', funcs: [{ target: 'xen_extra_version', returns: 'Bye' }] }), { name: 'b', loaded: [asLoaded(a)] }).loadAddress)
      .toBe(a.loadAddress + a.pages * 4096n);
  });
});

describe('the APPLY dependency sentence', () => {
  it('names both build-ids and the top of the stack', () => {
    const e = refusal(() => checkDepends({ name: 'xen_bye_world', depends: '56b2' + '00'.repeat(18) }, { kind: 'payload', name: 'xen_hello_world', buildId: 'fc36' + '11'.repeat(18) }));
    expect(e.describe()).toBe('EINVAL (22): xen_bye_world: check against xen_hello_world build-id failed: it depends on build-id 56b2…, but the top of the stack is xen_hello_world (fc36…)');
    expect(e.details).toMatchObject({ expected: '56b2' + '00'.repeat(18), actual: 'fc36' + '11'.repeat(18) });
    const h = refusal(() => checkDepends({ name: 'p', depends: 'aa' }, { kind: 'hypervisor', buildId: 'bb' }));
    expect(h.message).toContain('check against hypervisor build-id failed');
    expect(() => checkDepends({ name: 'p', depends: 'aabb' }, { kind: 'hypervisor', buildId: 'AABB' })).not.toThrow();
  });
});

describe('images', () => {
  it('declared images put payloads near their text so jumps reach', () => {
    const far = defineImage({ name: 'far', buildId: '01'.repeat(20), textBase: 0xffffffff80000000n, functions: [{ name: 'xen_extra_version', returns: { kind: 'string', value: '-far' } }] });
    const bytes = build({ xenDepends: far.buildIdHex, depends: far.buildIdHex });
    const c = checkUpload({ name: 'p', bytes, image: far });
    expect(c.loadAddress).toBe(far.payloadBase);
    expect(far.returns.get('xen_extra_version')).toEqual({ kind: 'string', value: '-far' });
  });
});

function sectionHeader(bytes: Uint8Array, name: string): number {
  const dv = new DataView(bytes.buffer);
  const shoff = Number(dv.getBigUint64(40, true));
  const shnum = dv.getUint16(60, true);
  const shstrndx = dv.getUint16(62, true);
  const strOff = Number(dv.getBigUint64(shoff + shstrndx * 64 + 24, true));
  for (let i = 0; i < shnum; i++) {
    const at = shoff + i * 64;
    let n = strOff + dv.getUint32(at, true);
    let s = '';
    while (bytes[n] !== 0) s += String.fromCharCode(bytes[n++]!);
    if (s === name) return at;
  }
  throw new Error(`no section ${name}`);
}


describe('NOBITS where Xen expects contents', () => {
  it('a NOBITS .livepatch.funcs is zeros in memory: struct version 0, EOPNOTSUPP', () => {
    const o = object({ funcs: [], hooks: { load: 1 } });
    o.sections.push({ name: '.livepatch.funcs', type: 8 /* SHT_NOBITS */, flags: 3n, size: 104n, addralign: 8n });
    const e = refusal(() => upload(write(o)));
    expect(e).toMatchObject({ errnoName: 'EOPNOTSUPP', details: { check: 'func-version', version: 0 } });
  });

  it('a NOBITS build-id note is zeros: type 0, so EINVAL with ENODATA behind it', () => {
    const e = refusal(() => upload(patchSection(valid, '.note.gnu.build-id', 'type', 8)));
    expect(e).toMatchObject({ errnoName: 'EINVAL', details: { check: 'build-id-note', noteErrno: 'ENODATA' } });
  });
});
