import { X509Certificate } from 'node:crypto';
import { mkdtemp, readFile, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { agentEnrollCommand } from '../../src/cli/agent-enroll.ts';
import { caCommand } from '../../src/cli/ca.ts';
import { parseLabels } from '../../src/cli/hosts.ts';
import type { CliIO } from '../../src/cli/io.ts';
import { peerRole } from '../../src/pki/names.ts';
import { checkCertificate } from '../../src/pki/checks.ts';

const io = (): CliIO & { lines: string[] } => {
  const lines: string[] = [];
  return { lines, isTTY: false, out: (l) => lines.push(l), err: (l) => lines.push(l) };
};

describe('fleetpatch ca', () => {
  const saved = process.env.FLEETPATCH_DATA_DIR;
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'fp-ca-cli-'));
    process.env.FLEETPATCH_DATA_DIR = dir;
  });
  afterEach(() => {
    if (saved === undefined) delete process.env.FLEETPATCH_DATA_DIR;
    else process.env.FLEETPATCH_DATA_DIR = saved;
  });

  it('inits the CA once and issues a worker certificate into the worker directory', async () => {
    expect(await caCommand(['init'], io())).toBe(0);
    await expect(caCommand(['init'], io())).rejects.toMatchObject({ code: 'CA_EXISTS' });
    expect(await caCommand(['issue', '--worker', 'w1'], io())).toBe(0);
    const out = path.join(dir, 'worker-tls');
    expect((await stat(path.join(out, 'key.pem'))).mode & 0o777).toBe(0o600);
    const cert = new X509Certificate(await readFile(path.join(out, 'cert.pem')));
    expect(peerRole(cert)).toEqual({ kind: 'worker', name: 'w1' });
    expect(checkCertificate(cert, await readFile(path.join(out, 'ca.pem')), { kind: 'worker', name: 'w1' })).toEqual({ kind: 'worker', name: 'w1' });
    await expect(caCommand(['issue', '--worker', 'w1;rm -rf /'], io())).rejects.toMatchObject({ code: 'USAGE' });
    await expect(caCommand(['issue'], io())).rejects.toMatchObject({ code: 'USAGE' });
  });

  it('refuses to issue without a CA, naming the command that makes one', async () => {
    await expect(caCommand(['issue', '--worker', 'w1'], io())).rejects.toMatchObject({ code: 'CA_MISSING', message: expect.stringContaining('fleetpatch ca init') });
  });
});

describe('fleetpatch hosts and agent enroll arguments', () => {
  it('reads labels as k=v, k= removing', () => {
    expect(parseLabels(['region=eu', 'rack=r1=x'], 'hosts enroll')).toEqual({ region: 'eu', rack: 'r1=x' });
    expect(parseLabels(['rack='], 'hosts label', true)).toEqual({ rack: null });
    expect(() => parseLabels(['rack='], 'hosts enroll')).toThrow(/needs a value/);
    expect(() => parseLabels(['=x'], 'hosts enroll')).toThrow(/k=v/);
  });

  it('refuses a malformed join token before it makes a key or asks anyone', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'fp-agent-enroll-'));
    await expect(agentEnrollCommand(['--join-token', 'fp_not-a-join-token', '--control', 'http://127.0.0.1:1', '--dir', dir], io())).rejects.toMatchObject({ code: 'JOIN_TOKEN_MALFORMED' });
    await expect(stat(path.join(dir, 'tls'))).rejects.toMatchObject({ code: 'ENOENT' });
    await expect(agentEnrollCommand(['--control', 'http://127.0.0.1:1'], io())).rejects.toMatchObject({ code: 'USAGE' });
  });
});
