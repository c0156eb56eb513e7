import { describe, expect, it } from 'vitest';
import { findUnstorable, formatPath, StorableString, unstorable } from '../../src/domain/text.ts';

describe('storable text', () => {
  it('accepts ordinary text, emoji (a surrogate pair) and the empty string', () => {
    for (const ok of ['', 'host-0007', 'déjà vu', 'patch 🩹 applied', '\t\n']) expect(unstorable(ok)).toBeUndefined();
  });

  it('names a NUL and where it is', () => {
    expect(unstorable('bad\u0000reason')).toBe('contains a NUL character (\\u0000) at position 3, which cannot be stored');
  });

  it('names a lone high or low surrogate and where it is, but not a pair', () => {
    expect(unstorable('a\uD800')).toContain('lone UTF-16 surrogate (\\ud800) at position 1');
    expect(unstorable('\uDC00b')).toContain('(\\udc00) at position 0');
    expect(unstorable('🩹\uDBFF')).toContain('at position 2');
  });

  it('refuses through the zod schema, and chains like z.string()', () => {
    const s = StorableString.min(1).max(5);
    expect(s.safeParse('x\u0000').success).toBe(false);
    expect(s.safeParse('ok').success).toBe(true);
    expect(s.safeParse('toolong').success).toBe(false);
  });

  it('finds the first unstorable string in a body, keys included, with its path', () => {
    expect(findUnstorable({ hosts: { ids: ['host-0007', 'x\u0000y'] } })).toEqual({ path: ['hosts', 'ids', 1], problem: expect.stringContaining('NUL') });
    expect(findUnstorable({ labels: { 're\uD800gion': 'eu' } })?.path).toEqual(['labels', 're\uD800gion']);
    expect(findUnstorable({ a: [1, true, null, { b: 'fine' }] })).toBeUndefined();
    expect(formatPath(['hosts', 'ids', 1])).toBe('hosts.ids[1]');
    expect(formatPath([])).toBe('(the whole value)');
  });
});
