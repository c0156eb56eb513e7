/**
 * The build-id note check, case by case as the spec lists them (xen-livepatch.md section 1), and
 * the order between the cases.
 */
import { describe, expect, it } from 'vitest';
import { XenError } from '../../src/errors.ts';
import { buildIdFromHex, buildIdToHex, compareBuildIds, encodeBuildIdNote, parseBuildIdNote, shortBuildId } from '../../src/payload/index.ts';

const ID = buildIdFromHex('56b2e0c4d1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6');

/** A note: header fields, then the raw name bytes, padding to 4, then the descriptor bytes. */
function note(fields: { namesz?: number; descsz?: number; type?: number; name?: number[]; desc?: Uint8Array; size?: number }): Uint8Array {
  const name = fields.name ?? [0x47, 0x4e, 0x55, 0];
  const desc = fields.desc ?? ID;
  const body = [...name];
  while (body.length % 4) body.push(0);
  const bytes = new Uint8Array(fields.size ?? 12 + body.length + desc.length);
  const v = new DataView(bytes.buffer);
  v.setUint32(0, fields.namesz ?? name.length, true);
  v.setUint32(4, fields.descsz ?? desc.length, true);
  v.setUint32(8, fields.type ?? 3, true);
  bytes.set(body.slice(0, Math.max(0, bytes.length - 12)), 12);
  if (12 + body.length < bytes.length) bytes.set(desc.subarray(0, bytes.length - 12 - body.length), 12 + body.length);
  return bytes;
}

function refused(data: Uint8Array, size?: number): { errno: string; check: unknown } {
  try {
    parseBuildIdNote(data, size);
  } catch (e) {
    if (!(e instanceof XenError)) throw e;
    return { errno: e.errnoName, check: e.details.check };
  }
  throw new Error('the note was accepted');
}

describe('a valid GNU build-id note', () => {
  it('yields its descriptor, as ld writes it', () => {
    const n = encodeBuildIdNote(ID);
    expect(n.length).toBe(36);
    expect(buildIdToHex(parseBuildIdNote(n).buildId)).toBe(buildIdToHex(ID));
    expect(parseBuildIdNote(n)).toMatchObject({ namesz: 4, descsz: 20, type: 3 });
  });

  it('accepts any descriptor length and a name longer than "GNU\\0" that starts with it', () => {
    expect(parseBuildIdNote(note({ desc: Uint8Array.of(1) })).buildId).toEqual(Uint8Array.of(1));
    expect(parseBuildIdNote(note({ name: [0x47, 0x4e, 0x55, 0, 0x58, 0x59, 0x5a, 0] })).buildId).toEqual(ID);
  });
});

describe('the seven checks', () => {
  it('1. the section must be longer than the 12-byte header: EINVAL', () => {
    expect(refused(new Uint8Array(12))).toEqual({ errno: 'EINVAL', check: 1 });
    expect(refused(new Uint8Array(0))).toEqual({ errno: 'EINVAL', check: 1 });
    expect(refused(encodeBuildIdNote(ID), 12)).toEqual({ errno: 'EINVAL', check: 1 });
  });

  it('2. type must be NT_GNU_BUILD_ID (3): ENODATA', () => {
    expect(refused(note({ type: 1 }))).toEqual({ errno: 'ENODATA', check: 2 });
    expect(refused(note({ type: 0 }))).toEqual({ errno: 'ENODATA', check: 2 });
  });

  it('3. namesz + descsz must not wrap around 32 bits: EINVAL', () => {
    expect(refused(note({ namesz: 0xfffffffc, descsz: 8 }))).toEqual({ errno: 'EINVAL', check: 3 });
    expect(refused(note({ namesz: 4, descsz: 0xffffffff }))).toEqual({ errno: 'EINVAL', check: 3 });
  });

  it('4. namesz must be at least 4: EINVAL', () => {
    expect(refused(note({ namesz: 3 }))).toEqual({ errno: 'EINVAL', check: 4 });
    expect(refused(note({ namesz: 0 }))).toEqual({ errno: 'EINVAL', check: 4 });
  });

  it('5. namesz + descsz must fit after the header (padding not counted): EINVAL', () => {
    expect(refused(note({ descsz: 21 }))).toEqual({ errno: 'EINVAL', check: 5 });
    expect(refused(note({ namesz: 4, descsz: 1000 }))).toEqual({ errno: 'EINVAL', check: 5 });
  });

  it('6. the owner must be "GNU\\0" (strncmp over namesz): ENODATA', () => {
    expect(refused(note({ name: [0x47, 0x4e, 0x58, 0] }))).toEqual({ errno: 'ENODATA', check: 6 });
    expect(refused(note({ name: [0x47, 0x4e, 0x55, 0x58] }))).toEqual({ errno: 'ENODATA', check: 6 });
    expect(refused(note({ name: [0x67, 0x6e, 0x75, 0] }))).toEqual({ errno: 'ENODATA', check: 6 });
  });

  it('7. the descriptor must not be empty: EINVAL', () => {
    expect(refused(note({ desc: new Uint8Array(0), size: 20 }))).toEqual({ errno: 'EINVAL', check: 7 });
  });
});

describe('the order of the checks', () => {
  it('size before type, type before sizes, sizes before the owner, the owner before the descriptor', () => {
    expect(refused(note({ type: 1 }), 12)).toEqual({ errno: 'EINVAL', check: 1 });
    expect(refused(note({ type: 1, namesz: 0xffffffff, descsz: 2 }))).toEqual({ errno: 'ENODATA', check: 2 });
    expect(refused(note({ namesz: 0xffffffff, descsz: 2 }))).toEqual({ errno: 'EINVAL', check: 3 });
    expect(refused(note({ namesz: 2, descsz: 1000 }))).toEqual({ errno: 'EINVAL', check: 4 });
    expect(refused(note({ name: [0x41, 0x41, 0x41, 0], descsz: 1000 }))).toEqual({ errno: 'EINVAL', check: 5 });
    expect(refused(note({ name: [0x41, 0x41, 0x41, 0], desc: new Uint8Array(0), size: 20 }))).toEqual({ errno: 'ENODATA', check: 6 });
  });
});

describe("padding is not counted (check 5), as in Xen", () => {
  // namesz 5 puts the descriptor at 12 + 8 = 20, but check 5 only asks for 12 + 5 + descsz bytes.
  const name = [0x47, 0x4e, 0x55, 0, 0x21];
  const section = note({ name, namesz: 5, descsz: 3, size: 20 });

  it('the descriptor may run past the section: Xen reads the bytes that follow it', () => {
    const file = new Uint8Array(section.length + 3);
    file.set(section);
    file.set([0xaa, 0xbb, 0xcc], section.length);
    expect(parseBuildIdNote(file, section.length).buildId).toEqual(Uint8Array.of(0xaa, 0xbb, 0xcc));
  });

  it('but never past the end of what exists: EINVAL instead of reading out of bounds', () => {
    expect(refused(section, section.length)).toEqual({ errno: 'EINVAL', check: 5 });
  });
});

describe('build-id helpers', () => {
  it('compare by length, then bytes', () => {
    expect(compareBuildIds(Uint8Array.of(0xff), Uint8Array.of(0, 0))).toBeLessThan(0);
    expect(compareBuildIds(Uint8Array.of(1, 2), Uint8Array.of(1, 3))).toBeLessThan(0);
    expect(compareBuildIds(Uint8Array.of(1, 2), Uint8Array.of(1, 2))).toBe(0);
    expect(buildIdToHex(buildIdFromHex('0xAB:CD'))).toBe('abcd');
    expect(() => buildIdFromHex('abc')).toThrow(/not a build-id/);
    expect(shortBuildId(ID)).toBe('56b2…');
  });
});
