/**
 * The dom0 agent in process, over mutual TLS (certificates made here with openssl), driving a
 * small stateful double of xen-livepatch and xl (fixtures/fake-xen.mjs), talked to by the
 * project's own HostAgent: the contract's routes, the host's own gate (signature, size, name,
 * .modinfo) before any tool runs, its journal, the peers it refuses, and tools that hang, print
 * garbage, flood or die. Spawns openssl and the fake tools, hence this tier.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Agent as UndiciAgent } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HostAgent } from '../../src/agent/client.ts';
import { FleetpatchError, XenError } from '../../src/errors.ts';
import { startAgent, type RunningAgent } from '../../src/host/agent-server.ts';
import { loadAgentTls } from '../../src/host/agent-tls.ts';
import { readJournal } from '../../src/host/host-journal.ts';
import { DEFAULT_IMAGE, buildPayload, generateSigningKey, parsePayload, publicKeyToFile, signPayload, type SigningKey } from '../../src/payload/index.ts';

const FAKE = path.join(path.dirname(fileURLToPath(import.meta.url)), 'fixtures', 'fake-xen.mjs');
const HV = DEFAULT_IMAGE.buildIdHex;
const KEY: SigningKey = generateSigningKey();
const OTHER_KEY: SigningKey = generateSigningKey();

let root: string;
let dir: string;
let stateFile: string;
let uploadDir: string;
let agent: RunningAgent;
let client: HostAgent;
const pki: Record<string, string> = {};

function openssl(args: string[]): void {
  execFileSync('openssl', args, { stdio: 'pipe' });
}

/** A CA, and certificates it issues: EC P-256, as the fleet's conventions say. */
function makeCa(name: string): void {
  openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', `${root}/${name}.key`, '-out', `${root}/${name}.pem`, '-days', '2', '-subj', `/CN=${name}`,
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign']);
}
function issue(ca: string, name: string, cn: string, san: string, eku: string): void {
  openssl(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', `${root}/${name}.key`, '-out', `${root}/${name}.csr`, '-subj', `/CN=${cn}`]);
  const ext = `${root}/${name}.ext`;
  execFileSync('sh', ['-c', `printf 'subjectAltName=${san}\\nextendedKeyUsage=${eku}\\n' > '${ext}'`]);
  openssl(['x509', '-req', '-in', `${root}/${name}.csr`, '-CA', `${root}/${ca}.pem`, '-CAkey', `${root}/${ca}.key`, '-CAcreateserial', '-out', `${root}/${name}.pem`, '-days', '1', '-extfile', ext]);
}

async function readPki(name: string) {
  return { cert: await readFile(`${root}/${name}.pem`), key: await readFile(`${root}/${name}.key`) };
}

async function clientWith(name: string | null, ca = 'ca'): Promise<HostAgent> {
  const id = name ? await readPki(name) : null;
  const dispatcher = new UndiciAgent({
    connect: {
      ca: await readFile(`${root}/${ca}.pem`),
      ...(id ? { cert: id.cert, key: id.key } : {}),
      // The agent's certificate names its host by URI; the address is an IP.
      checkServerIdentity: () => undefined,
    },
  });
  return new HostAgent({ url: agent.url, hostId: 'host-a', token: 'unused-over-mtls', dispatcher, timeoutMs: 30_000 });
}

interface Facts {
  buildId: string;
  depends: string;
  xenDepends: string;
  functions: string[];
  metadata: string[];
  extra?: string;
  data?: boolean;
}
async function fake(): Promise<{ payloads: { name: string; state: string }[]; runs: number; stack: string[]; mode?: Record<string, string>; facts: Record<string, Facts>; failApply?: string }> {
  return JSON.parse(await readFile(stateFile, 'utf8'));
}
async function setFake(change: (s: Awaited<ReturnType<typeof fake>>) => void): Promise<void> {
  const s = await fake();
  change(s);
  await writeFile(stateFile, JSON.stringify(s));
}

/** A payload built here, its facts told to the fake (which cannot read ELF), and its signature header. */
async function payload(name: string, opts: { depends?: string; extra?: string; modinfo?: string[]; key?: SigningKey; data?: boolean } = {}) {
  const bytes = buildPayload(
    { name, funcs: [{ target: 'xen_extra_version', returns: opts.extra ?? `${name} says hi` }], ...(opts.depends ? { depends: opts.depends } : {}), ...(opts.modinfo ? { modinfo: opts.modinfo } : {}), writableData: opts.data ? 16 : 0 },
    { image: DEFAULT_IMAGE },
  );
  const p = parsePayload(bytes);
  const sha = createHash('sha256').update(bytes).digest('hex');
  await setFake((s) => {
    s.facts[sha] = { buildId: p.buildIdHex, depends: p.dependsHex, xenDepends: p.xenDependsHex!, functions: ['xen_extra_version'], metadata: p.modinfo.map((m) => m.raw), extra: opts.extra ?? `${name} says hi`, data: Boolean(opts.data) };
  });
  return { bytes, buildId: p.buildIdHex, signature: signPayload(bytes, opts.key ?? KEY, p.buildIdHex) };
}

async function refusal(p: Promise<unknown>): Promise<FleetpatchError> {
  const e = await p.then(() => undefined, (x: unknown) => x);
  expect(e).toBeInstanceOf(FleetpatchError);
  expect((e as Error).message).not.toMatch(/\n/);
  return e as FleetpatchError;
}

const uploadLeftovers = () => readdirSync(uploadDir).filter((f) => f.startsWith('fleetpatch-upload-'));

beforeAll(async () => {
  root = await mkdtemp(path.join(os.tmpdir(), 'fp-agent-'));
  makeCa('ca');
  makeCa('foreign');
  issue('ca', 'host-a', 'host-a', 'URI:fleetpatch://host/host-a,DNS:localhost,IP:127.0.0.1', 'serverAuth');
  issue('ca', 'host-b', 'host-b', 'URI:fleetpatch://host/host-b,IP:127.0.0.1', 'serverAuth,clientAuth');
  issue('ca', 'worker', 'worker:w1', 'URI:fleetpatch://worker/w1', 'clientAuth');
  issue('foreign', 'intruder', 'worker:w1', 'URI:fleetpatch://worker/w1', 'clientAuth');
  dir = path.join(root, 'agent');
  uploadDir = path.join(root, 'tmp');
  await mkdir(path.join(dir, 'tls'), { recursive: true });
  await mkdir(uploadDir);
  await writeFile(path.join(dir, 'tls', 'key.pem'), await readFile(`${root}/host-a.key`), { mode: 0o600 });
  await writeFile(path.join(dir, 'tls', 'cert.pem'), await readFile(`${root}/host-a.pem`));
  await writeFile(path.join(dir, 'tls', 'ca.pem'), await readFile(`${root}/ca.pem`));
  await writeFile(path.join(dir, 'trusted-keys.json'), JSON.stringify([publicKeyToFile(KEY)]));
  await writeFile(path.join(root, 'boot_id'), '0f6e2a4c-1111-4222-8333-444455556666\n');
  await writeFile(path.join(root, 'stat'), 'cpu  1 2 3\nbtime 1765150000\nprocesses 1\n');
  stateFile = path.join(root, 'fake-state.json');
  await writeFile(stateFile, JSON.stringify({ hypervisor: HV, extra: '-unstable', payloads: [], stack: [], facts: {}, dmesg: [] }));
  for (const t of ['xen-livepatch', 'xl']) {
    await writeFile(path.join(root, t), `#!/bin/sh\nexec '${process.execPath}' '${FAKE}' '${stateFile}' ${t} "$@"\n`);
    await chmod(path.join(root, t), 0o755);
  }
  const tls = await loadAgentTls(dir);
  expect(tls.hostId).toBe('host-a');
  agent = await startAgent({
    dir, hostId: tls.hostId, host: '127.0.0.1', port: 0, tls,
    tools: { xenLivepatch: path.join(root, 'xen-livepatch'), xl: path.join(root, 'xl'), uploadDir, timeoutMs: 20_000 },
    bootIdFile: path.join(root, 'boot_id'), statFile: path.join(root, 'stat'),
  });
  client = await clientWith('worker');
}, 120_000);

afterAll(async () => {
  await agent?.close();
  if (root) await rm(root, { recursive: true, force: true });
});

describe('the agent over mutual TLS, driving the tools', () => {
  it('lists an empty host with its hypervisor build-id and boot identity', async () => {
    const l = await client.listAll();
    expect(l).toMatchObject({ host: 'host-a', hypervisor: { buildId: HV }, total: 0, entries: [], appliedStack: [], pending: null, boot: { id: '0f6e2a4c-1111-4222-8333-444455556666', at: new Date(1765150000_000).toISOString() } });
  });

  it('uploads a signed payload, applies it with the wait, and reports what xl info says', async () => {
    const hello = await payload('hello', { extra: 'Hello World' });
    const entry = await client.upload('hello', hello.bytes, { signature: hello.signature });
    expect(entry).toMatchObject({ name: 'hello', state: 'CHECKED', rc: 0, buildId: hello.buildId, depends: HV, facts: 'uploaded', functions: ['xen_extra_version'] });
    expect(entry.dependencyCheck).toMatchObject({ kind: 'xen_depends', outcome: 'satisfied', found: HV });
    expect(uploadLeftovers()).toEqual([]);
    const { answer, status } = await client.actAndWait('hello', 'apply', { waitMs: 5_000 });
    expect(answer.dependencyCheck).toMatchObject({ kind: 'depends', against: 'hypervisor', outcome: 'satisfied' });
    expect(status).toMatchObject({ name: 'hello', state: 'APPLIED', rc: 0 });
    const l = await client.listAll();
    expect(l.appliedStack).toEqual([{ name: 'hello', buildId: hello.buildId }]);
    expect(await client.call('xen_extra_version')).toMatchObject({ result: 'Hello World', kind: 'string', providedBy: { name: 'hello', buildId: hello.buildId } });
    expect(await client.call('xen_frobnicate')).toMatchObject({ kind: 'undefined', result: null });
  });

  it('stacks a payload on it and refuses one that depends on something else, naming both build-ids', async () => {
    const hello = (await client.listAll()).appliedStack[0]!;
    const bye = await payload('bye', { depends: hello.buildId });
    await client.upload('bye', bye.bytes, { signature: bye.signature });
    const { status } = await client.actAndWait('bye', 'apply', { waitMs: 5_000 });
    expect(status).toMatchObject({ state: 'APPLIED', rc: 0 });
    expect((await client.listAll()).appliedStack.map((s) => s.name)).toEqual(['hello', 'bye']);
    const stray = await payload('stray', { depends: hello.buildId });
    await client.upload('stray', stray.bytes, { signature: stray.signature });
    const e = await refusal(client.action('stray', 'apply'));
    expect(e).toBeInstanceOf(XenError);
    expect(e.code).toBe('EINVAL');
    expect(e.message).toMatch(/stray: check against bye build-id failed: it depends on build-id [0-9a-f]+, but the top of the stack is bye/);
    expect((e.details as { dependencyCheck?: { outcome: string } }).dependencyCheck?.outcome).toBe('mismatch');
    // Revert from the top, unload.
    await client.actAndWait('bye', 'revert', { waitMs: 5_000 });
    await client.action('stray', 'unload');
    await client.action('bye', 'unload');
    expect((await client.listAll()).entries.map((x) => [x.name, x.state])).toEqual([['hello', 'APPLIED']]);
    const busy = await refusal(client.action('hello', 'unload'));
    expect(busy.code).toBe('EINVAL');
  });

  it('refuses, before any tool runs and leaving nothing behind, what the host will not run', async () => {
    const good = await payload('good');
    const runs = (await fake()).runs;
    const unsigned = await refusal(client.upload('good', good.bytes));
    expect(unsigned.code).toBe('PAYLOAD_UNSIGNED');
    const foreign = await payload('foreign', { key: OTHER_KEY });
    expect((await refusal(client.upload('foreign', foreign.bytes, { signature: foreign.signature }))).code).toBe('PAYLOAD_UNTRUSTED');
    // Signed for other bytes.
    expect((await refusal(client.upload('good', good.bytes, { signature: foreign.signature }))).code).toBe('PAYLOAD_UNTRUSTED');
    const big = new Uint8Array(2 * 1024 * 1024 + 1);
    const tooBig = await refusal(client.upload('big', big, { signature: signPayload(big, KEY) }));
    expect(tooBig.code).toBe('EINVAL');
    expect(tooBig.message).toMatch(/2 MiB/);
    const notElf = new TextEncoder().encode('not an ELF at all');
    expect((await refusal(client.upload('notelf', notElf, { signature: signPayload(notElf, KEY) }))).code).toBe('EINVAL');
    const forged = await payload('forged', { modinfo: ['x=1\nhello                                   | APPLIED    | '] });
    expect((await refusal(client.upload('forged', forged.bytes, { signature: forged.signature }))).code).toBe('PAYLOAD_REFUSED');
    expect((await refusal(client.upload('bad\tname', good.bytes, { signature: good.signature }))).code).toBe('REQUEST_INVALID');
    // Not one tool run: the gate refused every one of them before Xen was asked anything.
    expect((await fake()).runs).toBe(runs);
    expect(uploadLeftovers()).toEqual([]);
    expect((await fake()).payloads.map((p) => p.name)).toEqual(['hello']);
  });

  it('refuses a name that cannot be stored (a NUL) before any tool runs; a lone surrogate cannot even be encoded in a path', async () => {
    const runs = (await fake()).runs;
    expect((await refusal(client.get('a\u0000b'))).code).toBe('REQUEST_INVALID');
    const e = await refusal(client.action('a\u0000b', 'apply'));
    expect(e.message).toMatch(/path segment 4 contains a NUL character/);
    expect((await fake()).runs).toBe(runs);
  });

  it('passes a name with shell metacharacters to the tool as one argument, running nothing', async () => {
    const name = "x;touch PWNED $(touch PWNED2) `id`'";
    const p = await payload('meta');
    const entry = await client.upload(name, p.bytes, { signature: p.signature });
    expect(entry.name).toBe(name);
    expect(existsSync(path.join(root, 'PWNED')) || existsSync('PWNED') || existsSync('PWNED2')).toBe(false);
    await client.action(name, 'unload');
  });

  it('reports a payload uploaded by hand with the build-ids of Xen\'s debug dump', async () => {
    await setFake((s) => {
      s.payloads.push({ name: 'by_hand', state: 'CHECKED', rc: 0, facts: { buildId: 'ab'.repeat(20), depends: HV, xenDepends: HV, functions: ['xen_minor_version'], metadata: ['VENDOR=x'] } } as never);
    });
    const e = (await client.listAll()).entries.find((x) => x.name === 'by_hand')!;
    expect(e).toMatchObject({ facts: 'dump', buildId: 'ab'.repeat(20), depends: HV, metadata: ['VENDOR=x'], functions: ['xen_minor_version'] });
    await setFake((s) => {
      s.payloads = s.payloads.filter((p) => p.name !== 'by_hand');
    });
  });

  it('journals every request with its worker, every tool run and every refusal, fsynced', async () => {
    const j = await readJournal(agent.journalFile);
    const upload = j.find((x) => x.kind === 'request' && x.method === 'POST' && x.path === '/hosts/host-a/livepatch/hello')!;
    expect(upload).toMatchObject({ who: 'worker:w1' });
    const req = (upload as { req: number }).req;
    const tool = j.find((x) => x.kind === 'tool' && x.req === req && x.argv[1] === 'upload') as { argv: string[]; exitCode: number; stdout: string };
    expect(tool.argv.slice(1, 3)).toEqual(['upload', 'hello']);
    expect(tool.exitCode).toBe(0);
    expect(tool.stdout).toMatch(/completed/);
    expect(j.some((x) => x.kind === 'tool' && x.argv[1] === 'apply' && x.argv[2] === 'hello')).toBe(true);
    expect(j.some((x) => x.kind === 'refusal' && x.code === 'PAYLOAD_UNSIGNED')).toBe(true);
    expect(j.some((x) => x.kind === 'unreadable')).toBe(false);
  });

  it('refuses a client without a certificate (401), with a host\'s (403), or of another CA (401), changing nothing', async () => {
    const before = (await fake()).runs;
    expect((await refusal((await clientWith(null)).listAll())).code).toBe('HOST_UNAUTHORIZED');
    const asHost = await refusal((await clientWith('host-b')).upload('x', new Uint8Array(10)));
    expect(asHost.code).toBe('HOST_FORBIDDEN');
    expect(asHost.message).toMatch(/host host-b/);
    const intruder = await refusal((await clientWith('intruder')).listAll());
    expect(intruder.code).toBe('HOST_UNAUTHORIZED');
    expect((await fake()).runs).toBe(before);
  });

  it('keeps what it learned across its own restart: the facts are on disk, the list is the truth', async () => {
    const before = await client.listAll();
    expect(before.entries.find((e) => e.name === 'hello')).toMatchObject({ facts: 'uploaded' });
    await agent.close();
    const tls = await loadAgentTls(dir);
    agent = await startAgent({
      dir, hostId: tls.hostId, host: '127.0.0.1', port: 0, tls,
      tools: { xenLivepatch: path.join(root, 'xen-livepatch'), xl: path.join(root, 'xl'), uploadDir, timeoutMs: 20_000 },
      bootIdFile: path.join(root, 'boot_id'), statFile: path.join(root, 'stat'),
    });
    client = await clientWith('worker');
    const after = await client.listAll();
    expect(after.entries).toEqual(before.entries);
    expect(after.appliedStack).toEqual(before.appliedStack);
    expect(after.boots).toBe(before.boots);
  });

  it('does not reboot a real host, and drops what it learned when the host rebooted', async () => {
    expect((await refusal(client.reboot())).code).toBe('AGENT_UNSUPPORTED');
    const before = await client.listAll();
    await writeFile(path.join(root, 'boot_id'), '0f6e2a4c-2222-4222-8333-444455556666\n');
    await setFake((s) => {
      s.payloads = [];
      s.stack = [];
    });
    const after = await client.listAll();
    expect(after.boots).toBe(before.boots + 1);
    expect(after.boot.id).not.toBe(before.boot.id);
    expect(after.entries).toEqual([]);
  });

  it('makes one clear error of a tool that prints garbage, floods or dies', async () => {
    for (const [mode, code] of [['garbage', 'HOST_TOOL_OUTPUT'], ['flood', 'HOST_TOOL_OUTPUT'], ['segv', 'HOST_TOOL_FAILED']] as const) {
      await setFake((s) => {
        s.mode = { 'xen-livepatch': mode };
      });
      expect((await refusal(client.listAll())).code).toBe(code);
    }
    await setFake((s) => {
      delete s.mode;
    });
    expect((await client.listAll()).total).toBe(0);
  });
});

describe('a tool that hangs', () => {
  it('is killed after its timeout and is HOST_TOOL_TIMEOUT', async () => {
    const d2 = path.join(root, 'agent2');
    await mkdir(d2);
    await writeFile(path.join(d2, 'trusted-keys.json'), JSON.stringify(publicKeyToFile(KEY)));
    await writeFile(path.join(d2, 'token'), 't'.repeat(32));
    const a2 = await startAgent({
      dir: d2, hostId: 'host-a', host: '127.0.0.1', port: 0, tls: null, token: 't'.repeat(32),
      tools: { xenLivepatch: path.join(root, 'xen-livepatch'), xl: path.join(root, 'xl'), uploadDir, timeoutMs: 1_500 },
      bootIdFile: path.join(root, 'boot_id'), statFile: path.join(root, 'stat'),
    });
    try {
      const c = new HostAgent({ url: a2.url, hostId: 'host-a', token: 't'.repeat(32), timeoutMs: 30_000 });
      await setFake((s) => {
        s.mode = { xl: 'hang' };
      });
      expect((await refusal(c.listAll())).code).toBe('HOST_TOOL_TIMEOUT');
      await setFake((s) => {
        delete s.mode;
      });
      expect((await refusal(new HostAgent({ url: a2.url, hostId: 'host-a', token: 'u'.repeat(32) }).listAll())).code).toBe('HOST_FORBIDDEN');
    } finally {
      await a2.close();
    }
  });

  it('plain HTTP is for loopback only', async () => {
    await expect(startAgent({ dir, hostId: 'host-a', host: '0.0.0.0', port: 0, tls: null, token: 't'.repeat(32), tools: {} })).rejects.toThrow(/loopback only/);
  });
});
