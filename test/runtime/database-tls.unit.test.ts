import { mkdtempSync, readFileSync } from 'node:fs';
import { X509Certificate } from 'node:crypto';
import os from 'node:os';
import path from 'node:path';
import type { PeerCertificate } from 'node:tls';
import { describe, expect, it } from 'vitest';
import { explainPostgresFailure, resolvePostgresTls, sslAttempts, type PgSsl } from '../../src/runtime/database.ts';
import { refusal } from '../support/refusal.ts';

const TLS = path.resolve(import.meta.dirname, '..', 'fixtures', 'tls');
const f = (n: string) => path.join(TLS, n);
/** A home without ~/.postgresql: libpq's default files are absent. */
const HOME = mkdtempSync(path.join(os.tmpdir(), 'fp-pghome-'));
const URL_ = 'postgres://fleetpatch:s3cr3t-pw@127.0.0.1:5432/fleetpatch';

function attempts(url: string, env: Record<string, string> = {}): PgSsl[] {
  return sslAttempts(resolvePostgresTls(url, env, HOME));
}

/** The server certificate of the fixture PKI as tls.connect hands it to checkServerIdentity. */
function peer(): PeerCertificate {
  const c = new X509Certificate(readFileSync(f('server.crt')));
  return { subject: { CN: 'server' }, subjectaltname: c.subjectAltName } as unknown as PeerCertificate;
}

describe("PostgreSQL TLS with libpq's sslmode semantics", () => {
  it('defaults to prefer: TLS without verification first, then plain', () => {
    const [first, second] = attempts(URL_);
    expect(first).toMatchObject({ rejectUnauthorized: false });
    expect(second).toBe(false);
  });

  it.each([
    ['disable', [false]],
    ['allow', [false, { rejectUnauthorized: false }]],
    ['prefer', [{ rejectUnauthorized: false }, false]],
    ['require', [{ rejectUnauthorized: false }]],
  ] as const)('sslmode=%s tries %j', (mode, expected) => {
    expect(attempts(`${URL_}?sslmode=${mode}`)).toMatchObject(expected);
  });

  it('verify-ca trusts the CA file and ignores the host name; verify-full checks the name', () => {
    const [ca] = attempts(`${URL_}?sslmode=verify-ca&sslrootcert=${f('ca.crt')}`) as [Exclude<PgSsl, false>];
    expect(ca.rejectUnauthorized).toBe(true);
    expect(String(ca.ca)).toContain('BEGIN CERTIFICATE');
    expect(ca.checkServerIdentity!('anything', peer())).toBeUndefined();
    const [full] = attempts(`${URL_}?sslmode=verify-full&sslrootcert=${f('ca.crt')}`) as [Exclude<PgSsl, false>];
    expect(full.checkServerIdentity!('127.0.0.1', peer())).toBeUndefined();
    const [wrong] = attempts(`postgres://u@db.example:5432/x?sslmode=verify-full&sslrootcert=${f('ca.crt')}`) as [Exclude<PgSsl, false>];
    expect(wrong.checkServerIdentity!('db.example', peer())?.message).toMatch(/db\.example/);
  });

  it('require with a root CA file behaves as verify-ca (libpq)', () => {
    const [s] = attempts(`${URL_}?sslmode=require&sslrootcert=${f('ca.crt')}`) as [Exclude<PgSsl, false>];
    expect(s.rejectUnauthorized).toBe(true);
  });

  it('takes PGSSLMODE, PGSSLROOTCERT, PGSSLCERT, PGSSLKEY; the URL wins over them', () => {
    const env = { PGSSLMODE: 'verify-full', PGSSLROOTCERT: f('ca.crt'), PGSSLCERT: f('client.crt'), PGSSLKEY: f('client.key') };
    const tls = resolvePostgresTls(URL_, env, HOME);
    expect(tls).toMatchObject({ mode: 'verify-full', modeOrigin: 'PGSSLMODE', host: '127.0.0.1' });
    const [s] = sslAttempts(tls) as [Exclude<PgSsl, false>];
    expect(String(s.cert)).toContain('BEGIN CERTIFICATE');
    expect((s as { key?: Buffer }).key?.toString()).toContain('PRIVATE KEY');
    // The key is not enumerable: no log of the options shows it.
    expect(JSON.stringify(s)).not.toContain('PRIVATE KEY');
    expect(resolvePostgresTls(`${URL_}?sslmode=disable`, env, HOME).mode).toBe('disable');
    // The ssl* parameters are taken out of the URL node-postgres gets (it would read them its own way).
    expect(resolvePostgresTls(`${URL_}?sslmode=require&application_name=x`, {}, HOME).connectionString).toBe('postgres://fleetpatch:s3cr3t-pw@127.0.0.1:5432/fleetpatch?application_name=x');
  });

  it('sslrootcert=system uses the system CAs, for verify-full only', () => {
    const [s] = attempts(`${URL_}?sslmode=verify-full&sslrootcert=system`) as [Exclude<PgSsl, false>];
    expect(s.rejectUnauthorized).toBe(true);
    expect(s.ca).toBeUndefined();
    expect(refusal(() => attempts(`${URL_}?sslmode=require&sslrootcert=system`)).message).toContain('sslrootcert in DATABASE_URL=system needs sslmode=verify-full');
  });

  it.each([
    [`${URL_}?sslmode=bogus`, {}, 'CONFIG_INVALID', 'sslmode in DATABASE_URL="bogus": must be one of disable, allow, prefer, require, verify-ca, verify-full'],
    [URL_, { PGSSLMODE: 'no-verify' }, 'CONFIG_INVALID', 'PGSSLMODE="no-verify": must be one of'],
    [`${URL_}?ssl=true`, {}, 'CONFIG_INVALID', 'the parameter "ssl" is not taken'],
    [`${URL_}?sslmode=verify-ca&sslrootcert=/tmp/ca%00.crt`, {}, 'CONFIG_INVALID', 'sslrootcert in DATABASE_URL: a file path must not hold NUL or line breaks'],
    [`${URL_}?sslmode=`, {}, 'CONFIG_INVALID', 'sslmode is empty'],
    [`${URL_}?sslmode=require&sslmode=disable`, {}, 'CONFIG_INVALID', 'sslmode is given 2 times'],
    [`${URL_}?sslmode=verify-full`, {}, 'TLS_MATERIAL_INVALID', "sslmode=verify-full (sslmode in DATABASE_URL) needs the CA that signs the server's certificate: the default ~/.postgresql/root.crt"],
    [`${URL_}?sslmode=verify-ca&sslrootcert=/nonexistent/root.crt`, {}, 'TLS_MATERIAL_INVALID', 'sslrootcert in DATABASE_URL=/nonexistent/root.crt'],
    [`${URL_}?sslmode=verify-ca&sslrootcert=${f('client.key')}`, {}, 'TLS_MATERIAL_INVALID', 'not a PEM certificate'],
    [`${URL_}?sslmode=require&sslcert=${f('client.crt')}`, {}, 'TLS_MATERIAL_INVALID', 'a client certificate needs its private key'],
    [`${URL_}?sslmode=require&sslkey=${f('client.key')}`, {}, 'TLS_MATERIAL_INVALID', 'a client private key needs its certificate'],
    [`${URL_}?sslmode=require&sslcert=${f('client.crt')}&sslkey=${f('foreign-client.key')}`, {}, 'TLS_MATERIAL_INVALID', 'this private key does not belong to the client certificate'],
    [`${URL_}?sslmode=require&sslcert=/nonexistent/c.crt&sslkey=${f('client.key')}`, {}, 'TLS_MATERIAL_INVALID', 'sslcert in DATABASE_URL=/nonexistent/c.crt: the client certificate file: no such file'],
  ] as [string, Record<string, string>, string, string][])('refuses %s %j', (url, env, code, message) => {
    const e = refusal(() => attempts(url, env));
    expect(e.code).toBe(code);
    expect(e.message).toContain(message);
    expect(e.message).not.toContain('s3cr3t-pw');
    expect(e.message).not.toContain('PRIVATE KEY');
  });

  it('says when a CA or client certificate is out of its validity', () => {
    const tls = resolvePostgresTls(`${URL_}?sslmode=verify-ca&sslrootcert=${f('ca.crt')}`, {}, HOME);
    expect(refusal(() => sslAttempts(tls, new Date('2200-01-01'))).message).toMatch(/the certificate "CN=ca" expired on 2126-/);
  });

  it('explains handshake failures with the sslmode and the CA, the password masked', () => {
    const tls = resolvePostgresTls(`${URL_}?sslmode=verify-full&sslrootcert=${f('ca.crt')}`, {}, HOME);
    const unknownCa = explainPostgresFailure(Object.assign(new Error('self-signed certificate in certificate chain'), { code: 'SELF_SIGNED_CERT_IN_CHAIN' }), URL_, tls, {});
    expect(unknownCa.code).toBe('TLS_REFUSED');
    expect(unknownCa.message).toContain(`the server's certificate is not signed by the CA of sslrootcert in DATABASE_URL=${f('ca.crt')}`);
    expect(unknownCa.message).not.toContain('s3cr3t-pw');
    const name = explainPostgresFailure(Object.assign(new Error("Hostname/IP does not match certificate's altnames"), { code: 'ERR_TLS_CERT_ALTNAME_INVALID' }), URL_, tls, {});
    expect(name.message).toContain('is not for the host "127.0.0.1"');
    expect(explainPostgresFailure(new Error('The server does not support SSL connections'), URL_, tls, {}).message).toContain('the server does not accept TLS, and sslmode=verify-full');
    expect(explainPostgresFailure(new Error('connect ECONNREFUSED 127.0.0.1:5432'), URL_, tls, {}).code).toBe('DATABASE_UNAVAILABLE');
  });
});
