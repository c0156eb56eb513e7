/**
 * Payload signatures in tests: one ed25519 key per test process, its public key trusted through
 * FLEETPATCH_TRUSTED_KEYS (set here, so in-process resolution, in-process workers and the
 * `fleetpatch` subprocesses a test spawns with process.env all trust it), and a helper that
 * writes `<file>.sig` next to a payload the way `fleetpatch payload sign` does.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { generateSigningKey, parsePayload, publicKeyToFile, signPayload, type SigningKey } from '../../src/payload/index.ts';

export const TEST_SIGNING_KEY: SigningKey = generateSigningKey();

const dir = mkdtempSync(path.join(os.tmpdir(), 'fleetpatch-trusted-'));
/** A directory holding the test key's public half, as FLEETPATCH_TRUSTED_KEYS expects. */
export const TEST_TRUSTED_KEYS_DIR = dir;
writeFileSync(path.join(dir, 'test.pub'), JSON.stringify(publicKeyToFile(TEST_SIGNING_KEY)));
process.env.FLEETPATCH_TRUSTED_KEYS ??= dir;

/** Writes `<file>.sig`: a detached signature over `bytes` by `key` (default: the trusted test key). */
export async function signFile(file: string, bytes: Uint8Array, key: SigningKey = TEST_SIGNING_KEY): Promise<string> {
  const sig = `${file}.sig`;
  await writeFile(sig, JSON.stringify(signPayload(bytes, key, parsePayload(bytes).buildIdHex), null, 2) + '\n');
  return sig;
}
