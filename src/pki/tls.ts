/**
 * The worker's side of the fleet's mutual TLS: its key, certificate and the fleet CA from one
 * directory (FLEETPATCH_WORKER_TLS_DIR, or <data dir>/worker-tls: key.pem, cert.pem, ca.pem, as
 * `fleetpatch ca issue --worker NAME --out DIR` writes them), and the check that the agent at the
 * other end is exactly the host meant. The address of a host may be an IP or a name shared by a
 * load balancer, so the TLS host name check is replaced by one on the SAN URI
 * fleetpatch://host/<id>; the chain to the fleet CA is checked by TLS itself (`ca`, rejectUnauthorized).
 */
import { X509Certificate } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import type { PeerCertificate } from 'node:tls';
import { FleetpatchError } from '../errors.ts';
import { peerRole } from './names.ts';

export interface TlsMaterial {
  key: string;
  cert: string;
  ca: string;
  dir: string;
}

/** key.pem, cert.pem and ca.pem of `dir`; CERTIFICATE_INVALID naming the missing one. */
export async function readTlsDir(dir: string): Promise<TlsMaterial> {
  const read = (name: string) =>
    readFile(path.join(dir, name), 'utf8').catch((e: NodeJS.ErrnoException) => {
      throw new FleetpatchError(
        'CERTIFICATE_INVALID',
        e.code === 'ENOENT' ? `no ${name} in ${dir}: make the worker's certificate with \`fleetpatch ca issue --worker NAME --out ${dir}\`` : `cannot read ${path.join(dir, name)}: ${e.message}`,
        { file: path.join(dir, name) },
      );
    });
  const [key, cert, ca] = await Promise.all([read('key.pem'), read('cert.pem'), read('ca.pem')]);
  return { key, cert, ca, dir };
}

/** The error a mismatched or missing host identity gives: names both ids. */
export class HostIdentityError extends Error {
  readonly code = 'ERR_FLEETPATCH_HOST_IDENTITY';
  constructor(readonly expected: string, readonly found: string) {
    super(`the agent's certificate names ${found}, not host ${JSON.stringify(expected)}`);
  }
}

/** A checkServerIdentity for tls.connect that accepts only the certificate of `hostId`. */
export function pinHost(hostId: string): (hostname: string, cert: PeerCertificate) => Error | undefined {
  return (_hostname, cert) => {
    if (!cert?.raw) return new HostIdentityError(hostId, 'no certificate');
    let role;
    try {
      role = peerRole(new X509Certificate(cert.raw));
    } catch {
      return new HostIdentityError(hostId, 'an unreadable certificate');
    }
    if (role?.kind === 'host' && role.id === hostId) return undefined;
    return new HostIdentityError(hostId, role ? (role.kind === 'host' ? `host ${JSON.stringify(role.id)}` : `worker ${JSON.stringify(role.name)}`) : 'no fleetpatch identity');
  };
}
