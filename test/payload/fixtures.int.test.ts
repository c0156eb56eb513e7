/**
 * Real payloads built by gcc/ld/objcopy the way xen/test/livepatch builds them: every field
 * fleetpatch parses must equal what readelf and nm report.
 */
import { readFile } from 'node:fs/promises';
import { beforeAll, describe, expect, it } from 'vitest';
import { XenError } from '../../src/errors.ts';
import {
  checkUpload, constantReturnOf, parsePayload, readImage, type CheckedPayload, type HypervisorImage,
  type LivepatchPayload, type LoadedPayload,
} from '../../src/payload/index.ts';
import { SHT_NOBITS, SHT_NOTE, SHT_PROGBITS, SHT_RELA, SHT_STRTAB, SHT_SYMTAB, STT_FILE, STT_SECTION, SHN_UNDEF, SHN_ABS } from '../../src/payload/elf.ts';
import { buildFixtures, type Fixtures, type PayloadFixture } from '../fixtures/toolchain.ts';
import { nmSymbols, noteDescriptorHex, readelfBuildId, readelfHexDump, readelfRelocations, readelfSections } from './binutils.ts';

let fx: Fixtures;
let image: HypervisorImage;
let other: HypervisorImage;
const parsed = new Map<string, LivepatchPayload>();
const bytesOf = new Map<string, Uint8Array>();

beforeAll(async () => {
  fx = await buildFixtures();
  image = readImage(new Uint8Array(await readFile(fx.images.xen.path)), 'xen-syms');
  other = readImage(new Uint8Array(await readFile(fx.images.other.path)), 'xen-syms-other');
  for (const p of Object.values(fx.payloads)) {
    const bytes = new Uint8Array(await readFile(p.path));
    bytesOf.set(p.name, bytes);
    parsed.set(p.name, parsePayload(bytes, { name: p.name }));
  }
});

const TYPE_NAMES: Record<number, string> = { [SHT_PROGBITS]: 'PROGBITS', [SHT_SYMTAB]: 'SYMTAB', [SHT_STRTAB]: 'STRTAB', [SHT_RELA]: 'RELA', [SHT_NOTE]: 'NOTE', [SHT_NOBITS]: 'NOBITS' };
const payloadNames = ['xen_hello_world', 'xen_bye_world', 'xen_replace_world', 'xen_nop', 'xen_no_xen_buildid', 'xen_hello_world_other', 'xsplice_hello_world'];
const fixture = (name: string): PayloadFixture => Object.values(fx.payloads).find((p) => p.name === name)!;

describe('every fixture payload reads as binutils reads it', () => {
  it('builds the seven fixtures of the issue', () => {
    expect(Object.values(fx.payloads).map((p) => p.name).sort()).toEqual([...payloadNames].sort());
  });

  it.each(payloadNames)('%s: build-id equals readelf -n', async (name) => {
    expect(parsed.get(name)!.buildIdHex).toBe(await readelfBuildId(fixture(name).path));
  });

  it.each(payloadNames)('%s: depends and xen_depends equal the notes readelf -x dumps', async (name) => {
    const p = parsed.get(name)!;
    const dependsSection = p.format === 'xsplice' ? '.xsplice.depends' : '.livepatch.depends';
    expect(p.dependsHex).toBe(noteDescriptorHex(await readelfHexDump(fixture(name).path, dependsSection)));
    if (name === 'xen_no_xen_buildid' || name === 'xsplice_hello_world') {
      expect(p.xenDepends).toBeNull();
      expect(p.xenDependsHex).toBeNull();
    } else {
      expect(p.xenDependsHex).toBe(noteDescriptorHex(await readelfHexDump(fixture(name).path, '.livepatch.xen_depends')));
    }
  });

  it.each(payloadNames)('%s: the section table equals readelf -S', async (name) => {
    const p = parsed.get(name)!;
    const theirs = await readelfSections(fixture(name).path);
    expect(p.sections.length - 1).toBe(theirs.length);
    for (const s of theirs) {
      const ours = p.sections[s.index]!;
      expect({ name: ours.name, type: TYPE_NAMES[ours.type], offset: ours.offset, size: ours.size, entsize: ours.entsize, link: ours.link, info: ours.info, align: ours.addralign })
        .toEqual({ name: s.name, type: s.type, offset: s.offset, size: s.size, entsize: s.entsize, link: s.link, info: s.info, align: s.align });
      expect(ours.alloc).toBe(s.flags.includes('A'));
      expect(ours.write).toBe(s.flags.includes('W'));
      expect(ours.exec).toBe(s.flags.includes('X'));
    }
  });

  it.each(payloadNames)('%s: symbols equal nm', async (name) => {
    const p = parsed.get(name)!;
    const theirs = await nmSymbols(fixture(name).path);
    const ours = p.symbols.filter((s) => s.index > 0 && s.type !== STT_SECTION && s.type !== STT_FILE && s.name !== '');
    const key = (n: string, v: bigint | null) => `${n}@${v === null ? 'U' : v.toString(16)}`;
    expect(ours.map((s) => key(s.name, s.shndx === SHN_UNDEF ? null : s.value)).sort()).toEqual(theirs.map((s) => key(s.name, s.value)).sort());
    for (const s of theirs.filter((t) => t.size !== null)) expect(p.symbolByName(s.name)?.size).toBe(s.size);
    expect([...p.undefinedSymbols].sort()).toEqual(theirs.filter((s) => s.type === 'U').map((s) => s.name).sort());
  });

  it.each(payloadNames)('%s: relocations equal readelf -r', async (name) => {
    const p = parsed.get(name)!;
    const theirs = await readelfRelocations(fixture(name).path);
    const ours = [...p.relocations.values()].flat().map((r) => ({
      section: p.sections[r.relocationSection]!.name, offset: r.offset, type: r.typeName, symbol: r.symbol, addend: r.addend,
    }));
    expect(ours).toEqual(theirs);
  });
});

describe('the functions, resolved through the relocations', () => {
  it('xen_hello_world patches xen_extra_version with xen_hello_world, sized as nm -S says', async () => {
    const p = parsed.get('xen_hello_world')!;
    const nmPayload = await nmSymbols(fx.payloads.helloWorld.path);
    const nmImage = await nmSymbols(fx.images.xen.path);
    expect(p.format).toBe('livepatch');
    expect(p.funcsSection).toBe('.livepatch.funcs');
    expect(p.funcs).toHaveLength(1);
    const f = p.funcs[0]!;
    expect(f).toMatchObject({ version: 2, name: 'xen_extra_version', newSymbol: 'xen_hello_world', oldSymbol: 'xen_extra_version', nop: false });
    expect(BigInt(f.newSize)).toBe(nmPayload.find((s) => s.name === 'xen_hello_world')!.size);
    expect(BigInt(f.oldSize)).toBe(nmImage.find((s) => s.name === 'xen_extra_version')!.size);
    expect(f.oldAddress).toEqual({ kind: 'external', symbol: 'xen_extra_version', addend: 0n });
    expect(f.expect).toMatchObject({ enabled: false, len: 0, rsv: 0 });
    expect(constantReturnOf(p, f.newAddress)).toEqual({ kind: 'string', value: 'Hello World' });
    expect(constantReturnOf(p, 'xen_hello_world')).toEqual({ kind: 'string', value: 'Hello World' });
  });

  it('xen_hello_world has load/unload hooks, .bss (cannot be re-applied) and LIVEPATCH_RULEZ', () => {
    const p = parsed.get('xen_hello_world')!;
    expect(p.hooks.load).toHaveLength(1);
    expect(p.hooks.unload).toHaveLength(1);
    expect(p.hooks.load[0]).toMatchObject({ kind: 'payload', section: '.text', symbol: 'apply_hook' });
    expect(p.hooks.unload[0]).toMatchObject({ kind: 'payload', section: '.text', symbol: 'revert_hook' });
    expect(p.hooks.apply).toBeNull();
    expect(p.writableSections).toContain('.bss');
    expect(p.hasWritableData).toBe(true);
    expect(p.canReapply).toBe(false);
    expect(p.modinfo).toEqual([{ key: 'LIVEPATCH_RULEZ', value: null, raw: 'LIVEPATCH_RULEZ' }]);
  });

  it('xen_bye_world depends on xen_hello_world and returns "Bye World!"', () => {
    const bye = parsed.get('xen_bye_world')!;
    expect(bye.dependsHex).toBe(parsed.get('xen_hello_world')!.buildIdHex);
    expect(bye.xenDependsHex).toBe(fx.images.xen.buildId);
    expect(constantReturnOf(bye, bye.funcs[0]!.newAddress)).toEqual({ kind: 'string', value: 'Bye World!' });
    expect(bye.canReapply).toBe(true);
  });

  it('xen_replace_world has old_addr 0, so the name is looked up', () => {
    const p = parsed.get('xen_replace_world')!;
    expect(p.funcs[0]).toMatchObject({ name: 'xen_extra_version', oldAddress: null, oldSymbol: null, newSymbol: 'xen_replace_world' });
    expect(constantReturnOf(p, p.funcs[0]!.newAddress)).toEqual({ kind: 'string', value: 'Hello Again World!' });
    expect(p.dependsHex).toBe(fx.images.xen.buildId);
  });

  it('xen_nop NOPs all of xen_minor_version but its ret, at the address nm reports', async () => {
    const p = parsed.get('xen_nop')!;
    const minor = (await nmSymbols(fx.images.xen.path)).find((s) => s.name === 'xen_minor_version')!;
    expect(p.funcs[0]).toMatchObject({ nop: true, newAddress: null, name: null, oldAddress: { kind: 'absolute', value: minor.value } });
    expect(BigInt(p.funcs[0]!.oldSize)).toBe(minor.size);
    expect(p.funcs[0]!.newSize).toBe(p.funcs[0]!.oldSize - 1);
    // Its only writable section is .livepatch.funcs: Xen lets it be re-applied.
    expect(p.writableSections).toEqual(['.livepatch.funcs']);
    expect(p.canReapply).toBe(true);
    expect(p.relocations.size).toBe(0);
  });

  it('xen_no_xen_buildid parses (inspect shows it) but has no xen_depends', () => {
    expect(parsed.get('xen_no_xen_buildid')!.xenDepends).toBeNull();
  });

  it('the legacy xSplice payload: .xsplice.funcs, struct version 1, .xsplice.depends', () => {
    const p = parsed.get('xsplice_hello_world')!;
    expect(p.format).toBe('xsplice');
    expect(p.funcsSection).toBe('.xsplice.funcs');
    expect(p.funcs[0]).toMatchObject({ version: 1, name: 'xen_extra_version', newSymbol: 'xen_hello_world', oldSymbol: 'xen_extra_version', expect: null });
    expect(p.dependsHex).toBe(fx.images.xen.buildId);
  });

  it('the payload built for the other image names that image', () => {
    const p = parsed.get('xen_hello_world_other')!;
    expect(p.dependsHex).toBe(fx.images.other.buildId);
    expect(p.xenDependsHex).toBe(fx.images.other.buildId);
    expect(fx.images.other.buildId).not.toBe(fx.images.xen.buildId);
  });
});

describe('hypervisor images read from linked ELF files', () => {
  it('build-id equals readelf -n and symbols equal nm', async () => {
    for (const [img, f] of [[image, fx.images.xen], [other, fx.images.other]] as const) {
      expect(img.buildIdHex).toBe(await readelfBuildId(f.path));
      expect(img.buildIdHex).toBe(f.buildId);
      const theirs = await nmSymbols(f.path);
      expect([...img.symbols.keys()].sort()).toEqual(theirs.map((s) => s.name).sort());
      for (const s of theirs) {
        expect(img.symbols.get(s.name)!.address).toBe(s.value);
        if (s.size !== null) expect(img.symbols.get(s.name)!.size).toBe(s.size);
      }
    }
  });

  it('decodes what the unpatched functions return', () => {
    expect(image.returns.get('xen_extra_version')).toEqual({ kind: 'string', value: '-unstable' });
    expect(image.returns.get('xen_minor_version')).toEqual({ kind: 'integer', value: 19 });
    expect(image.returns.get('xen_major_version')).toEqual({ kind: 'integer', value: 4 });
    expect(other.returns.get('xen_extra_version')).toEqual({ kind: 'string', value: '-rc1' });
    expect(other.returns.get('xen_minor_version')).toEqual({ kind: 'integer', value: 20 });
    // _start never returns: hlt, then a jump back to it.
    expect(image.returns.get('_start')).toEqual({ kind: 'undefined', why: `it loops forever at +0x1 (jmp 0x${image.symbols.get('_start')!.address.toString(16)})` });
    expect(image.returns.has('no_such_function')).toBe(false);
  });

  it('reads the code at a symbol (what expectations compare against)', () => {
    const minor = image.symbols.get('xen_minor_version')!;
    expect(Array.from(image.bytesAt(minor.address, 6)!)).toEqual([0xb8, 19, 0, 0, 0, 0xc3]);
    expect(image.bytesAt(0x1000n, 4)).toBeNull();
  });
});

describe("Xen's upload checks on the real payloads", () => {
  const load = (name: string, loaded: LoadedPayload[], img = image, as = name): CheckedPayload => {
    const c = checkUpload({ name: as, bytes: bytesOf.get(name)!, image: img, loaded });
    loaded.push({ name: c.name, buildId: c.payload.buildId, symbols: c.exportedSymbols, loadAddress: c.loadAddress, pages: c.pages });
    return c;
  };
  const refusal = (fn: () => unknown): XenError => {
    try {
      fn();
    } catch (e) {
      if (e instanceof XenError) return e;
      throw e;
    }
    throw new Error('expected a XenError');
  };

  it('hello, bye, replace and nop load; addresses resolve against the image', () => {
    const loaded: LoadedPayload[] = [];
    const hello = load('xen_hello_world', loaded);
    const bye = load('xen_bye_world', loaded);
    const replace = load('xen_replace_world', loaded);
    const nop = load('xen_nop', loaded);
    const extra = image.symbols.get('xen_extra_version')!.address;
    expect(hello.funcs[0]).toMatchObject({ oldAddress: extra, oldResolvedBy: 'relocation', oldFrom: 'hypervisor' });
    expect(hello.funcs[0]!.newAddress).toBe(hello.sectionAddress(hello.payload.sectionByName('.text')!.index));
    expect(bye.loadAddress).toBeGreaterThanOrEqual(hello.loadAddress + hello.pages * 4096n);
    expect(replace.funcs[0]).toMatchObject({ oldAddress: extra, oldResolvedBy: 'name' });
    expect(nop.funcs[0]).toMatchObject({ oldAddress: image.symbols.get('xen_minor_version')!.address, newAddress: 0n, oldResolvedBy: 'absolute' });
    // Xen's symbol table for hello: the replacement overrides, the rest are new symbols.
    expect(hello.symbols.find((s) => s.name === 'xen_hello_world')!.isNew).toBe(false);
    expect(hello.exportedSymbols.map((s) => s.name)).toEqual(expect.arrayContaining(['livepatch_xen_hello_world', 'apply_hook', 'cnt']));
    expect(hello.exportedSymbols.map((s) => s.name)).not.toContain('.LC0');
  });

  it('loading hello twice: EEXIST by name, EEXIST by build-id under another name', () => {
    const loaded: LoadedPayload[] = [];
    load('xen_hello_world', loaded);
    expect(refusal(() => load('xen_hello_world', loaded))).toMatchObject({ errnoName: 'EEXIST', errno: 17, details: { step: 2 } });
    const e = refusal(() => load('xen_hello_world', loaded, image, 'hello_again'));
    expect(e).toMatchObject({ errnoName: 'EEXIST', details: { step: 8, check: 'build-id-loaded', loadedAs: 'xen_hello_world' } });
  });

  it('xen_no_xen_buildid fails with EINVAL: no .livepatch.xen_depends', () => {
    const e = refusal(() => load('xen_no_xen_buildid', []));
    expect(e).toMatchObject({ errnoName: 'EINVAL', errno: 22, details: { step: 5, check: 'xen-depends-missing' } });
    expect(e.describe()).toMatch(/^EINVAL \(22\): xen_no_xen_buildid: \.livepatch\.xen_depends is missing/);
  });

  it('a payload built for another image: EINVAL build-id mismatch; it loads on its own image', () => {
    const e = refusal(() => load('xen_hello_world_other', []));
    expect(e).toMatchObject({ errnoName: 'EINVAL', details: { step: 5, check: 'xen-depends-mismatch', expected: fx.images.other.buildId, actual: fx.images.xen.buildId } });
    expect(e.message).toContain('build-id mismatch');
    expect(load('xen_hello_world_other', [], other).funcs[0]!.oldAddress).toBe(other.symbols.get('xen_extra_version')!.address);
  });

  it('the xSplice payload is refused by Xen 4.14+ (no xen_depends)', () => {
    expect(refusal(() => load('xsplice_hello_world', []))).toMatchObject({ errnoName: 'EINVAL', details: { check: 'xen-depends-missing' } });
  });
});
