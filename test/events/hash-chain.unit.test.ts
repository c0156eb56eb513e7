import { createHash } from 'node:crypto';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { canonicalJson, chainHash, GENESIS_HASH, sha256Hex, StreamChainChecker, type ChainRecord } from '../../src/events/hash-chain.ts';

function record(position: number, data: unknown = { n: position }): ChainRecord {
  return {
    streamId: 'host-h1',
    streamPosition: position,
    eventId: `00000000-0000-4000-8000-${String(position).padStart(12, '0')}`,
    type: 'PayloadApplied',
    schemaVersion: 1,
    occurredAt: '2025-03-01T10:00:00.000Z',
    recordedAt: '2025-03-01T10:00:00.001Z',
    actor: { kind: 'workflow', id: 'w' },
    correlation: {},
    data,
  };
}

function chain(n: number): { record: ChainRecord; hash: string }[] {
  let prev = GENESIS_HASH;
  return Array.from({ length: n }, (_, i) => {
    const r = record(i + 1);
    prev = chainHash(prev, r);
    return { record: r, hash: prev };
  });
}

describe('canonical JSON', () => {
  it('sorts keys, drops undefined members, writes no whitespace', () => {
    expect(canonicalJson({ b: 1, a: [true, null, 'x', { d: undefined, c: 2.5 }] })).toBe('{"a":[true,null,"x",{"c":2.5}],"b":1}');
    expect(canonicalJson({ é: 1, e: 2, Z: 3 })).toBe('{"Z":3,"e":2,"é":1}');
  });

  it('refuses what JSON cannot say', () => {
    expect(() => canonicalJson(Number.NaN)).toThrow();
    expect(() => canonicalJson({ at: new Date() })).toThrow(/plain objects/);
    expect(() => canonicalJson(10n)).toThrow();
  });

  it('is the same for any key order and survives a JSON round trip (what jsonb does)', () => {
    fc.assert(
      fc.property(fc.jsonValue(), (v) => {
        const text = canonicalJson(v);
        expect(canonicalJson(JSON.parse(JSON.stringify(v)))).toBe(text);
        expect(JSON.parse(text)).toEqual(JSON.parse(JSON.stringify(v)));
        const shuffled = JSON.parse(JSON.stringify(v), (_k, x: unknown) =>
          x && typeof x === 'object' && !Array.isArray(x) ? Object.fromEntries(Object.entries(x).reverse()) : x,
        );
        expect(canonicalJson(shuffled)).toBe(text);
      }),
    );
  });
});

describe('hash chain', () => {
  it('chains sha256(previous hash + canonical JSON)', () => {
    const r = record(1);
    expect(chainHash(GENESIS_HASH, r)).toBe(sha256Hex(GENESIS_HASH + canonicalJson(r)));
    expect(chainHash('f'.repeat(64), r)).not.toBe(chainHash(GENESIS_HASH, r));
    // Pinned: chains written by earlier versions must keep verifying.
    expect(sha256Hex('ключ é 🙂')).toBe(createHash('sha256').update('ключ é 🙂', 'utf8').digest('hex'));
    expect(chainHash(GENESIS_HASH, { ...r, data: { hostId: 'h-1', payload: { name: 'fix', buildId: 'ab'.repeat(20) } } })).toBe(
      createHash('sha256')
        .update(GENESIS_HASH + canonicalJson({ ...r, data: { payload: { buildId: 'ab'.repeat(20), name: 'fix' }, hostId: 'h-1' } }))
        .digest('hex'),
    );
  });

  it('accepts an intact chain and matches its head', () => {
    const links = chain(5);
    const c = new StreamChainChecker('host-h1');
    for (const l of links) c.push(l.record, l.hash);
    expect(c.finish({ position: 5, lastHash: links[4]!.hash })).toBeNull();
    expect(c.headHash).toBe(links[4]!.hash);
  });

  it('finds the first altered event', () => {
    const links = chain(5);
    const c = new StreamChainChecker('host-h1');
    links.forEach((l, i) => c.push(i === 2 ? { ...l.record, data: { n: 99 } } : l.record, l.hash));
    expect(c.finish({ position: 5, lastHash: links[4]!.hash })).toMatchObject({ kind: 'altered', position: 3, storedHash: links[2]!.hash });
  });

  it('finds a recomputed link by the next one', () => {
    const links = chain(5);
    const forged = { ...links[1]!.record, data: { n: 42 } };
    const c = new StreamChainChecker('host-h1');
    links.forEach((l, i) => c.push(i === 1 ? forged : l.record, i === 1 ? chainHash(links[0]!.hash, forged) : l.hash));
    expect(c.firstBreak).toMatchObject({ kind: 'altered', position: 3 });
  });

  it('finds deleted events in the middle and at the end', () => {
    const links = chain(5);
    const middle = new StreamChainChecker('host-h1');
    links.filter((_, i) => i !== 1).forEach((l) => middle.push(l.record, l.hash));
    expect(middle.finish({ position: 5, lastHash: links[4]!.hash })).toMatchObject({ kind: 'missing', position: 2 });

    const tail = new StreamChainChecker('host-h1');
    links.slice(0, 3).forEach((l) => tail.push(l.record, l.hash));
    expect(tail.finish({ position: 5, lastHash: links[4]!.hash })).toMatchObject({ kind: 'missing', position: 4 });

    const headless = new StreamChainChecker('host-h1');
    links.forEach((l) => headless.push(l.record, l.hash));
    expect(headless.finish(null)).toMatchObject({ kind: 'head' });

    const wrongHead = new StreamChainChecker('host-h1');
    links.forEach((l) => wrongHead.push(l.record, l.hash));
    expect(wrongHead.finish({ position: 5, lastHash: links[3]!.hash })).toMatchObject({ kind: 'head', position: 5 });
  });
});
