/**
 * The agent's TLS files, <dir>/tls/{key,cert,ca}.pem, read and checked before it listens: the key
 * private to the agent (no group or other access), the certificate a host's of this fleet
 * (SAN URI fleetpatch://host/<id>, issued by ca.pem) and made for that key. Whatever is wrong is
 * TLS_INVALID naming the file, at start, not a handshake that fails later for every worker.
 */
import { X509Certificate, createPrivateKey } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { FleetpatchError } from '../errors.ts';
import { peerRole } from '../pki/names.ts';

export interface AgentTls {
  key: Buffer;
  cert: Buffer;
  ca: Buffer;
  /** The host id the certificate names. */
  hostId: string;
  /** When the certificate stops being valid. */
  validTo: string;
}

export const tlsFiles = (dir: string) => ({ key: path.join(dir, 'tls', 'key.pem'), cert: path.join(dir, 'tls', 'cert.pem'), ca: path.join(dir, 'tls', 'ca.pem') });

async function readPem(file: string): Promise<Buffer> {
  try {
    return await readFile(file);
  } catch (e) {
    throw new FleetpatchError('TLS_INVALID', `cannot read ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message} (enrol the host, or use --insecure-http on loopback for development)`, { file });
  }
}

export async function loadAgentTls(dir: string, now = new Date()): Promise<AgentTls> {
  const files = tlsFiles(dir);
  const [key, cert, ca] = await Promise.all([readPem(files.key), readPem(files.cert), readPem(files.ca)]);
  const mode = (await stat(files.key)).mode & 0o777;
  if (mode & 0o077) {
    throw new FleetpatchError('TLS_INVALID', `${files.key} is readable by others (mode ${mode.toString(8).padStart(4, '0')}); chmod 600 it: whoever reads it can pass for this host`, { file: files.key });
  }
  let x509: X509Certificate;
  let caCert: X509Certificate;
  try {
    x509 = new X509Certificate(cert);
  } catch (e) {
    throw new FleetpatchError('TLS_INVALID', `${files.cert} is not a PEM certificate: ${(e as Error).message}`, { file: files.cert });
  }
  try {
    caCert = new X509Certificate(ca);
  } catch (e) {
    throw new FleetpatchError('TLS_INVALID', `${files.ca} is not a PEM certificate: ${(e as Error).message}`, { file: files.ca });
  }
  let privateKey;
  try {
    privateKey = createPrivateKey(key);
  } catch (e) {
    throw new FleetpatchError('TLS_INVALID', `${files.key} is not a PEM private key: ${(e as Error).message}`, { file: files.key });
  }
  if (!x509.checkPrivateKey(privateKey)) throw new FleetpatchError('TLS_INVALID', `${files.cert} is not the certificate of the key in ${files.key}`, { file: files.cert });
  if (!x509.checkIssued(caCert) || !x509.verify(caCert.publicKey)) {
    throw new FleetpatchError('TLS_INVALID', `${files.cert} is not issued by the fleet CA in ${files.ca} (${x509.issuer.replace(/\n/g, ', ')})`, { file: files.cert });
  }
  const role = peerRole(x509);
  if (role?.kind !== 'host') {
    throw new FleetpatchError('TLS_INVALID', `${files.cert} is not a host's certificate: it needs exactly one SAN URI fleetpatch://host/<id> (it has ${x509.subjectAltName ?? 'no subjectAltName'})`, { file: files.cert });
  }
  if (Date.parse(x509.validTo) <= now.getTime()) throw new FleetpatchError('TLS_INVALID', `${files.cert} expired on ${x509.validTo}; renew it`, { file: files.cert });
  if (Date.parse(x509.validFrom) > now.getTime()) throw new FleetpatchError('TLS_INVALID', `${files.cert} is not valid before ${x509.validFrom}`, { file: files.cert });
  return { key, cert, ca, hostId: role.id, validTo: new Date(x509.validTo).toISOString() };
}
