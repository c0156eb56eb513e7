/**
 * The fleet CA: a self-signed ECDSA P-256 certificate (CA:true, keyCertSign) whose key stays in
 * the control plane's data dir (<data dir>/ca/ca.key.pem, 0600; ca.pem beside it). It issues
 * the two kinds of certificate the fleet's mutual TLS knows (names.ts): a host's, from the CSR the
 * host made at enrolment (its private key never leaves the host), and a worker's, for the control
 * plane's side of the connection. `fleetpatch ca init` makes it once and never replaces it.
 */
import { X509Certificate, createHash } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import path from 'node:path';
import { FleetpatchError } from '../errors.ts';
import { printable } from '../domain/text.ts';
import { hostUri, workerUri } from './names.ts';
import { FLEET_KEY_ALGORITHM, generateKeyPair, importPrivateKeyPem, privateKeyPem, randomSerial, x509 } from './x509.ts';
import type { Key, KeyPair } from './x509.ts';
import { readCsr } from './csr.ts';

const DAY_MS = 86_400_000;
/** Ten years: a fleet CA is replaced by a planned re-enrolment, not by its expiry. */
export const CA_VALIDITY_DAYS = 3650;
/** A host's or a worker's certificate: a year; `agent enroll` again with a new join token renews it. */
export const LEAF_VALIDITY_DAYS = 365;
/** Clocks of a fleet disagree a little: a certificate is valid from five minutes before it was made. */
const BACKDATE_MS = 5 * 60_000;

const OID_SERVER_AUTH = '1.3.6.1.5.5.7.3.1';
const OID_CLIENT_AUTH = '1.3.6.1.5.5.7.3.2';

export interface CaFiles {
  dir: string;
  cert: string;
  key: string;
}

export function caFiles(dataDir: string): CaFiles {
  const dir = path.join(dataDir, 'ca');
  return { dir, cert: path.join(dir, 'ca.pem'), key: path.join(dir, 'ca.key.pem') };
}

export interface FleetCa {
  certPem: string;
  cert: X509Certificate;
  keys: KeyPair;
  /** sha256 of the CA certificate (DER), lowercase hex. */
  fingerprint: string;
}

/** sha256 of a certificate's DER, lowercase hex without colons (node prints "AB:CD:..."). */
export function certificateFingerprint(cert: X509Certificate): string {
  return createHash('sha256').update(cert.raw).digest('hex');
}

/** Makes the fleet CA in <data dir>/ca; CA_EXISTS if either file is there (it is never replaced). */
export async function initCa(dataDir: string, opts: { name?: string; now?: Date } = {}): Promise<FleetCa> {
  const files = caFiles(dataDir);
  const now = opts.now ?? new Date();
  const keys = await generateKeyPair();
  const name = opts.name ?? 'fleetpatch fleet CA';
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: randomSerial(),
    name: new x509.Name([{ CN: [name] }]),
    notBefore: new Date(now.getTime() - BACKDATE_MS),
    notAfter: new Date(now.getTime() + CA_VALIDITY_DAYS * DAY_MS),
    keys,
    signingAlgorithm: FLEET_KEY_ALGORITHM,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  const certPem = cert.toString('pem') + '\n';
  await mkdir(files.dir, { recursive: true, mode: 0o700 });
  // 'wx': never over an existing CA, even one made a moment ago by another `ca init`.
  try {
    await writeFile(files.key, await privateKeyPem(keys.privateKey), { mode: 0o600, flag: 'wx' });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EEXIST') throw new FleetpatchError('CA_EXISTS', `a fleet CA exists already at ${files.dir}; fleetpatch never replaces it (every host's certificate chains to it)`, { dir: files.dir });
    throw e;
  }
  await writeFile(files.cert, certPem, { mode: 0o644, flag: 'wx' }).catch(async (e: NodeJS.ErrnoException) => {
    throw new FleetpatchError(e.code === 'EEXIST' ? 'CA_EXISTS' : 'FILE_ERROR', `cannot write ${files.cert}: ${e.message}`, { file: files.cert, errno: e.code });
  });
  const node = new X509Certificate(certPem);
  return { certPem, cert: node, keys, fingerprint: certificateFingerprint(node) };
}

/** The fleet CA of the data dir; CA_MISSING when there is none, CA_INVALID when it is unusable. */
export async function loadCa(dataDir: string): Promise<FleetCa> {
  const files = caFiles(dataDir);
  let certPem: string;
  let keyPem: string;
  try {
    [certPem, keyPem] = await Promise.all([readFile(files.cert, 'utf8'), readFile(files.key, 'utf8')]);
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    if (err.code === 'ENOENT') throw new FleetpatchError('CA_MISSING', `there is no fleet CA at ${files.dir}: make one with \`fleetpatch ca init\``, { dir: files.dir });
    throw new FleetpatchError('CA_INVALID', `cannot read the fleet CA at ${files.dir}: ${err.message}`, { dir: files.dir, errno: err.code });
  }
  let cert: X509Certificate;
  let keys: KeyPair;
  try {
    cert = new X509Certificate(certPem);
    keys = await importPrivateKeyPem(keyPem);
  } catch (e) {
    throw new FleetpatchError('CA_INVALID', `the fleet CA at ${files.dir} cannot be read: ${(e as Error).message}`, { dir: files.dir });
  }
  if (!cert.ca) throw new FleetpatchError('CA_INVALID', `${files.cert} is not a CA certificate (basicConstraints CA:false)`, { dir: files.dir });
  const { createPrivateKey } = await import('node:crypto');
  if (!cert.checkPrivateKey(createPrivateKey(keyPem))) throw new FleetpatchError('CA_INVALID', `${files.key} is not the key of ${files.cert}`, { dir: files.dir });
  return { certPem, cert, keys, fingerprint: certificateFingerprint(cert) };
}

/** The subjectAltName entries for the host and the name or IP of its address. */
function hostNames(hostId: string, address: string): x509.JsonGeneralName[] {
  const names: x509.JsonGeneralName[] = [{ type: 'url', value: hostUri(hostId) }];
  const hostname = new URL(address).hostname.replace(/^\[|\]$/g, '');
  if (hostname) names.push(isIP(hostname) ? { type: 'ip', value: hostname } : { type: 'dns', value: hostname });
  return names;
}

export interface IssuedCertificate {
  certPem: string;
  cert: X509Certificate;
  fingerprint: string;
  notAfter: string;
  serial: string;
}

async function issue(ca: FleetCa, subject: string, publicKey: Key, names: x509.JsonGeneralName[], eku: string, now: Date, days: number): Promise<IssuedCertificate> {
  const serial = randomSerial();
  const notAfter = new Date(now.getTime() + days * DAY_MS);
  const issuer = new x509.X509Certificate(ca.certPem);
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: serial,
    subject: new x509.Name([{ CN: [subject] }]),
    issuer: issuer.subject,
    notBefore: new Date(now.getTime() - BACKDATE_MS),
    notAfter,
    publicKey,
    signingKey: ca.keys.privateKey,
    signingAlgorithm: FLEET_KEY_ALGORITHM,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyAgreement, true),
      new x509.ExtendedKeyUsageExtension([eku]),
      new x509.SubjectAlternativeNameExtension(names),
      await x509.SubjectKeyIdentifierExtension.create(publicKey),
      await x509.AuthorityKeyIdentifierExtension.create(issuer),
    ],
  });
  const certPem = cert.toString('pem') + '\n';
  const node = new X509Certificate(certPem);
  return { certPem, cert: node, fingerprint: certificateFingerprint(node), notAfter: new Date(node.validTo).toISOString(), serial };
}

/**
 * A host's certificate from its CSR: CN=<hostId>, SAN URI fleetpatch://host/<hostId> plus its
 * address's name or IP, serverAuth. CSR_INVALID when the CSR is malformed or names another host.
 */
export async function issueHostCertificate(ca: FleetCa, csrPem: string, hostId: string, address: string, opts: { now?: Date; days?: number } = {}): Promise<IssuedCertificate> {
  const csr = await readCsr(csrPem);
  if (csr.commonName !== hostId) {
    throw new FleetpatchError('CSR_INVALID', `the CSR is for host ${csr.commonName === null ? '(no CN)' : JSON.stringify(printable(csr.commonName))}, but its join token is for host ${JSON.stringify(hostId)}`, {
      csrHostId: csr.commonName,
      hostId,
    });
  }
  return issue(ca, hostId, csr.publicKey, hostNames(hostId, address), OID_SERVER_AUTH, opts.now ?? new Date(), opts.days ?? LEAF_VALIDITY_DAYS);
}

/** A worker's key and certificate: CN=worker:<name>, SAN URI fleetpatch://worker/<name>, clientAuth. */
export async function issueWorkerCertificate(ca: FleetCa, name: string, opts: { now?: Date; days?: number } = {}): Promise<IssuedCertificate & { keyPem: string }> {
  const keys = await generateKeyPair();
  const issued = await issue(ca, `worker:${name}`, keys.publicKey, [{ type: 'url', value: workerUri(name) }], OID_CLIENT_AUTH, opts.now ?? new Date(), opts.days ?? LEAF_VALIDITY_DAYS);
  return { ...issued, keyPem: await privateKeyPem(keys.privateKey) };
}
