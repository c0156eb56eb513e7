/**
 * Checks of a fleet certificate, the same wherever one is presented: it chains to the fleet CA
 * (issued and signed by it), it is valid now, and it names who it must (names.ts). Each failure is
 * CERTIFICATE_INVALID naming which, so an operator reading it knows whether to renew, re-enrol or
 * look for an impostor.
 */
import { X509Certificate } from 'node:crypto';
import { FleetpatchError } from '../errors.ts';
import { peerRole, type PeerRole } from './names.ts';

export type Expected = { kind: 'host'; id: string } | { kind: 'worker'; name?: string } | { kind: 'any' };

function describe(role: PeerRole | null): string {
  if (!role) return 'no fleetpatch identity (no single fleetpatch://host/ or fleetpatch://worker/ SAN URI)';
  return role.kind === 'host' ? `host ${JSON.stringify(role.id)}` : `worker ${JSON.stringify(role.name)}`;
}

/** A certificate from PEM or DER, or CERTIFICATE_INVALID. */
export function readCertificate(input: string | Buffer | X509Certificate, what = 'the certificate'): X509Certificate {
  if (input instanceof X509Certificate) return input;
  try {
    return new X509Certificate(input);
  } catch (e) {
    throw new FleetpatchError('CERTIFICATE_INVALID', `${what} cannot be read as an X.509 certificate: ${(e as Error).message.slice(0, 200)}`);
  }
}

/** Returns the role the certificate proves, or throws CERTIFICATE_INVALID naming the first problem. */
export function checkCertificate(input: string | Buffer | X509Certificate, caInput: string | Buffer | X509Certificate, expected: Expected = { kind: 'any' }, now: Date = new Date()): PeerRole {
  const cert = readCertificate(input);
  const ca = readCertificate(caInput, 'the fleet CA');
  const who = describe(peerRole(cert));
  if (!cert.checkIssued(ca) || !cert.verify(ca.publicKey)) {
    throw new FleetpatchError('CERTIFICATE_INVALID', `the certificate of ${who} was not issued by this fleet's CA (issuer "${cert.issuer.replace(/\n/g, ', ')}", fleet CA "${ca.subject.replace(/\n/g, ', ')}"): a foreign CA`, { reason: 'foreign-ca' });
  }
  const from = new Date(cert.validFrom);
  const to = new Date(cert.validTo);
  if (now < from) throw new FleetpatchError('CERTIFICATE_INVALID', `the certificate of ${who} is not valid before ${from.toISOString()}`, { reason: 'not-yet-valid', notBefore: from.toISOString() });
  if (now > to) throw new FleetpatchError('CERTIFICATE_INVALID', `the certificate of ${who} expired at ${to.toISOString()}; renew it (docs/enrolment.md#rotate)`, { reason: 'expired', notAfter: to.toISOString() });
  const role = peerRole(cert);
  if (expected.kind === 'any') {
    if (!role) throw new FleetpatchError('CERTIFICATE_INVALID', `the certificate names ${who}`, { reason: 'names' });
    return role;
  }
  if (expected.kind === 'host' && (role?.kind !== 'host' || role.id !== expected.id)) {
    throw new FleetpatchError('CERTIFICATE_INVALID', `the certificate names ${who}, not host ${JSON.stringify(expected.id)}`, { reason: 'names', expected: expected.id });
  }
  if (expected.kind === 'worker' && (role?.kind !== 'worker' || (expected.name !== undefined && role.name !== expected.name))) {
    throw new FleetpatchError('CERTIFICATE_INVALID', `the certificate names ${who}, not a worker${expected.name ? ` ${JSON.stringify(expected.name)}` : ''}`, { reason: 'names' });
  }
  return role!;
}
