/**
 * Payload signatures: ed25519 detached signatures over the exact payload bytes (node:crypto).
 *
 * Files (JSON, validated with zod):
 * - a signing key:  { "type": "fleetpatch-signing-key", "keyId", "algorithm": "ed25519", "privateKey": PKCS#8 PEM }
 * - a public key:   { "type": "fleetpatch-public-key",  "keyId", "algorithm": "ed25519", "publicKey": SPKI PEM }
 * - a signature:    { "type": "fleetpatch-payload-signature", "version": 1, "algorithm": "ed25519", "keyId",
 *                     "sha256": hex of the payload, "buildId": hex or null, "signature": base64 }
 *
 * The key id is the first 16 hex digits of sha256(SPKI DER): it names the key, it proves nothing;
 * verification always checks the signature itself against a trusted public key.
 */
import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, sign, verify, type KeyObject } from 'node:crypto';
import { z } from 'zod';
import { FleetpatchError } from '../errors.ts';

export const SigningKeyFileSchema = z.object({
  type: z.literal('fleetpatch-signing-key'),
  algorithm: z.literal('ed25519'),
  keyId: z.string().regex(/^[0-9a-f]{16}$/),
  privateKey: z.string().includes('PRIVATE KEY'),
});
export const PublicKeyFileSchema = z.object({
  type: z.literal('fleetpatch-public-key'),
  algorithm: z.literal('ed25519'),
  keyId: z.string().regex(/^[0-9a-f]{16}$/),
  publicKey: z.string().includes('PUBLIC KEY'),
});
export const SignatureFileSchema = z.object({
  type: z.literal('fleetpatch-payload-signature'),
  version: z.literal(1),
  algorithm: z.literal('ed25519'),
  keyId: z.string().regex(/^[0-9a-f]{16}$/),
  sha256: z.string().regex(/^[0-9a-f]{64}$/),
  buildId: z.string().regex(/^([0-9a-f]{2})+$/).nullable(),
  signature: z.string().regex(/^[A-Za-z0-9+/]+={0,2}$/),
});

export type SigningKeyFile = z.infer<typeof SigningKeyFileSchema>;
export type PublicKeyFile = z.infer<typeof PublicKeyFileSchema>;
export type PayloadSignature = z.infer<typeof SignatureFileSchema>;

export interface SigningKey {
  readonly keyId: string;
  readonly privateKey: KeyObject;
  readonly publicKey: KeyObject;
}

export interface PublicKey {
  readonly keyId: string;
  readonly publicKey: KeyObject;
}

function keyIdOf(publicKey: KeyObject): string {
  return createHash('sha256').update(publicKey.export({ type: 'spki', format: 'der' })).digest('hex').slice(0, 16);
}

function sha256Hex(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

/** A fresh ed25519 key pair. */
export function generateSigningKey(): SigningKey {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  return { keyId: keyIdOf(publicKey), privateKey, publicKey };
}

export function signingKeyToFile(key: SigningKey): SigningKeyFile {
  return {
    type: 'fleetpatch-signing-key',
    algorithm: 'ed25519',
    keyId: key.keyId,
    privateKey: key.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
  };
}

export function publicKeyToFile(key: SigningKey | PublicKey): PublicKeyFile {
  return {
    type: 'fleetpatch-public-key',
    algorithm: 'ed25519',
    keyId: key.keyId,
    publicKey: key.publicKey.export({ type: 'spki', format: 'pem' }).toString(),
  };
}

function parseJson(text: string, what: string): unknown {
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new FleetpatchError(what === 'signature' ? 'SIGNATURE_INVALID' : 'KEY_INVALID', `the ${what} file is not JSON: ${(e as Error).message}`);
  }
}

function schemaIssues(error: z.ZodError): string {
  return error.issues.map((i) => `${i.path.join('.') || '(file)'}: ${i.message}`).join('; ');
}

/** Reads a signing key file (JSON text). Throws KEY_INVALID. */
export function readSigningKey(text: string): SigningKey {
  const r = SigningKeyFileSchema.safeParse(parseJson(text, 'signing key'));
  if (!r.success) throw new FleetpatchError('KEY_INVALID', `not a fleetpatch signing key: ${schemaIssues(r.error)}`);
  let privateKey: KeyObject;
  try {
    privateKey = createPrivateKey(r.data.privateKey);
  } catch (e) {
    throw new FleetpatchError('KEY_INVALID', `the signing key's PEM cannot be read: ${(e as Error).message}`);
  }
  if (privateKey.asymmetricKeyType !== 'ed25519') throw new FleetpatchError('KEY_INVALID', `the signing key is ${privateKey.asymmetricKeyType}, not ed25519`);
  const publicKey = createPublicKey(privateKey);
  const keyId = keyIdOf(publicKey);
  if (keyId !== r.data.keyId) throw new FleetpatchError('KEY_INVALID', `the signing key file says key id ${r.data.keyId}, but its key is ${keyId}`);
  return { keyId, privateKey, publicKey };
}

/** Reads a public key file (JSON text). Throws KEY_INVALID. */
export function readPublicKey(text: string): PublicKey {
  const r = PublicKeyFileSchema.safeParse(parseJson(text, 'public key'));
  if (!r.success) throw new FleetpatchError('KEY_INVALID', `not a fleetpatch public key: ${schemaIssues(r.error)}`);
  let publicKey: KeyObject;
  try {
    publicKey = createPublicKey(r.data.publicKey);
  } catch (e) {
    throw new FleetpatchError('KEY_INVALID', `the public key's PEM cannot be read: ${(e as Error).message}`);
  }
  if (publicKey.asymmetricKeyType !== 'ed25519') throw new FleetpatchError('KEY_INVALID', `the public key is ${publicKey.asymmetricKeyType}, not ed25519`);
  const keyId = keyIdOf(publicKey);
  if (keyId !== r.data.keyId) throw new FleetpatchError('KEY_INVALID', `the public key file says key id ${r.data.keyId}, but its key is ${keyId}`);
  return { keyId, publicKey };
}

/** Signs the payload bytes. `buildId` (hex) is recorded for people; the signature covers the bytes. */
export function signPayload(bytes: Uint8Array, key: SigningKey, buildId: string | null = null): PayloadSignature {
  return {
    type: 'fleetpatch-payload-signature',
    version: 1,
    algorithm: 'ed25519',
    keyId: key.keyId,
    sha256: sha256Hex(bytes),
    buildId,
    signature: sign(null, bytes, key.privateKey).toString('base64'),
  };
}

/** Reads a signature file (JSON text). Throws SIGNATURE_INVALID. */
export function readSignature(text: string): PayloadSignature {
  const r = SignatureFileSchema.safeParse(parseJson(text, 'signature'));
  if (!r.success) throw new FleetpatchError('SIGNATURE_INVALID', `not a fleetpatch payload signature: ${schemaIssues(r.error)}`);
  return r.data;
}

/**
 * Verifies a detached signature over `bytes` against a set of trusted public keys. Returns the key
 * that signed; throws SIGNATURE_INVALID saying why not (untrusted key, other bytes, bad signature).
 */
export function verifyPayload(bytes: Uint8Array, signature: PayloadSignature, trusted: readonly PublicKey[]): PublicKey {
  const key = trusted.find((k) => k.keyId === signature.keyId);
  if (!key) {
    throw new FleetpatchError('SIGNATURE_INVALID', `the payload is signed by key ${signature.keyId}, which is not among the ${trusted.length} trusted key(s)`, {
      keyId: signature.keyId,
      trusted: trusted.map((k) => k.keyId),
    });
  }
  const digest = sha256Hex(bytes);
  if (digest !== signature.sha256) {
    throw new FleetpatchError('SIGNATURE_INVALID', `the signature is for other bytes (sha256 ${signature.sha256.slice(0, 12)}…, this payload is ${digest.slice(0, 12)}…)`, {
      expected: signature.sha256,
      actual: digest,
    });
  }
  const ok = verify(null, bytes, key.publicKey, Buffer.from(signature.signature, 'base64'));
  if (!ok) throw new FleetpatchError('SIGNATURE_INVALID', `the ed25519 signature by key ${key.keyId} does not verify over these bytes`, { keyId: key.keyId });
  return key;
}
