import { describe, expect, it } from 'vitest';
import { parseEvent, type DomainEventInput } from '../../src/events/catalogue.ts';
import { activeHosts, emptyEnrolment, evolveEnrolment, foldEnrolments, judgeJoinToken } from '../../src/events/projections/fleet-hosts.ts';
import { joinTokenHostId, joinTokenSha256, makeJoinToken, parseJoinToken } from '../../src/fleet/join-token.ts';

const CA = 'ab'.repeat(32);
const OTHER_CA = 'cd'.repeat(32);
const actor = { kind: 'user' as const, id: 'alice' };
const at = (m: number) => new Date(Date.UTC(2026, 0, 1, 0, m)).toISOString();
const cert = { fingerprint: 'ef'.repeat(32), serial: '0a1b', notAfter: '2027-01-01T00:00:00.000Z' };
const ev = (e: Record<string, unknown>) => parseEvent({ schemaVersion: 1, actor, ...e } as DomainEventInput);

function caught(f: () => unknown): { code?: string; message: string } {
  try {
    f();
  } catch (e) {
    return e as { code?: string; message: string };
  }
  throw new Error('expected a refusal');
}

describe('join tokens', () => {
  it('name their fleet and host, and are refused when malformed or foreign', () => {
    const { token, sha256 } = makeJoinToken(CA, 'dom0-7.rack1');
    expect(token).toMatch(/^fpj\.abababababab\.[A-Za-z0-9_-]{43}\.dom0-7\.rack1$/);
    expect(parseJoinToken(token, CA)).toEqual({ hostId: 'dom0-7.rack1', fleet: 'abababababab', sha256 });
    expect(joinTokenHostId(token)).toBe('dom0-7.rack1');
    expect(caught(() => parseJoinToken(token, OTHER_CA))).toMatchObject({ code: 'JOIN_TOKEN_FOREIGN', message: expect.stringContaining('another fleet') });
    for (const bad of ['', 'fpj.', `${token};rm -rf /`, token.replace('fpj.', 'fpx.'), 'fpj.abababababab.short.h1', `${token}\u0000`, 'x'.repeat(100_000), '\ud800']) {
      expect(caught(() => parseJoinToken(bad, CA)).code).toBe('JOIN_TOKEN_MALFORMED');
    }
    expect(caught(() => parseJoinToken(42, CA)).code).toBe('JOIN_TOKEN_MALFORMED');
    // The message quotes a little of it, printable, never the whole.
    expect(caught(() => parseJoinToken('bad\u0000token', CA)).message).toContain('\\u0000');
  });
});

describe('the enrolment fold', () => {
  const issued = (host: string, sha: string, minute: number, ttlMin = 60) => ev({ type: 'JoinTokenIssued', occurredAt: at(minute), hostId: host, tokenSha256: sha, expiresAt: at(minute + ttlMin), labels: { region: 'eu' } });
  const enrolled = (host: string, sha: string, minute: number) =>
    ev({ type: 'HostEnrolled', occurredAt: at(minute), hostId: host, labels: { region: 'eu' }, address: 'https://10.0.0.1:9443', hypervisorBuildId: 'aa'.repeat(20), certificate: cert, tokenSha256: sha });
  const t1 = joinTokenSha256('one');
  const t2 = joinTokenSha256('two');

  it('judges a token: unknown, used, expired, good, and a renewal', () => {
    let s = evolveEnrolment(emptyEnrolment('h1'), issued('h1', t1, 0));
    expect(judgeJoinToken(s, t2, new Date(at(1)))).toMatchObject({ ok: false, code: 'JOIN_TOKEN_FOREIGN' });
    expect(judgeJoinToken(s, t1, new Date(at(61)))).toMatchObject({ ok: false, code: 'JOIN_TOKEN_EXPIRED' });
    expect(judgeJoinToken(s, t1, new Date(at(1)))).toMatchObject({ ok: true, renewal: false });
    s = evolveEnrolment(s, enrolled('h1', t1, 2));
    expect(judgeJoinToken(s, t1, new Date(at(3)))).toMatchObject({ ok: false, code: 'JOIN_TOKEN_USED' });
    s = evolveEnrolment(s, issued('h1', t2, 4));
    expect(judgeJoinToken(s, t2, new Date(at(5)))).toMatchObject({ ok: true, renewal: true });
    // A token of another host's stream is not this host's.
    expect(judgeJoinToken(evolveEnrolment(emptyEnrolment('h2'), issued('h2', t1, 0)), t2, new Date(at(1))).ok).toBe(false);
  });

  it('lists enrolled hosts that are not retired, with their labels and renewed certificates', () => {
    const folded = foldEnrolments([
      issued('h2', t2, 0),
      issued('h1', t1, 0),
      enrolled('h1', t1, 1),
      ev({ type: 'HostLabelsChanged', occurredAt: at(2), hostId: 'h1', labels: { region: 'us', rack: 'r2' } }),
      ev({ type: 'HostCertificateRenewed', occurredAt: at(3), hostId: 'h1', address: 'https://10.0.0.9:9443', hypervisorBuildId: 'bb'.repeat(20), certificate: { ...cert, serial: '0c' }, tokenSha256: t2 }),
      enrolled('h2', t2, 4),
      ev({ type: 'HostRetired', occurredAt: at(5), hostId: 'h2', reason: 'decommissioned' }),
      ev({ type: 'PayloadUploaded', occurredAt: at(6), hostId: 'h1', payload: { name: 'p', buildId: 'cc'.repeat(20) } }),
    ]);
    const hosts = activeHosts(folded.values());
    expect(hosts.map((h) => h.id)).toEqual(['h1']);
    expect(hosts[0]).toMatchObject({ labels: { region: 'us', rack: 'r2' }, address: 'https://10.0.0.9:9443', hypervisorBuildId: 'bb'.repeat(20), certificate: { serial: '0c' }, renewedAt: at(3) });
    expect(folded.get('h2')!.host!.retired).toEqual({ at: at(5), reason: 'decommissioned' });
  });

  it('refuses hostile host ids, labels and addresses in the facts themselves', () => {
    expect(() => issued('h1;reboot', t1, 0)).toThrow(/host|hostId/);
    expect(() => ev({ type: 'HostLabelsChanged', occurredAt: at(2), hostId: 'h1', labels: { 'a b': 'x' } })).toThrow(/label name/);
    expect(() => ev({ type: 'HostLabelsChanged', occurredAt: at(2), hostId: 'h1', labels: { a: 'x\u0000' } })).toThrow(/NUL/);
    expect(() => ev({ ...enrolled('h1', t1, 1), address: 'https://u:p@10.0.0.1/x' })).toThrow(/no path, query or credentials/);
  });
});
