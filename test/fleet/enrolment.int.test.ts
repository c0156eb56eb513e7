/**
 * Enrolment end to end on PostgreSQL: the fleet CA, a join token, `fleetpatch agent enroll`
 * against the real API (xl is a script printing a build-id), HostEnrolled in the host's stream
 * with its chain intact, the enrolled host in the inventory; every refusal of a join token and a
 * CSR; and the worker's mutual TLS against a node TLS server that requires a client certificate:
 * no certificate, another host's, an expired one, a foreign CA.
 */
import { X509Certificate } from 'node:crypto';
import { chmod, mkdtemp, readFile, stat, writeFile, mkdir } from 'node:fs/promises';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Client, Connection } from '@temporalio/client';
import { Agent as UndiciAgent } from 'undici';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { HostAgent } from '../../src/agent/client.ts';
import { apiContextFrom, type ApiContext } from '../../src/app/api-context.ts';
import { openInventory } from '../../src/app/inventory.ts';
import { startApi } from '../../src/api/server.ts';
import { agentEnrollCommand } from '../../src/cli/agent-enroll.ts';
import type { CliIO } from '../../src/cli/io.ts';
import { verifyChains } from '../../src/events/audit/verify.ts';
import { hostStream } from '../../src/events/streams.ts';
import { makeJoinToken } from '../../src/fleet/join-token.ts';
import { initCa, issueHostCertificate, issueWorkerCertificate, type FleetCa } from '../../src/pki/ca.ts';
import { checkCertificate } from '../../src/pki/checks.ts';
import { pinHost } from '../../src/pki/tls.ts';
import { makeCsr } from '../../src/pki/csr.ts';
import { generateKeyPair, privateKeyPem } from '../../src/pki/x509.ts';
import { createLogger } from '../../src/runtime/logger.ts';
import { createTestDatabase, type TestDatabase } from '../support/database.ts';

const BUILD_ID = 'c0ffee'.repeat(6) + 'beef';
const actor = { kind: 'user' as const, id: 'test' };

function captureIO(): CliIO & { lines: string[]; errors: string[] } {
  const lines: string[] = [];
  const errors: string[] = [];
  return { lines, errors, isTTY: false, out: (l) => lines.push(l), err: (l) => errors.push(l) };
}

describe('enrolment over the API, and the mutual TLS it sets up', () => {
  let db: TestDatabase;
  let connection: Connection;
  let ctx: ApiContext;
  let api: { url: string; close: () => Promise<void> };
  let dataDir: string;
  let ca: FleetCa;
  let xl: string;

  const post = async (body: unknown) => {
    const res = await fetch(`${api.url}/api/enroll`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    return { status: res.status, body: (await res.json()) as Record<string, unknown> };
  };
  const csrFor = async (hostId: string) => makeCsr(await generateKeyPair(), hostId);

  beforeAll(async () => {
    db = await createTestDatabase();
    connection = await Connection.connect({ address: inject('temporalAddress') });
    dataDir = await mkdtemp(path.join(os.tmpdir(), 'fp-enrol-'));
    ca = await initCa(dataDir);
    const client = new Client({ connection, namespace: inject('temporalNamespace') });
    ctx = apiContextFrom({ pool: db.pool, logger: createLogger('silent'), client, taskQueue: 'enrol-no-worker', namespace: inject('temporalNamespace'), fleetFile: '/nonexistent/fleet.json', trustedKeys: async () => [], dataDir });
    api = await startApi(ctx, { host: '127.0.0.1', port: 0 });
    xl = path.join(dataDir, 'xl');
    await writeFile(xl, `#!/bin/sh\n[ "$1 $2" = "info build_id" ] || { echo "xl: unexpected $*" >&2; exit 1; }\necho ${BUILD_ID}\n`);
    await chmod(xl, 0o755);
  });

  afterAll(async () => {
    await api?.close();
    await connection?.close();
    await db?.drop();
  });

  it('enrols a host with agent enroll: its key stays on the host, HostEnrolled is in its stream, chain intact; the token is good once', async () => {
    const { token } = await ctx.fleetRegistry.issueJoinToken(ca, 'host-e1', { labels: { region: 'eu-west', rack: 'r1' }, actor });
    const agentDir = path.join(dataDir, 'agent-e1');
    const io = captureIO();
    const code = await agentEnrollCommand(['--join-token', token, '--control', api.url, '--dir', agentDir, '--address', 'https://127.0.0.1:9443', '--xl', xl], io);
    expect(code, io.errors.join('\n')).toBe(0);
    expect(io.lines[0]).toContain('Host host-e1 enrolled');
    const tls = path.join(agentDir, 'tls');
    expect((await stat(path.join(tls, 'key.pem'))).mode & 0o777).toBe(0o600);
    const cert = new X509Certificate(await readFile(path.join(tls, 'cert.pem')));
    expect(checkCertificate(cert, await readFile(path.join(tls, 'ca.pem')), { kind: 'host', id: 'host-e1' })).toEqual({ kind: 'host', id: 'host-e1' });
    expect(cert.subjectAltName).toBe('URI:fleetpatch://host/host-e1, IP Address:127.0.0.1');

    const stream = await ctx.events.readStream(hostStream('host-e1'));
    expect(stream.map((e) => e.event.type)).toEqual(['JoinTokenIssued', 'HostEnrolled']);
    const enrolled = stream[1]!.event;
    expect(enrolled).toMatchObject({ type: 'HostEnrolled', hostId: 'host-e1', labels: { region: 'eu-west', rack: 'r1' }, address: 'https://127.0.0.1:9443', hypervisorBuildId: BUILD_ID });
    expect(enrolled.type === 'HostEnrolled' && enrolled.certificate.fingerprint).toBe((await import('../../src/pki/ca.ts')).certificateFingerprint(cert));
    // Nothing secret is recorded: the token's sha256 only.
    expect(JSON.stringify(stream)).not.toContain(token);
    const report = await verifyChains(ctx.events, { streamId: hostStream('host-e1') });
    expect(report.ok, JSON.stringify(report.breaks)).toBe(true);

    // Used: refused, and the host's files are as they were.
    const before = await readFile(path.join(tls, 'cert.pem'), 'utf8');
    await expect(agentEnrollCommand(['--join-token', token, '--control', api.url, '--dir', agentDir, '--address', 'https://127.0.0.1:9443', '--xl', xl], captureIO())).rejects.toMatchObject({ code: 'JOIN_TOKEN_USED' });
    expect(await readFile(path.join(tls, 'cert.pem'), 'utf8')).toBe(before);
    const used = await post({ joinToken: token, csr: await csrFor('host-e1'), address: 'https://127.0.0.1:9443', hypervisorBuildId: BUILD_ID });
    expect(used).toMatchObject({ status: 409, body: { code: 'JOIN_TOKEN_USED' } });
    expect(String(used.body.reason)).toContain('used at');

    // The inventory: the enrolled host, with its labels, reached at its address.
    const fleet = await openInventory({ pool: db.pool, fleetFile: '/nonexistent/fleet.json', dataDir });
    expect(fleet.hosts).toEqual([{ id: 'host-e1', labels: { region: 'eu-west', rack: 'r1' }, buildId: BUILD_ID, url: 'https://127.0.0.1:9443', source: 'enrolled' }]);

    // A second token renews the certificate (HostCertificateRenewed).
    const renew = await ctx.fleetRegistry.issueJoinToken(ca, 'host-e1', { actor });
    const io3 = captureIO();
    expect(await agentEnrollCommand(['--join-token', renew.token, '--control', api.url, '--dir', agentDir, '--address', 'https://127.0.0.1:9443', '--xl', xl], io3)).toBe(0);
    expect(io3.lines[0]).toContain('renewed its certificate');
    expect((await ctx.events.readStream(hostStream('host-e1'))).map((e) => e.event.type).at(-1)).toBe('HostCertificateRenewed');

    // Retired: out of the inventory, its facts kept.
    await ctx.fleetRegistry.retire('host-e1', 'replaced by host-e9', actor);
    expect((await openInventory({ pool: db.pool, fleetFile: '/nonexistent/fleet.json', dataDir }).catch((e: Error) => e)) instanceof Error).toBe(true);
  });

  it('refuses an expired, malformed, foreign or never-issued token, and a CSR for another host, each by name, recording nothing', async () => {
    const base = { address: 'https://10.0.0.2:9443', hypervisorBuildId: BUILD_ID };
    const expired = await ctx.fleetRegistry.issueJoinToken(ca, 'host-e2', { ttlMs: 1, actor });
    await new Promise((r) => setTimeout(r, 20));
    expect(await post({ ...base, joinToken: expired.token, csr: await csrFor('host-e2') })).toMatchObject({ status: 401, body: { code: 'JOIN_TOKEN_EXPIRED' } });

    expect(await post({ ...base, joinToken: 'fpj.nonsense', csr: await csrFor('host-e2') })).toMatchObject({ status: 400, body: { code: 'JOIN_TOKEN_MALFORMED' } });
    expect(await post({ ...base, joinToken: 'x\u0000y', csr: await csrFor('host-e2') })).toMatchObject({ status: 400 });
    const otherFleet = await initCa(await mkdtemp(path.join(os.tmpdir(), 'fp-enrol-foreign-')));
    const foreign = await post({ ...base, joinToken: makeJoinToken(otherFleet.fingerprint, 'host-e2').token, csr: await csrFor('host-e2') });
    expect(foreign).toMatchObject({ status: 401, body: { code: 'JOIN_TOKEN_FOREIGN' } });
    expect(String(foreign.body.reason)).toContain('another fleet');
    // This fleet's shape, never issued (or edited to name another host).
    expect(await post({ ...base, joinToken: makeJoinToken(ca.fingerprint, 'host-e2').token, csr: await csrFor('host-e2') })).toMatchObject({ status: 401, body: { code: 'JOIN_TOKEN_FOREIGN' } });

    const good = await ctx.fleetRegistry.issueJoinToken(ca, 'host-e3', { actor });
    const other = await post({ ...base, joinToken: good.token, csr: await csrFor('host-e4') });
    expect(other).toMatchObject({ status: 400, body: { code: 'CSR_INVALID' } });
    expect(String(other.body.reason)).toMatch(/"host-e4".*"host-e3"/);
    expect(await post({ ...base, joinToken: good.token, csr: 'not a csr' })).toMatchObject({ status: 400, body: { code: 'CSR_INVALID' } });
    expect(await post({ ...base, joinToken: good.token, csr: 'A'.repeat(12_000) })).toMatchObject({ status: 400, body: { code: 'CSR_INVALID', reason: expect.stringContaining('more than the 8192') } });
    expect(await post({ ...base, address: 'https://h/x?y', joinToken: good.token, csr: await csrFor('host-e3') })).toMatchObject({ status: 400, body: { code: 'ARGUMENT' } });
    // None of that was recorded: the token is still good.
    expect((await ctx.events.readStream(hostStream('host-e3'))).map((e) => e.event.type)).toEqual(['JoinTokenIssued']);
    expect(await post({ ...base, joinToken: good.token, csr: await csrFor('host-e3') })).toMatchObject({ status: 200, body: { hostId: 'host-e3', renewal: false } });
  });

  describe('the worker over mutual TLS', () => {
    let server: https.Server;
    let url: string;
    let served = 0;
    const listen = async (hostKey: string, hostCert: string) => {
      server?.close();
      server = https.createServer({ key: hostKey, cert: hostCert, ca: ca.certPem, requestCert: true, rejectUnauthorized: true }, (_req, res) => {
        served++;
        res.setHeader('content-type', 'text/plain');
        res.end('dump of the host');
      });
      await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
      url = `https://127.0.0.1:${(server.address() as AddressInfo).port}`;
    };
    const hostMaterial = async (hostId: string, opts: { ca?: FleetCa; now?: Date; days?: number } = {}) => {
      const keys = await generateKeyPair();
      const issued = await issueHostCertificate(opts.ca ?? ca, await makeCsr(keys, hostId), hostId, 'https://127.0.0.1:1', { ...(opts.now ? { now: opts.now } : {}), ...(opts.days ? { days: opts.days } : {}) });
      return { key: await privateKeyPem(keys.privateKey), cert: issued.certPem };
    };
    const workerAgent = async (hostId: string, worker?: { key: string; cert: string }) => {
      const issued = await issueWorkerCertificate(ca, 'w1');
      const w: { key: string; cert: string } = worker ?? { key: issued.keyPem, cert: issued.certPem };
      return new HostAgent({ url, hostId, dispatcher: new UndiciAgent({ connect: { key: w.key, cert: w.cert, ca: ca.certPem, checkServerIdentity: pinHost(hostId) } }), timeoutMs: 10_000 });
    };
    const failure = async (p: Promise<unknown>) => p.then(() => ({ code: 'none', message: '' }), (e: { code: string; message: string }) => e);

    afterAll(() => server?.close());

    it('reaches an enrolled host through the inventory with the worker certificate, and the host pinned', async () => {
      const host = await hostMaterial('host-t1');
      await listen(host.key, host.cert);
      const w = await issueWorkerCertificate(ca, 'w1');
      const dir = path.join(dataDir, 'worker-tls');
      await mkdir(dir, { recursive: true });
      await writeFile(path.join(dir, 'key.pem'), w.keyPem, { mode: 0o600 });
      await writeFile(path.join(dir, 'cert.pem'), w.certPem);
      await writeFile(path.join(dir, 'ca.pem'), ca.certPem);
      const { token } = await ctx.fleetRegistry.issueJoinToken(ca, 'host-t1', { actor });
      expect((await post({ joinToken: token, csr: await csrFor('host-t1'), address: url, hypervisorBuildId: BUILD_ID })).status).toBe(200);
      const fleet = await openInventory({ pool: db.pool, fleetFile: '/nonexistent/fleet.json', dataDir });
      expect(await fleet.host('host-t1').dump()).toBe('dump of the host');
      await fleet.close();
    });

    it('is refused without a client certificate, and refuses an agent naming another host, an expired certificate, a foreign CA', async () => {
      const host = await hostMaterial('host-t1');
      await listen(host.key, host.cert);
      const before = served;
      const bare = new HostAgent({ url, hostId: 'host-t1', dispatcher: new UndiciAgent({ connect: { ca: ca.certPem } }), timeoutMs: 10_000 });
      const noCert = await failure(bare.dump());
      expect(['CERTIFICATE_INVALID', 'HOST_UNREACHABLE']).toContain(noCert.code);
      expect(served).toBe(before);

      const wrong = await failure((await workerAgent('host-t2')).dump());
      expect(wrong).toMatchObject({ code: 'HOST_PROTOCOL', message: expect.stringContaining('names host "host-t1", not host "host-t2"') });

      const old = await hostMaterial('host-t1', { now: new Date(Date.now() - 3 * 86_400_000), days: 1 });
      await listen(old.key, old.cert);
      expect(await failure((await workerAgent('host-t1')).dump())).toMatchObject({ code: 'CERTIFICATE_INVALID', message: expect.stringContaining('CERT_HAS_EXPIRED') });

      const otherFleet = await initCa(await mkdtemp(path.join(os.tmpdir(), 'fp-enrol-foreign-')));
      const foreign = await hostMaterial('host-t1', { ca: otherFleet });
      await listen(foreign.key, foreign.cert);
      expect(await failure((await workerAgent('host-t1')).dump())).toMatchObject({ code: 'CERTIFICATE_INVALID' });

      // And the agent's side: a worker certificate of another fleet is refused in the handshake.
      await listen(host.key, host.cert);
      const stranger = await issueWorkerCertificate(otherFleet, 'w1');
      const refused = await failure((await workerAgent('host-t1', { key: stranger.keyPem, cert: stranger.certPem })).dump());
      expect(['CERTIFICATE_INVALID', 'HOST_UNREACHABLE']).toContain(refused.code);
      expect(served).toBe(before);
    });
  });
});
