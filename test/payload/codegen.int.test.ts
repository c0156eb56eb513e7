/**
 * Function results decided from code as gcc writes it (test/fixtures/codegen.ts): the version
 * getters of an image and hello-style payload functions at -O0, -O1, -O2 and -Os, PIE and non-PIE
 * (and -mcmodel=kernel, and ENDBR64), with and without a static counter. Every result is asserted;
 * where a result cannot be told, the reason must name the offset objdump shows for the branch,
 * the call or the load.
 */
import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { beforeAll, describe, expect, it } from 'vitest';
import { XenError } from '../../src/errors.ts';
import {
  cannotTell, checkUpload, constantReturnAt, constantReturnOf, decodeX86, objectFunctionResult, parsePayload, readElf,
  readImage, relocatableCode, type FunctionResult, type HypervisorImage, type RelocatableCode,
} from '../../src/payload/index.ts';
import { buildCodegenFixtures, VARIANTS, type CodegenFixtures, type VariantFixture } from '../fixtures/codegen.ts';
import { firstInstruction, objdumpFunction, readelfRelocations } from './binutils.ts';

let fx: CodegenFixtures;
let host: HypervisorImage;
const images = new Map<string, HypervisorImage>();
const objects = new Map<string, RelocatableCode>();
const undecidables = new Map<string, RelocatableCode>();

beforeAll(async () => {
  fx = await buildCodegenFixtures();
  host = readImage(new Uint8Array(await readFile(fx.host.path)), 'codegen-host');
  for (const v of fx.variants) {
    images.set(v.variant.id, readImage(new Uint8Array(await readFile(v.image.path)), `xen-syms-${v.variant.id}`));
    objects.set(v.variant.id, relocatableCode(readElf(new Uint8Array(await readFile(v.object)))));
    undecidables.set(v.variant.id, relocatableCode(readElf(new Uint8Array(await readFile(v.undecidable)))));
  }
}, 180_000);

const ids = VARIANTS.map((v) => v.id);
const fixture = (id: string): VariantFixture => fx.variants.find((v) => v.variant.id === id)!;
const hex = (n: number) => `0x${n.toString(16)}`;
const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/** The reason must name the offset of the first instruction objdump shows matching `mnemonic`. */
async function expectStopAt(r: FunctionResult | undefined, file: string, fn: string, mnemonic: RegExp, verb: string): Promise<void> {
  const at = await firstInstruction(file, fn, mnemonic);
  expect(r).toEqual({ kind: 'undefined', why: expect.stringMatching(new RegExp(`^it ${verb} at \\+${hex(at.offset)} \\(${escape(at.mnemonic)} `)) });
}

describe('the variants', () => {
  it('cover -O0/-O1/-O2/-Os × PIE/non-PIE × counter, kernel-model and ENDBR64 code', () => {
    expect(ids).toHaveLength(20);
    for (const opt of ['O0', 'O1', 'O2', 'Os']) {
      for (const model of ['pie', 'nopie']) for (const c of ['', '-counter']) expect(ids).toContain(`${opt}-${model}${c}`);
    }
    expect(fx.variants.map((v) => v.variant.id)).toEqual(ids);
  });

  it.each(ids)('%s: images are ET_DYN when PIE, ET_EXEC otherwise; non-PIE code uses absolute addresses', async (id) => {
    const v = fixture(id);
    expect(readElf(new Uint8Array(await readFile(v.image.path))).header.type).toBe(v.variant.model === 'pie' ? 3 : 2);
    const extra = (await objdumpFunction(v.image.path, 'xen_extra_version')).map((i) => i.text).join('; ');
    if (v.variant.model === 'pie') expect(extra).toMatch(/lea\s+0x[0-9a-f]+\(%rip\),%rax/);
    // The shape of the issue: the getter returns its string's address as an immediate.
    if (v.variant.model === 'nopie') expect(extra).toMatch(/mov\s+\$0x[0-9a-f]+,%eax/);
    if (v.variant.model === 'kernel') expect(extra).toMatch(/mov\s+\$0xffffffff8[0-9a-f]+,%rax/);
    if (v.variant.cet) expect(extra).toMatch(/^endbr64/);
    if (v.variant.counter) expect(extra).toMatch(/\(%rip\)/);
  });

  it.each(ids)('%s: payload code carries the relocations the variant implies', async (id) => {
    const v = fixture(id);
    const types = new Set((await readelfRelocations(v.object)).filter((r) => r.section === '.rela.text').map((r) => r.type));
    if (v.variant.model === 'pie') expect([...types].sort()).toEqual(['R_X86_64_PC32']);
    if (v.variant.model === 'nopie') expect(types).toContain('R_X86_64_32');
    if (v.variant.model === 'kernel') expect(types).toContain('R_X86_64_32S');
  });
});

describe('what the functions of a linked image return', () => {
  it.each(ids)('%s: version getters, read-only constants, a local variable', (id) => {
    const img = images.get(id)!;
    expect(img.returns.get('xen_major_version')).toEqual({ kind: 'integer', value: 4 });
    expect(img.returns.get('xen_minor_version')).toEqual({ kind: 'integer', value: 19 });
    expect(img.returns.get('xen_extra_version')).toEqual({ kind: 'string', value: '-unstable' });
    expect(img.returns.get('xen_changeset')).toEqual({ kind: 'string', value: 'fleetpatch codegen fixture' });
    expect(img.returns.get('xen_banner')).toEqual({ kind: 'string', value: 'Xen' });
    expect(img.returns.get('xen_build_number')).toEqual({ kind: 'integer', value: 7 });
    expect(img.returns.get('xen_compile_by')).toEqual({ kind: 'string', value: 'fleetpatch' });
  });

  it.each(ids)('%s: a branch, a call and a counter cannot be told, at the offsets objdump shows', async (id) => {
    const img = images.get(id)!;
    const file = fixture(id).image.path;
    await expectStopAt(img.returns.get('xen_branchy'), file, 'xen_branchy', /^j(?!mp)/, 'branches');
    await expectStopAt(img.returns.get('xen_caller'), file, 'xen_caller', /^call/, 'calls xen_hook');
    expect(img.returns.get('xen_hits')).toEqual({ kind: 'undefined', why: expect.stringMatching(/^it reads writable memory \(\.bss\+0x[0-9a-f]+\) at \+0x[0-9a-f]+: /) });
  });

  it('the non-PIE getter is the string, not the address', () => {
    const img = images.get('O2-nopie')!;
    const sym = img.symbols.get('xen_extra_version')!;
    const [mov] = decodeX86(img.bytesAt(sym.address, Number(sym.size))!, { ip: sym.address });
    const address = mov!.operands[1]!.kind === 'immediate' ? mov!.operands[1]!.value : -1n;
    expect(img.stringAt(address)).toBe('-unstable');
    expect(img.returns.get('xen_extra_version')).toEqual({ kind: 'string', value: '-unstable' });
  });

  it('the host the payloads are built for (-O0, PIE, a counter, at Xen\'s address)', () => {
    expect(host.returns.get('xen_extra_version')).toEqual({ kind: 'string', value: '-unstable' });
    expect(host.returns.get('xen_minor_version')).toEqual({ kind: 'integer', value: 19 });
    expect(host.returns.get('xen_banner')).toEqual({ kind: 'string', value: 'Xen' });
  });
});

describe('what the functions of a payload\'s relocatable code return', () => {
  it.each(ids)('%s: hello-style functions', (id) => {
    const o = objects.get(id)!;
    expect(objectFunctionResult(o, 'xen_hello_world')).toEqual({ kind: 'string', value: 'Hello World' });
    expect(objectFunctionResult(o, 'xen_hello_minor')).toEqual({ kind: 'integer', value: 19 });
    expect(objectFunctionResult(o, 'xen_hello_pointer')).toEqual({ kind: 'string', value: 'Hello World' });
    expect(objectFunctionResult(o, 'xen_hello_local')).toEqual({ kind: 'string', value: 'Hello World' });
  });

  it.each(ids)('%s: a branch, a call and a counter cannot be told, at the offsets objdump shows', async (id) => {
    const o = undecidables.get(id)!;
    const file = fixture(id).undecidable;
    await expectStopAt(objectFunctionResult(o, 'xen_hello_branch'), file, 'xen_hello_branch', /^j(?!mp)/, 'branches');
    await expectStopAt(objectFunctionResult(o, 'xen_hello_call'), file, 'xen_hello_call', /^call/, 'calls xen_hello_hook');
    expect(objectFunctionResult(o, 'xen_hello_count')).toEqual({ kind: 'undefined', why: expect.stringMatching(/^it reads writable memory \(\.bss\+0x0\) at \+0x[0-9a-f]+: /) });
  });

  it('the sentence names the function', () => {
    const r = objectFunctionResult(undecidables.get('O2-pie')!, 'xen_hello_branch');
    expect(r.kind === 'undefined' && cannotTell('xen_hello_branch', r.why)).toMatch(/^cannot tell what xen_hello_branch returns: it branches at \+0x3 \(jg /);
  });
});

describe('codegen payloads', () => {
  const pic = ids.filter((id) => id.includes('-pie'));
  const nonPic = ids.filter((id) => id.includes('-nopie'));

  it.each(pic)('%s: xen_hello_world returns "Hello World" through the payload model, and Xen accepts the upload', async (id) => {
    const p = fixture(id).payload!;
    const bytes = new Uint8Array(await readFile(p.path));
    const parsed = parsePayload(bytes, { name: p.name });
    expect(parsed.funcs).toHaveLength(1);
    expect(constantReturnOf(parsed, parsed.funcs[0]!.newAddress)).toEqual({ kind: 'string', value: 'Hello World' });
    expect(constantReturnOf(parsed, 'xen_hello_pointer')).toEqual({ kind: 'string', value: 'Hello World' });
    const checked = checkUpload({ name: p.name, bytes, image: host });
    expect(checked.funcs[0]!.oldAddress).toBe(host.symbols.get('xen_extra_version')!.address);
    expect(parsed.hasWritableData).toBe(true);
  });

  it.each(nonPic)('%s: -fno-pie code has R_X86_64_32 relocations: EOPNOTSUPP at upload', async (id) => {
    const p = fixture(id).payload!;
    const e = (() => {
      try {
        checkUpload({ name: p.name, bytes: new Uint8Array(readFileSync(p.path)), image: host });
      } catch (x) {
        return x;
      }
      return null;
    })() as XenError;
    expect(e).toBeInstanceOf(XenError);
    expect(e.errnoName).toBe('EOPNOTSUPP');
    expect(e.message).toMatch(/R_X86_64_32/);
  });

  it('the expectation fixtures hold the host\'s bytes (objcopy) and another function\'s', () => {
    const sym = host.symbols.get('xen_extra_version')!;
    expect(Buffer.from(host.bytesAt(sym.address, fx.expect.length)!).toString('hex')).toBe(fx.expect.okBytes);
    for (const [f, bytes] of [[fx.expect.ok, fx.expect.okBytes], [fx.expect.bad, fx.expect.badBytes]] as const) {
      const p = parsePayload(new Uint8Array(readFileSync(f.path)));
      const e = p.funcs[0]!.expect!;
      expect({ enabled: e.enabled, len: e.len, rsv: e.rsv }).toEqual({ enabled: true, len: fx.expect.length, rsv: 0 });
      expect(Buffer.from(e.data.subarray(0, e.len)).toString('hex')).toBe(bytes);
    }
  });
});

describe('the evaluator\'s rules, on hand-written code', () => {
  const run = (bytes: number[], memory?: Parameters<typeof constantReturnAt>[0]) =>
    constantReturnAt(memory ?? { bytesAt: () => null, stringAt: () => null }, 0x1000n, { code: Uint8Array.from(bytes) });

  it('32-bit moves zero-extend; 8-bit ones merge; mov $imm32 to a 64-bit register sign-extends', () => {
    expect(run([0x48, 0xc7, 0xc0, 0xff, 0xff, 0xff, 0xff, 0xb8, 0x05, 0, 0, 0, 0xc3])).toEqual({ kind: 'integer', value: 5 });
    expect(run([0xb8, 0x34, 0x12, 0, 0, 0xb0, 0x78, 0xc3])).toEqual({ kind: 'integer', value: 0x1278 });
    expect(run([0x48, 0xc7, 0xc0, 0xff, 0xff, 0xff, 0xff, 0xc3])).toEqual({ kind: 'integer', value: -1 });
  });

  it('follows mov between registers, xor, add, sub, push/pop', () => {
    // mov $7,%edx; mov %rdx,%rax; add $3,%rax; sub $1,%eax; push %rax; xor %eax,%eax; pop %rax; ret
    expect(run([0xba, 7, 0, 0, 0, 0x48, 0x89, 0xd0, 0x48, 0x83, 0xc0, 0x03, 0x83, 0xe8, 0x01, 0x50, 0x31, 0xc0, 0x58, 0xc3])).toEqual({ kind: 'integer', value: 9 });
  });

  it('says why: nothing set, an argument, a loop, the end of the code, bad bytes', () => {
    expect(run([0x90, 0xc3])).toEqual({ kind: 'undefined', why: 'it returns without setting %rax' });
    expect(run([0x48, 0x89, 0xf8, 0xc3])).toEqual({ kind: 'undefined', why: 'it reads %rdi at +0x0 before setting it (an argument, or whatever the caller left there)' });
    expect(run([0x0f, 0xaf, 0xc0, 0xb8, 1, 0, 0, 0, 0x0f, 0xaf, 0xc0, 0xc3])).toEqual({ kind: 'undefined', why: 'it computes %eax with imul, which the evaluator does not follow, at +0x8 (imul %eax,%eax)' });
    expect(run([0xb8, 1, 0, 0, 0])).toEqual({ kind: 'undefined', why: 'it runs past the end of its code (5 bytes) without returning' });
    expect(run([0x0f, 0x0b])).toEqual({ kind: 'undefined', why: 'it traps at +0x0 (ud2)' });
    expect(run([0x06])).toEqual({ kind: 'undefined', why: 'it has bytes that are not an x86-64 instruction at +0x0' });
    expect(run([0xeb, 0xfe])).toEqual({ kind: 'undefined', why: 'it jumps elsewhere at +0x0 (jmp 0x1000)' });
  });
});
