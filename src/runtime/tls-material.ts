/**
 * Certificates, CA bundles and private keys that a connection setting names, checked before any
 * handshake, the same way for Temporal (temporal-connection.ts) and PostgreSQL (database.ts): not
 * PEM, not X.509, expired or not yet valid, encrypted, or a key of another certificate is one
 * TLS_MATERIAL_INVALID naming the setting (`origin`). Key contents never reach a message.
 */
import { X509Certificate, createPrivateKey, type KeyObject } from 'node:crypto';
import { FleetpatchError } from '../errors.ts';

const PEM_CERTIFICATE = /-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g;

/** Every certificate of a PEM bundle, parsed and in its validity period; the first is returned. */
export function checkCertificates(pem: Buffer, origin: string, now: Date): X509Certificate {
  const blocks = pem.toString('latin1').match(PEM_CERTIFICATE) ?? [];
  if (blocks.length === 0) throw new FleetpatchError('TLS_MATERIAL_INVALID', `${origin}: not a PEM certificate (no -----BEGIN CERTIFICATE----- block)`);
  const certs = blocks.map((b, i) => {
    try {
      return new X509Certificate(b);
    } catch {
      throw new FleetpatchError('TLS_MATERIAL_INVALID', `${origin}: certificate ${i + 1} of the file is not a valid X.509 certificate`);
    }
  });
  for (const c of certs) {
    const subject = c.subject.replace(/\n/g, ', ');
    if (new Date(c.validTo).getTime() < now.getTime()) throw new FleetpatchError('TLS_MATERIAL_INVALID', `${origin}: the certificate "${subject}" expired on ${new Date(c.validTo).toISOString()}`, { subject, validTo: new Date(c.validTo).toISOString() });
    if (new Date(c.validFrom).getTime() > now.getTime()) throw new FleetpatchError('TLS_MATERIAL_INVALID', `${origin}: the certificate "${subject}" is not valid before ${new Date(c.validFrom).toISOString()}`, { subject, validFrom: new Date(c.validFrom).toISOString() });
  }
  return certs[0]!;
}

/** The private key of a PEM file; its contents never appear in the message. */
export function checkPrivateKey(pem: Buffer, origin: string): KeyObject {
  if (!/-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(pem.toString('latin1'))) throw new FleetpatchError('TLS_MATERIAL_INVALID', `${origin}: not a PEM private key (no "-----BEGIN ...KEY-----" block)`);
  if (/-----BEGIN ENCRYPTED PRIVATE KEY-----|Proc-Type: 4,ENCRYPTED/.test(pem.toString('latin1'))) throw new FleetpatchError('TLS_MATERIAL_INVALID', `${origin}: the private key is encrypted with a passphrase; give an unencrypted key (file mode 0600)`);
  try {
    return createPrivateKey(pem);
  } catch {
    throw new FleetpatchError('TLS_MATERIAL_INVALID', `${origin}: the private key cannot be read (a damaged PEM block)`);
  }
}

/** A client certificate in its validity period and the key that belongs to it. */
export function checkKeyPair(cert: Buffer, key: Buffer, certOrigin: string, keyOrigin: string, now: Date): void {
  const c = checkCertificates(cert, certOrigin, now);
  const k = checkPrivateKey(key, keyOrigin);
  if (!c.checkPrivateKey(k)) throw new FleetpatchError('TLS_MATERIAL_INVALID', `${keyOrigin}: this private key does not belong to the client certificate ${certOrigin}`);
}
