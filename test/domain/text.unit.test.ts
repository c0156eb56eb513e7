import { describe, expect, it } from 'vitest';
import { findUnstorable, formatPath, printable, quoted, StorableString, unstorable } from '../../src/domain/text.ts';

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

  it('refuses unstorable text for that one reason, not also for the checks chained after it', () => {
    const name = StorableString.min(1).max(3).regex(/^[a-z]+$/);
    const issues = name.safeParse('x\u0000yz!').error?.issues ?? [];
    expect(issues.map((i) => i.message)).toEqual(['contains a NUL character (\\u0000) at position 1, which cannot be stored']);
    expect(name.safeParse('TOOLONG').error?.issues.map((i) => i.code)).toEqual(['too_big', 'invalid_format']);
  });

  it('quotes hostile text in one printable, storable line, emoji kept whole', () => {
    expect(printable('a\u0000b\nc\td\u001b\u2028')).toBe('a\\u0000b\\nc\\td\\u001b\\u2028');
    expect(printable('x\uD800y\uDC00 🩹 שלום é')).toBe('x\\ud800y\\udc00 🩹 שלום é');
    expect(unstorable(printable('\u0000\uDFFF\uD800'))).toBeUndefined();
    expect(quoted('🩹🩹', 3)).toBe('"🩹"...');
    expect(quoted('ab\u0000')).toBe('"ab\\u0000"');
    expect(formatPath(['hosts', 'labels', 're\u0000gion'])).toBe('hosts.labels.re\\u0000gion');
  });

  it('finds the first unstorable string in a body, keys included, with its path', () => {
    expect(findUnstorable({ hosts: { ids: ['host-0007', 'x\u0000y'] } })).toEqual({ path: ['hosts', 'ids', 1], problem: expect.stringContaining('NUL') });
    expect(findUnstorable({ labels: { 're\uD800gion': 'eu' } })?.path).toEqual(['labels', 're\uD800gion']);
    expect(findUnstorable({ a: [1, true, null, { b: 'fine' }] })).toBeUndefined();
    expect(formatPath(['hosts', 'ids', 1])).toBe('hosts.ids[1]');
    expect(formatPath([])).toBe('(the whole value)');
  });
});
