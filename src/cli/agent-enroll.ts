/**
 * `fleetpatch agent enroll --join-token T --control URL [--dir D] [--address URL] [--xl PATH]`,
 * run on the host: makes the host's key pair (the private key never leaves <dir>/tls/key.pem,
 * 0600), reads the hypervisor's build-id with `xl info build_id`, sends a CSR naming the host
 * the token is for, with its address and build-id, to the control plane's POST /api/enroll,
 * checks the certificate it gets (the fleet CA's, naming this host, for this key) and only then
 * puts key, certificate and CA in place together: a refused or broken enrolment leaves the files
 * that were there (an enrolled host's working certificate) as they were.
 */
import { X509Certificate, createPrivateKey } from 'node:crypto';
import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Agent as UndiciAgent, request } from 'undici';
import { FleetpatchError, isErrorCode } from '../errors.ts';
import { printable } from '../domain/text.ts';
import { joinTokenHostId } from '../fleet/join-token.ts';
import { checkCertificate } from '../pki/checks.ts';
import { makeCsr } from '../pki/csr.ts';
import { generateKeyPair, privateKeyPem } from '../pki/x509.ts';
import { XenTools } from '../host/xen-tools.ts';
import { parseCommandArgs } from './args.ts';
import type { CliIO, Command } from './io.ts';

export const DEFAULT_AGENT_DIR = '/var/lib/fleetpatch-agent';
const DEFAULT_AGENT_PORT = 9443;
/** The answer is a certificate and a CA: a few KiB. More is not an answer of ours. */
const MAX_ANSWER_BYTES = 64 * 1024;

function usage(io: CliIO): void {
  io.out('Usage: fleetpatch agent enroll --join-token T --control URL [--dir D] [--address URL] [--xl PATH] [--control-ca FILE]');
  io.out('');
  io.out('Joins this host to the fleet (docs/enrolment.md): makes its key pair in <dir>/tls, sends a CSR with');
  io.out("the hypervisor's build-id (xl info build_id) to the control plane, writes tls/cert.pem and tls/ca.pem.");
  io.out(`  --dir D          the agent's directory (default ${DEFAULT_AGENT_DIR})`);
  io.out(`  --address URL    where workers reach this agent (default https://${os.hostname()}:${DEFAULT_AGENT_PORT})`);
  io.out('  --xl PATH        the xl tool (default /usr/sbin/xl)');
  io.out("  --control-ca F   the CA that signed the control plane's HTTPS certificate, if not a public one");
  io.out('Run it again with a new join token to renew the certificate.');
}

interface EnrollAnswer {
  hostId: string;
  certificate: string;
  ca: string;
  notAfter: string;
  fingerprint: string;
  renewal: boolean;
}

async function post(control: string, body: unknown, caFile: string | undefined): Promise<EnrollAnswer> {
  let url: URL;
  try {
    url = new URL('/api/enroll', control);
  } catch {
    throw new FleetpatchError('USAGE', `agent enroll: --control must be the control plane's URL (https://host:port), not ${JSON.stringify(control.slice(0, 80))}`);
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') throw new FleetpatchError('USAGE', `agent enroll: --control must be an http(s) URL, not ${url.protocol}`);
  const dispatcher = caFile ? new UndiciAgent({ connect: { ca: await readFile(caFile, 'utf8') } }) : undefined;
  let res;
  try {
    res = await request(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json' },
      body: JSON.stringify(body),
      headersTimeout: 30_000,
      bodyTimeout: 30_000,
      ...(dispatcher ? { dispatcher } : {}),
    });
  } catch (e) {
    const err = e as NodeJS.ErrnoException & { cause?: NodeJS.ErrnoException };
    throw new FleetpatchError('HOST_UNREACHABLE', `the control plane at ${url.origin} cannot be reached: ${err.cause?.code ?? err.code ?? ''} ${printable(err.cause?.message ?? err.message)}`.trim(), { control: url.origin });
  } finally {
    void dispatcher?.close();
  }
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of res.body as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_ANSWER_BYTES) {
      res.body.destroy();
      throw new FleetpatchError('HOST_PROTOCOL', `the control plane at ${url.origin} answered more than ${MAX_ANSWER_BYTES} bytes to POST /api/enroll`);
    }
    chunks.push(chunk);
  }
  let doc: unknown;
  try {
    doc = JSON.parse(Buffer.concat(chunks).toString('utf8'));
  } catch {
    throw new FleetpatchError('HOST_PROTOCOL', `the control plane at ${url.origin} answered POST /api/enroll with HTTP ${res.statusCode} and no JSON: is --control the fleetpatch API?`);
  }
  const d = doc as Record<string, unknown>;
  if (res.statusCode !== 200) {
    // The API's refusal in the catalogue's shape: the same code here, the reason in its words.
    const code = typeof d.code === 'string' && isErrorCode(d.code) ? d.code : 'HOST_PROTOCOL';
    throw new FleetpatchError(code, `the control plane refused the enrolment: ${printable(String(d.reason ?? `HTTP ${res.statusCode}`)).slice(0, 1000)}`, { status: res.statusCode });
  }
  if (typeof d.hostId !== 'string' || typeof d.certificate !== 'string' || typeof d.ca !== 'string' || typeof d.notAfter !== 'string' || typeof d.renewal !== 'boolean' || typeof d.fingerprint !== 'string') {
    throw new FleetpatchError('HOST_PROTOCOL', `the control plane's answer to POST /api/enroll lacks the certificate, the CA or the host id`);
  }
  return d as unknown as EnrollAnswer;
}

export const agentEnrollCommand: Command = async (args, io) => {
  const { values, positionals } = parseCommandArgs(
    args,
    { 'join-token': { type: 'string' }, control: { type: 'string' }, dir: { type: 'string' }, address: { type: 'string' }, xl: { type: 'string' }, 'control-ca': { type: 'string' }, json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } },
    'agent enroll',
  );
  if (values.help) {
    usage(io);
    return 0;
  }
  if (positionals.length) throw new FleetpatchError('USAGE', `agent enroll: unexpected argument ${JSON.stringify(positionals[0]!.slice(0, 60))}`);
  const token = values['join-token'];
  if (!token) throw new FleetpatchError('USAGE', 'agent enroll: --join-token T is required (fleetpatch hosts enroll <id> prints it)');
  if (!values.control) throw new FleetpatchError('USAGE', "agent enroll: --control URL is required (the control plane's API)");
  // A malformed token is refused here, before a key is made or anyone is asked.
  const hostId = joinTokenHostId(token);
  const dir = path.resolve(values.dir ?? DEFAULT_AGENT_DIR);
  const address = values.address ?? `https://${os.hostname()}:${DEFAULT_AGENT_PORT}`;
  const tools = new XenTools(values.xl ? { xl: path.resolve(values.xl) } : {});
  const hypervisorBuildId = await tools.buildId();

  const tls = path.join(dir, 'tls');
  await mkdir(tls, { recursive: true, mode: 0o700 });
  const keys = await generateKeyPair();
  const keyPem = await privateKeyPem(keys.privateKey);
  const csr = await makeCsr(keys, hostId);
  const answer = await post(values.control, { joinToken: token, csr, address, hypervisorBuildId }, values['control-ca']);

  // What came back must be this host's certificate, for this key, from the CA that came with it.
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(answer.certificate);
  } catch (e) {
    throw new FleetpatchError('HOST_PROTOCOL', `the control plane sent a certificate that cannot be read: ${(e as Error).message}`);
  }
  checkCertificate(cert, answer.ca, { kind: 'host', id: hostId });
  if (!cert.checkPrivateKey(createPrivateKey(keyPem))) throw new FleetpatchError('HOST_PROTOCOL', 'the control plane sent a certificate for another key than the one this host made');

  // All three written aside, then renamed into place: never a key without its certificate.
  const tmp = `.enroll-${process.pid}`;
  const files = { 'key.pem': keyPem, 'cert.pem': answer.certificate, 'ca.pem': answer.ca };
  try {
    for (const [name, text] of Object.entries(files)) await writeFile(path.join(tls, `${name}${tmp}`), text, { mode: name === 'key.pem' ? 0o600 : 0o644, flag: 'wx' });
    for (const name of Object.keys(files)) await rename(path.join(tls, `${name}${tmp}`), path.join(tls, name));
  } catch (e) {
    await Promise.all(Object.keys(files).map((name) => rm(path.join(tls, `${name}${tmp}`), { force: true })));
    throw new FleetpatchError('FILE_ERROR', `cannot write the host's TLS files in ${tls}: ${(e as Error).message}`, { dir: tls, errno: (e as NodeJS.ErrnoException).code });
  }
  if (values.json) io.out(JSON.stringify({ hostId, dir, address, hypervisorBuildId, fingerprint: answer.fingerprint, notAfter: answer.notAfter, renewal: answer.renewal }));
  else {
    io.out(`Host ${hostId} ${answer.renewal ? 'renewed its certificate' : 'enrolled'}: ${tls}/{key,cert,ca}.pem, certificate until ${answer.notAfter}`);
    io.out(`Address ${address}, hypervisor ${hypervisorBuildId}. Start the agent: fleetpatch agent --dir ${dir}`);
  }
  return 0;
};
