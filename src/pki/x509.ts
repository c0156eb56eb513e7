/**
 * The one door to @peculiar/x509: node's X509Certificate reads certificates but cannot make them
 * or CSRs, so issuing goes through this library, on node's own webcrypto. Its dependency
 * container (tsyringe) needs the Reflect metadata polyfill loaded first: imported here, once,
 * before the library, so no other module has to know.
 */
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { webcrypto } from 'node:crypto';

// The library's types name the DOM's Crypto; node's webcrypto is that API.
x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

export type Key = webcrypto.CryptoKey;
export type KeyPair = webcrypto.CryptoKeyPair;

export { x509 };

/** The fleet's one key type: ECDSA on P-256 with SHA-256, what every TLS stack takes. */
export const FLEET_KEY_ALGORITHM = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;

export async function generateKeyPair(): Promise<KeyPair> {
  return (await webcrypto.subtle.generateKey(FLEET_KEY_ALGORITHM, true, ['sign', 'verify'])) as KeyPair;
}

/** A private key as PKCS#8 PEM (what node's tls and `openssl` read). */
export async function privateKeyPem(key: Key): Promise<string> {
  const der = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', key));
  return `-----BEGIN PRIVATE KEY-----\n${der.toString('base64').replace(/(.{64})/g, '$1\n').replace(/\n$/, '')}\n-----END PRIVATE KEY-----\n`;
}

/** A PKCS#8 PEM private key of the fleet's type, with its public half (for signing certificates). */
export async function importPrivateKeyPem(pem: string): Promise<KeyPair> {
  const { createPrivateKey, createPublicKey } = await import('node:crypto');
  const priv = createPrivateKey(pem);
  const pkcs8 = priv.export({ format: 'der', type: 'pkcs8' });
  const spki = createPublicKey(priv).export({ format: 'der', type: 'spki' });
  const privateKey = await webcrypto.subtle.importKey('pkcs8', pkcs8, FLEET_KEY_ALGORITHM, true, ['sign']);
  const publicKey = await webcrypto.subtle.importKey('spki', spki, FLEET_KEY_ALGORITHM, true, ['verify']);
  return { privateKey, publicKey } as KeyPair;
}

/** A random positive serial number of 16 bytes, as hex (RFC 5280: unique per CA, at most 20 bytes). */
export function randomSerial(): string {
  const b = webcrypto.getRandomValues(new Uint8Array(16));
  b[0] = (b[0]! & 0x7f) | 0x01;
  return Buffer.from(b).toString('hex');
}
