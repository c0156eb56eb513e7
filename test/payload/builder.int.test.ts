/**
 * Built payloads are real ELF objects: readelf reads them without a warning, objdump decodes their
 * code, and fleetpatch's parser and Xen's upload checks accept them.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FleetpatchError } from '../../src/errors.ts';
import {
  DEFAULT_IMAGE, buildPayload, checkUpload, constantReturnOf, parsePayload, type PayloadSpec,
} from '../../src/payload/index.ts';
import { nmSymbols, readelfBuildId, readelfRelocations, readelfSections, tool } from './binutils.ts';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'fleetpatch-builder-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const SPECS: Record<string, PayloadSpec> = {
  hello: { name: 'hello', funcs: [{ target: 'xen_extra_version', returns: 'Hello World' }], modinfo: ['LIVEPATCH_RULEZ'], writableData: 4, hooks: { load: 1, unload: 1 } },
  numbers: { name: 'numbers', funcs: [{ target: 'xen_minor_version', returns: 42 }, { target: 'xen_major_version', returns: 0 }] },
  byName: { name: 'by_name', funcs: [{ target: 'xen_extra_version', oldAddress: 'name', returns: 'Hello Again World!' }], modinfo: { ticket: 'XSA-999', owner: 'kernel-team' } },
  nop: { name: 'nop', funcs: [{ target: 'xen_minor_version', nop: true }] },
  absolute: { name: 'absolute', funcs: [{ target: 'xen_minor_version', nop: true, oldAddress: `0x${DEFAULT_IMAGE.symbols.get('xen_minor_version')!.address.toString(16)}` }] },
  allHooks: { name: 'hooks', hooks: { load: 2, unload: 1, preApply: true, apply: true, postApply: true, preRevert: true, revert: true, postRevert: true } },
  expect: { name: 'expect', funcs: [{ target: 'xen_minor_version', returns: 7, expect: 'b813000000c3' }] },
  xsplice: { name: 'legacy', format: 'xsplice', funcs: [{ target: 'xen_extra_version', returns: 'Hello World' }] },
  stacked: { name: 'stacked', depends: 'ab'.repeat(20), funcs: [{ target: 'xen_extra_version', returns: 'Bye World!' }] },
};

describe.each(Object.entries(SPECS))('built payload "%s"', (label, spec) => {
  let file: string;
  let bytes: Uint8Array;
  beforeAll(async () => {
    bytes = buildPayload(spec, { image: DEFAULT_IMAGE });
    file = path.join(dir, `${label}.livepatch`);
    await writeFile(file, bytes);
  });

  it('readelf -a reads it without a warning', async () => {
    const { stdout, stderr } = await tool('readelf', ['-a', '--wide', file]);
    expect(stderr).toBe('');
    expect(stdout).not.toMatch(/warning|error|corrupt/i);
    expect(stdout).toContain('REL (Relocatable file)');
    expect(stdout).toContain('Advanced Micro Devices X86-64');
  });

  it('its build-id is the sha1 readelf -n shows, and the parser agrees with readelf and nm', async () => {
    const p = parsePayload(bytes);
    expect(p.buildIdHex).toBe(await readelfBuildId(file));
    expect(p.buildIdHex).toMatch(/^[0-9a-f]{40}$/);
    const sections = await readelfSections(file);
    expect(sections.map((s) => s.name)).toEqual(p.sections.slice(1).map((s) => s.name));
    const relocs = await readelfRelocations(file);
    expect(relocs).toHaveLength([...p.relocations.values()].flat().length);
    const nm = await nmSymbols(file);
    for (const s of nm) expect(p.symbols.some((x) => x.name === s.name)).toBe(true);
  });

  it('passes the upload checks on the image it was built for (the xSplice form is for Xen < 4.14)', () => {
    if (spec.format === 'xsplice') {
      expect(() => checkUpload({ name: label, bytes, image: DEFAULT_IMAGE })).toThrow(/xen_depends is missing/);
      return;
    }
    const c = checkUpload({ name: label, bytes, image: DEFAULT_IMAGE });
    expect(c.payload.format).toBe('livepatch');
    expect(c.funcs).toHaveLength(spec.funcs?.length ?? 0);
  });
});

describe('the xSplice build', () => {
  it('has the legacy sections and is refused by Xen 4.14+', () => {
    const bytes = buildPayload(SPECS.xsplice!, { image: DEFAULT_IMAGE });
    const p = parsePayload(bytes);
    expect(p.format).toBe('xsplice');
    expect(p.sectionByName('.xsplice.funcs')!.size).toBe(64n);
    expect(p.sectionByName('.xsplice.depends')).toBeDefined();
    expect(p.xenDepends).toBeNull();
    expect(p.funcs[0]).toMatchObject({ version: 1, expect: null });
    expect(() => checkUpload({ name: 'legacy', bytes, image: DEFAULT_IMAGE })).toThrow(/xen_depends is missing/);
  });
});

describe('what the built functions are', () => {
  it('objdump decodes lea str(%rip),%rax; ret with its PC32 relocation, and mov $imm,%eax; ret', async () => {
    const file = path.join(dir, 'code.livepatch');
    await writeFile(file, buildPayload({ name: 'code', funcs: [{ target: 'xen_extra_version', returns: 'Hi' }, { target: 'xen_minor_version', returns: 42 }] }, { image: DEFAULT_IMAGE }));
    const { stdout } = await tool('objdump', ['-dr', file]);
    expect(stdout).toMatch(/lea\s+0x0\(%rip\),%rax/);
    expect(stdout).toMatch(/R_X86_64_PC32\s+\.rodata\+0x/);
    expect(stdout).toMatch(/mov\s+\$0x2a,%eax/);
  });

  it('constantReturnOf decodes them the same way as gcc output', () => {
    const p = parsePayload(buildPayload(SPECS.hello!, { image: DEFAULT_IMAGE }));
    expect(constantReturnOf(p, p.funcs[0]!.newAddress)).toEqual({ kind: 'string', value: 'Hello World' });
    expect(constantReturnOf(p, 'hello_xen_extra_version')).toEqual({ kind: 'string', value: 'Hello World' });
    const n = parsePayload(buildPayload(SPECS.numbers!, { image: DEFAULT_IMAGE }));
    expect(n.funcs.map((f) => constantReturnOf(n, f.newAddress))).toEqual([{ kind: 'integer', value: 42 }, { kind: 'integer', value: 0 }]);
    expect(constantReturnOf(n, 'no_such_symbol')).toEqual({ kind: 'undefined', why: 'it is not defined in the object (no symbol no_such_symbol)' });
  });

  it('fills the fields the spec describes', () => {
    const hello = parsePayload(buildPayload(SPECS.hello!, { image: DEFAULT_IMAGE }));
    expect(hello.funcs[0]).toMatchObject({ name: 'xen_extra_version', oldSymbol: 'xen_extra_version', newSymbol: 'hello_xen_extra_version', newSize: 8, oldSize: 8, nop: false });
    expect(hello.dependsHex).toBe(DEFAULT_IMAGE.buildIdHex);
    expect(hello.xenDependsHex).toBe(DEFAULT_IMAGE.buildIdHex);
    expect(hello.canReapply).toBe(false);
    expect(hello.hooks.load).toHaveLength(1);
    const byName = parsePayload(buildPayload(SPECS.byName!, { image: DEFAULT_IMAGE }));
    expect(byName.funcs[0]!.oldAddress).toBeNull();
    expect(byName.modinfo.map((m) => [m.key, m.value])).toEqual([['ticket', 'XSA-999'], ['owner', 'kernel-team']]);
    expect(byName.canReapply).toBe(true);
    const nop = parsePayload(buildPayload(SPECS.nop!, { image: DEFAULT_IMAGE }));
    expect(nop.funcs[0]).toMatchObject({ nop: true, newSize: 5, oldSize: 6, newAddress: null });
    const expectation = parsePayload(buildPayload(SPECS.expect!, { image: DEFAULT_IMAGE })).funcs[0]!.expect!;
    expect(expectation).toMatchObject({ enabled: true, len: 6, rsv: 0 });
    expect(Array.from(expectation.data.subarray(0, 6))).toEqual([0xb8, 0x13, 0, 0, 0, 0xc3]);
    const hooks = parsePayload(buildPayload(SPECS.allHooks!, { image: DEFAULT_IMAGE }));
    expect(hooks.funcs).toEqual([]);
    expect(hooks.hooks.load).toHaveLength(2);
    expect(hooks.hooks.postRevert).toMatchObject({ kind: 'payload', section: '.text' });
  });

  it('the same spec gives the same bytes; a different one a different build-id', () => {
    const a = buildPayload(SPECS.hello!, { image: DEFAULT_IMAGE });
    expect(buildPayload(SPECS.hello!, { image: DEFAULT_IMAGE })).toEqual(a);
    const b = buildPayload({ ...SPECS.hello!, modinfo: ['other'] }, { image: DEFAULT_IMAGE });
    expect(parsePayload(b).buildIdHex).not.toBe(parsePayload(a).buildIdHex);
  });
});

describe('spec validation', () => {
  const invalid = (spec: unknown, pattern: RegExp, image = true) => {
    try {
      buildPayload(spec as PayloadSpec, image ? { image: DEFAULT_IMAGE } : {});
    } catch (e) {
      expect(e).toBeInstanceOf(FleetpatchError);
      expect((e as FleetpatchError).code).toBe('PAYLOAD_SPEC_INVALID');
      expect((e as FleetpatchError).message).toMatch(pattern);
      return;
    }
    throw new Error('the spec was accepted');
  };

  it('refuses what cannot be built, saying why', () => {
    invalid({ name: 'x' }, /nothing to patch/);
    invalid({ name: '1x', funcs: [{ target: 'xen_extra_version' }] }, /name/);
    invalid({ name: 'x', funcs: [{ target: 'xen_extra_version', returns: -1 }] }, /funcs\.0\.returns/);
    invalid({ name: 'x', funcs: [{ target: 'xen_extra_version', nop: true, returns: 'a' }] }, /NOP entry/);
    invalid({ name: 'x', funcs: [{ target: 'not_in_image' }] }, /oldSize/);
    invalid({ name: 'x', funcs: [{ target: 'xen_extra_version', oldSize: 8 }] }, /depends/, false);
    invalid({ name: 'x', depends: 'ab', funcs: [{ target: 'xen_extra_version', oldSize: 8 }] }, /xenDepends/, false);
    invalid({ name: 'x', depends: 'xyz', funcs: [] }, /depends/);
    invalid({ name: 'x', format: 'xsplice', funcs: [{ target: 'xen_extra_version', expect: 'aa' }] }, /version 2/);
  });

  it('builds without an image when everything is given', () => {
    const bytes = buildPayload({ name: 'x', depends: 'ab'.repeat(20), xenDepends: null, funcs: [{ target: 'xen_extra_version', oldSize: 8, returns: 'x' }] });
    expect(parsePayload(bytes).dependsHex).toBe('ab'.repeat(20));
  });
});
