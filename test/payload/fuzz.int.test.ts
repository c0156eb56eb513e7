/**
 * Property tests over mutated real payloads: whatever the bytes, the parser and the upload check
 * either accept or throw fleetpatch's own typed error, and always terminate quickly. The runs are
 * bounded (a few seconds in all) and the test prints how many cases it ran.
 */
import { readFile } from 'node:fs/promises';
import fc from 'fast-check';
import { beforeAll, describe, expect, it } from 'vitest';
import { FleetpatchError, XenError } from '../../src/errors.ts';
import {
  DEFAULT_IMAGE, buildPayload, checkUpload, constantReturnOf, parsePayload, readElf, readImage, type HypervisorImage,
} from '../../src/payload/index.ts';
import { buildFixtures } from '../fixtures/toolchain.ts';
import { editBytes } from '../../fuzz/lib.ts';

let corpus: Uint8Array[] = [];
let images: Uint8Array[] = [];
let image: HypervisorImage;

beforeAll(async () => {
  const fx = await buildFixtures();
  corpus = await Promise.all(Object.values(fx.payloads).map(async (p) => new Uint8Array(await readFile(p.path))));
  corpus.push(
    buildPayload({ name: 'fuzz_a', funcs: [{ target: 'xen_extra_version', returns: 'Hello' }, { target: 'xen_minor_version', nop: true }], hooks: { load: 1, apply: true }, modinfo: ['a=b'], writableData: 8 }, { image: DEFAULT_IMAGE }),
  );
  images = await Promise.all(Object.values(fx.images).map(async (i) => new Uint8Array(await readFile(i.path))));
  image = readImage(images[0]!);
});

/** Offsets where a mutation is most likely to matter: header fields and every section header field. */
function interestingOffsets(bytes: Uint8Array): number[] {
  const out = [4, 5, 6, 7, 8, 16, 18, 20, 40, 56, 58, 60, 62];
  if (bytes.length < 64) return out;
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const shoff = Number(v.getBigUint64(40, true));
  const shnum = v.getUint16(60, true);
  for (let i = 0; i < shnum && shoff + (i + 1) * 64 <= bytes.length; i++) {
    for (const f of [0, 4, 8, 24, 32, 40, 44, 48, 56]) out.push(shoff + i * 64 + f);
    // And the start of the section's contents (note headers, symbols, relocations, struct fields).
    const off = Number(v.getBigUint64(shoff + i * 64 + 24, true));
    for (const f of [0, 4, 8, 12, 16, 24, 28, 32]) if (off + f < bytes.length) out.push(off + f);
  }
  return out;
}

type Mutation =
  | { kind: 'byte'; at: number; value: number }
  | { kind: 'field'; pick: number; width: 1 | 2 | 4 | 8; value: bigint }
  | { kind: 'truncate'; at: number }
  | { kind: 'extend'; bytes: number[] }
  | { kind: 'copy'; from: number; to: number; length: number };

const interestingValues = fc.oneof(
  fc.constantFrom(0n, 1n, 2n, 3n, 4n, 8n, 12n, 20n, 24n, 63n, 64n, 104n, 0xffn, 0xff00n, 0xfff1n, 0xfff2n, 0xffffn, 0x7fffffffn, 0xffffffffn, 1n << 32n, 1n << 63n, (1n << 64n) - 1n),
  fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }),
);

const mutation: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ kind: fc.constant('byte' as const), at: fc.nat(), value: fc.integer({ min: 0, max: 255 }) }),
  fc.record({ kind: fc.constant('field' as const), pick: fc.nat(), width: fc.constantFrom(1 as const, 2 as const, 4 as const, 8 as const), value: interestingValues }),
  fc.record({ kind: fc.constant('truncate' as const), at: fc.nat() }),
  fc.record({ kind: fc.constant('extend' as const), bytes: fc.array(fc.integer({ min: 0, max: 255 }), { maxLength: 64 }) }),
  fc.record({ kind: fc.constant('copy' as const), from: fc.nat(), to: fc.nat(), length: fc.integer({ min: 1, max: 128 }) }),
);

function mutate(original: Uint8Array, mutations: Mutation[]): Uint8Array {
  let bytes = original.slice();
  for (const m of mutations) {
    if (bytes.length === 0) break;
    switch (m.kind) {
      case 'byte':
        bytes[m.at % bytes.length] = m.value;
        break;
      case 'field': {
        const offsets = interestingOffsets(bytes);
        const at = offsets[m.pick % offsets.length]!;
        if (at + m.width > bytes.length) break;
        const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
        if (m.width === 1) v.setUint8(at, Number(m.value & 0xffn));
        else if (m.width === 2) v.setUint16(at, Number(m.value & 0xffffn), true);
        else if (m.width === 4) v.setUint32(at, Number(m.value & 0xffffffffn), true);
        else v.setBigUint64(at, m.value, true);
        break;
      }
      case 'truncate':
      case 'extend':
      case 'copy':
        bytes = editBytes(bytes, m);
        break;
    }
  }
  return bytes;
}

/** Runs fn; returns 'ok' or the errno/code of a typed error; anything else fails the property. */
function outcome(fn: () => unknown): string {
  try {
    fn();
    return 'ok';
  } catch (e) {
    if (e instanceof XenError) return `${e.errnoName}:${String(e.details.check)}`;
    if (e instanceof FleetpatchError) return e.code;
    throw e;
  }
}

// A hang would be unbounded; 2 s leaves room for GC pauses on a loaded CI machine.
const MAX_MS_PER_CASE = 2000;

describe('mutated real payloads', () => {
  it('parsePayload and checkUpload only ever throw typed errors, and always terminate', () => {
    const tally = new Map<string, number>();
    let cases = 0;
    let slowest = 0;
    fc.assert(
      fc.property(fc.nat(), fc.array(mutation, { minLength: 1, maxLength: 6 }), (which, mutations) => {
        const bytes = mutate(corpus[which % corpus.length]!, mutations);
        const started = performance.now();
        const parsed = outcome(() => {
          const p = parsePayload(bytes);
          for (const f of p.funcs) constantReturnOf(p, f.newAddress);
          JSON.stringify(p.funcs, (_k, v) => (typeof v === 'bigint' ? v.toString() : v));
        });
        const uploaded = outcome(() => checkUpload({ name: 'fuzz', bytes, image }));
        const elf = outcome(() => readElf(bytes));
        const elapsed = performance.now() - started;
        slowest = Math.max(slowest, elapsed);
        cases++;
        tally.set(`parse ${parsed}`, (tally.get(`parse ${parsed}`) ?? 0) + 1);
        tally.set(`upload ${uploaded}`, (tally.get(`upload ${uploaded}`) ?? 0) + 1);
        void elf;
        return elapsed < MAX_MS_PER_CASE;
      }),
      { numRuns: 4000, seed: 0x5eed },
    );
    const byErrno = new Map<string, number>();
    for (const [k, n] of tally) if (k.startsWith('parse ')) byErrno.set(k.slice(6).split(':')[0]!, (byErrno.get(k.slice(6).split(':')[0]!) ?? 0) + n);
    const checks = [...tally.keys()].filter((k) => k.startsWith('parse ') && k !== 'parse ok').length;
    console.log(`payload fuzz: ${cases} mutated payloads (parse and upload each), slowest ${slowest.toFixed(1)} ms; parse outcomes ${[...byErrno].sort().map(([k, n]) => `${k}=${n}`).join(' ')}, ${checks} distinct checks refused`);
    expect(cases).toBe(4000);
    // The mutations reach deep: some still parse, and many different checks refuse the rest.
    expect(tally.get('parse ok') ?? 0).toBeGreaterThan(0);
    expect([...tally.keys()].filter((k) => k.startsWith('parse ')).length).toBeGreaterThan(20);
  });

  it('random bytes behind an ELF header are refused with a typed error', () => {
    let cases = 0;
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 0, maxLength: 2048 }), (tail) => {
        const bytes = new Uint8Array(64 + tail.length);
        bytes.set([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1, 0]);
        bytes.set(corpus[0]!.subarray(16, 64), 16);
        bytes.set(tail, 64);
        cases++;
        outcome(() => parsePayload(bytes));
        outcome(() => parsePayload(tail));
        return true;
      }),
      { numRuns: 1000, seed: 42 },
    );
    console.log(`payload fuzz: ${cases} random-byte payloads`);
    expect(cases).toBe(1000);
  });
});

describe('mutated real images', () => {
  it('readImage only ever throws typed errors', () => {
    let cases = 0;
    const tally = new Map<string, number>();
    fc.assert(
      fc.property(fc.nat(), fc.array(mutation, { minLength: 1, maxLength: 4 }), (which, mutations) => {
        const bytes = mutate(images[which % images.length]!, mutations);
        const started = performance.now();
        const r = outcome(() => readImage(bytes));
        cases++;
        tally.set(r, (tally.get(r) ?? 0) + 1);
        return performance.now() - started < MAX_MS_PER_CASE;
      }),
      { numRuns: 1000, seed: 7 },
    );
    console.log(`image fuzz: ${cases} mutated images; outcomes: ${[...tally].sort().map(([k, n]) => `${k}=${n}`).join(', ')}`);
    expect(cases).toBe(1000);
  });
});
