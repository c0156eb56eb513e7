/**
 * Certificate signing requests (PKCS#10): the host makes its key pair and a CSR naming its host
 * id; the control plane reads the CSR, checks it is signed by the key it carries and of the
 * fleet's key type, and issues a certificate for that key. What a host sends is hostile: the CSR
 * is bounded in size, must be one PEM block, and every refusal is CSR_INVALID naming the problem.
 */
import { FleetpatchError } from '../errors.ts';
import { FLEET_KEY_ALGORITHM, x509 } from './x509.ts';
import type { Key, KeyPair } from './x509.ts';

/** A P-256 CSR is about 400 bytes of PEM; 8 KiB leaves room and refuses anything else. */
export const MAX_CSR_BYTES = 8192;

const PEM = /^-----BEGIN CERTIFICATE REQUEST-----\r?\n([A-Za-z0-9+/=\r\n]+)-----END CERTIFICATE REQUEST-----\r?\n?$/;

export async function makeCsr(keys: KeyPair, hostId: string): Promise<string> {
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    name: new x509.Name([{ CN: [hostId] }]),
    keys,
    signingAlgorithm: FLEET_KEY_ALGORITHM,
  });
  return csr.toString('pem') + '\n';
}

export interface ReadCsr {
  /** The subject's CN, null when it has none (or several). */
  commonName: string | null;
  publicKey: Key;
}

const invalid = (why: string, details: Record<string, unknown> = {}) => new FleetpatchError('CSR_INVALID', `the certificate signing request ${why}`, details);

export async function readCsr(pem: string): Promise<ReadCsr> {
  if (typeof pem !== 'string' || pem.length === 0) throw invalid('is empty');
  if (Buffer.byteLength(pem, 'utf8') > MAX_CSR_BYTES) throw invalid(`is ${Buffer.byteLength(pem, 'utf8')} bytes, more than the ${MAX_CSR_BYTES} a CSR may be`, { maxBytes: MAX_CSR_BYTES });
  const m = PEM.exec(pem.trim() + '\n');
  if (!m) throw invalid('is not one PEM block "-----BEGIN CERTIFICATE REQUEST-----"');
  let csr: x509.Pkcs10CertificateRequest;
  try {
    csr = new x509.Pkcs10CertificateRequest(Buffer.from(m[1]!.replace(/\s+/g, ''), 'base64'));
  } catch (e) {
    throw invalid(`cannot be read as PKCS#10: ${(e as Error).message.slice(0, 200)}`);
  }
  const alg = csr.publicKey.algorithm as { name: string; namedCurve?: string };
  if (alg.name !== 'ECDSA' || alg.namedCurve !== 'P-256') throw invalid(`has a ${alg.name}${alg.namedCurve ? ` ${alg.namedCurve}` : ''} key; the fleet's keys are ECDSA P-256`);
  let ok = false;
  try {
    ok = await csr.verify();
  } catch {
    ok = false;
  }
  if (!ok) throw invalid('is not signed by the key it carries (its signature does not verify)');
  const cns = csr.subjectName.getField('CN');
  const publicKey = await csr.publicKey.export(FLEET_KEY_ALGORITHM, ['verify']);
  return { commonName: cns.length === 1 ? cns[0]! : null, publicKey };
}
