/**
 * ed25519 detached signatures over the payload bytes, key files, and verification against a set of
 * trusted public keys.
 */
import { describe, expect, it } from 'vitest';
import { FleetpatchError } from '../../src/errors.ts';
import {
  generateSigningKey, publicKeyToFile, readPublicKey, readSignature, readSigningKey, signPayload, signingKeyToFile,
  verifyPayload, type PayloadSignature,
} from '../../src/payload/index.ts';
import { build } from './craft.ts';

const payload = build();
const alice = generateSigningKey();
const bob = generateSigningKey();
const trusted = [readPublicKey(JSON.stringify(publicKeyToFile(alice)))];

function code(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    if (e instanceof FleetpatchError) return `${e.code}: ${e.message}`;
    throw e;
  }
  return 'ok';
}

describe('signing and verifying', () => {
  it('a signature by a trusted key verifies', () => {
    const sig = signPayload(payload, alice, 'ab'.repeat(20));
    expect(sig).toMatchObject({ type: 'fleetpatch-payload-signature', version: 1, algorithm: 'ed25519', keyId: alice.keyId, buildId: 'ab'.repeat(20) });
    expect(Buffer.from(sig.signature, 'base64')).toHaveLength(64);
    expect(verifyPayload(payload, sig, trusted).keyId).toBe(alice.keyId);
  });

  it('one changed byte, an untrusted key or a forged signature: SIGNATURE_INVALID', () => {
    const sig = signPayload(payload, alice);
    const tampered = payload.slice();
    tampered[100]! ^= 1;
    expect(code(() => verifyPayload(tampered, sig, trusted))).toMatch(/^SIGNATURE_INVALID: the signature is for other bytes/);
    // Recomputing the digest does not help: the ed25519 signature covers the bytes themselves.
    const digestPatched: PayloadSignature = { ...sig, sha256: signPayload(tampered, bob).sha256 };
    expect(code(() => verifyPayload(tampered, digestPatched, trusted))).toMatch(/^SIGNATURE_INVALID: the ed25519 signature by key .* does not verify/);
    expect(code(() => verifyPayload(payload, signPayload(payload, bob), trusted))).toMatch(/^SIGNATURE_INVALID: .*not among the 1 trusted key/);
    // Bob claiming Alice's key id.
    const forged: PayloadSignature = { ...signPayload(payload, bob), keyId: alice.keyId };
    expect(code(() => verifyPayload(payload, forged, trusted))).toMatch(/^SIGNATURE_INVALID: the ed25519 signature/);
    expect(code(() => verifyPayload(payload, sig, []))).toMatch(/^SIGNATURE_INVALID/);
  });
});

describe('key and signature files', () => {
  it('round-trip through JSON', () => {
    const key = readSigningKey(JSON.stringify(signingKeyToFile(alice)));
    expect(key.keyId).toBe(alice.keyId);
    const sig = readSignature(JSON.stringify(signPayload(payload, key)));
    expect(verifyPayload(payload, sig, trusted).keyId).toBe(alice.keyId);
  });

  it('refuses broken key files with KEY_INVALID and broken signatures with SIGNATURE_INVALID', () => {
    expect(code(() => readSigningKey('not json'))).toMatch(/^KEY_INVALID: the signing key file is not JSON/);
    expect(code(() => readSigningKey(JSON.stringify(publicKeyToFile(alice))))).toMatch(/^KEY_INVALID: not a fleetpatch signing key/);
    expect(code(() => readPublicKey(JSON.stringify({ ...publicKeyToFile(alice), keyId: bob.keyId })))).toMatch(/^KEY_INVALID: .*says key id/);
    expect(code(() => readPublicKey(JSON.stringify({ ...publicKeyToFile(alice), publicKey: '-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n' })))).toMatch(/^KEY_INVALID: the public key's PEM cannot be read/);
    expect(code(() => readSigningKey(JSON.stringify({ ...signingKeyToFile(alice), keyId: bob.keyId })))).toMatch(/^KEY_INVALID/);
    expect(code(() => readSignature('{}'))).toMatch(/^SIGNATURE_INVALID: not a fleetpatch payload signature/);
    expect(code(() => readSignature('['))).toMatch(/^SIGNATURE_INVALID: the signature file is not JSON/);
  });
});
