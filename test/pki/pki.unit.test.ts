import { X509Certificate } from 'node:crypto';
import { mkdtemp, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { caFiles, initCa, issueHostCertificate, issueWorkerCertificate, loadCa } from '../../src/pki/ca.ts';
import { checkCertificate } from '../../src/pki/checks.ts';
import { makeCsr, MAX_CSR_BYTES, readCsr } from '../../src/pki/csr.ts';
import { hostUri, peerRole, sanEntries, workerUri } from '../../src/pki/names.ts';
import { pinHost } from '../../src/pki/tls.ts';
import { generateKeyPair } from '../../src/pki/x509.ts';

const tmp = () => mkdtemp(path.join(os.tmpdir(), 'fp-pki-'));
const code = async (p: Promise<unknown> | (() => unknown)) => {
  try {
    await (typeof p === 'function' ? p() : p);
  } catch (e) {
    return { code: (e as { code?: string }).code, message: (e as Error).message };
  }
  throw new Error('expected a refusal');
};

describe('names', () => {
  it('writes and reads the SAN URIs of hosts and workers', () => {
    expect(hostUri('host-0001')).toBe('fleetpatch://host/host-0001');
    expect(workerUri('w1')).toBe('fleetpatch://worker/w1');
    expect(sanEntries('DNS:a.example, URI:fleetpatch://host/h1, IP Address:10.0.0.1')).toEqual([
      { type: 'DNS', value: 'a.example' },
      { type: 'URI', value: 'fleetpatch://host/h1' },
      { type: 'IP Address', value: '10.0.0.1' },
    ]);
    // node quotes a value holding a comma: it is one entry, not two.
    expect(sanEntries('URI:"fleetpatch://host/a, URI:fleetpatch://worker/x"')).toEqual([{ type: 'URI', value: 'fleetpatch://host/a, URI:fleetpatch://worker/x' }]);
  });
});

describe('the fleet CA', () => {
  it('is made once, private, and issues host certificates from CSRs and worker certificates', async () => {
    const dir = await tmp();
    const ca = await initCa(dir);
    expect(ca.cert.ca).toBe(true);
    expect((await stat(caFiles(dir).key)).mode & 0o777).toBe(0o600);
    expect((await code(initCa(dir))).code).toBe('CA_EXISTS');
    const loaded = await loadCa(dir);
    expect(loaded.fingerprint).toBe(ca.fingerprint);

    const keys = await generateKeyPair();
    const csr = await makeCsr(keys, 'host-0001');
    const host = await issueHostCertificate(loaded, csr, 'host-0001', 'https://10.1.2.3:9443');
    expect(host.cert.subjectAltName).toBe('URI:fleetpatch://host/host-0001, IP Address:10.1.2.3');
    expect(peerRole(host.cert)).toEqual({ kind: 'host', id: 'host-0001' });
    expect(checkCertificate(host.cert, ca.certPem, { kind: 'host', id: 'host-0001' })).toEqual({ kind: 'host', id: 'host-0001' });
    const named = await issueHostCertificate(loaded, csr, 'host-0001', 'https://dom0-1.example:9443');
    expect(named.cert.subjectAltName).toBe('URI:fleetpatch://host/host-0001, DNS:dom0-1.example');

    const worker = await issueWorkerCertificate(loaded, 'w1');
    expect(peerRole(worker.cert)).toEqual({ kind: 'worker', name: 'w1' });
    expect(worker.cert.subject).toBe('CN=worker:w1');
    expect(worker.keyPem).toContain('BEGIN PRIVATE KEY');
  });

  it('refuses a CSR for another host, a malformed or oversized one', async () => {
    const ca = await initCa(await tmp());
    const csr = await makeCsr(await generateKeyPair(), 'host-0002');
    const other = await code(issueHostCertificate(ca, csr, 'host-0001', 'https://10.0.0.1:9443'));
    expect(other).toMatchObject({ code: 'CSR_INVALID' });
    expect(other.message).toContain('"host-0002"');
    expect(other.message).toContain('"host-0001"');
    expect((await code(readCsr(''))).code).toBe('CSR_INVALID');
    expect((await code(readCsr('x'.repeat(MAX_CSR_BYTES + 1)))).message).toContain('more than');
    expect((await code(readCsr('-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n'))).message).toContain('PKCS#10');
    // A CSR whose signature was tampered with does not verify.
    const lines = csr.trim().split('\n');
    const body = Buffer.from(lines.slice(1, -1).join(''), 'base64');
    body[body.length - 5] = body[body.length - 5]! ^ 0xff;
    const tampered = `${lines[0]}\n${body.toString('base64')}\n${lines.at(-1)}\n`;
    expect((await code(readCsr(tampered))).code).toBe('CSR_INVALID');
  });

  it('checks expiry, the chain and the names', async () => {
    const ca = await initCa(await tmp());
    const foreign = await initCa(await tmp());
    const csr = await makeCsr(await generateKeyPair(), 'host-0001');
    const cert = await issueHostCertificate(ca, csr, 'host-0001', 'https://10.0.0.1:9443', { days: 1 });
    const later = new Date(Date.now() + 2 * 86_400_000);
    expect(await code(() => checkCertificate(cert.cert, ca.certPem, { kind: 'host', id: 'host-0001' }, later))).toMatchObject({ code: 'CERTIFICATE_INVALID', message: expect.stringContaining('expired') });
    expect(await code(() => checkCertificate(cert.cert, foreign.certPem, { kind: 'host', id: 'host-0001' }))).toMatchObject({ code: 'CERTIFICATE_INVALID', message: expect.stringContaining('foreign CA') });
    expect(await code(() => checkCertificate(cert.cert, ca.certPem, { kind: 'host', id: 'host-0002' }))).toMatchObject({ message: expect.stringContaining('not host "host-0002"') });
    expect(await code(() => checkCertificate(cert.cert, ca.certPem, { kind: 'worker' }))).toMatchObject({ message: expect.stringContaining('not a worker') });
    expect(await code(() => checkCertificate('garbage', ca.certPem))).toMatchObject({ code: 'CERTIFICATE_INVALID' });
  });

  it('pins the expected host in the TLS identity check', async () => {
    const ca = await initCa(await tmp());
    const cert = await issueHostCertificate(ca, await makeCsr(await generateKeyPair(), 'host-0001'), 'host-0001', 'https://10.0.0.1:9443');
    const worker = await issueWorkerCertificate(ca, 'w');
    const peer = (c: X509Certificate) => ({ raw: c.raw }) as never;
    expect(pinHost('host-0001')('10.0.0.1', peer(cert.cert))).toBeUndefined();
    expect(pinHost('host-0002')('10.0.0.1', peer(cert.cert))?.message).toBe('the agent\'s certificate names host "host-0001", not host "host-0002"');
    expect(pinHost('host-0001')('10.0.0.1', peer(worker.cert))?.message).toContain('worker "w"');
  });
});
