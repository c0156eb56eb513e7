/**
 * The public keys payload signatures must verify against before a rollout ships a payload
 * (FLEETPATCH_TRUSTED_KEYS: a `fleetpatch payload keygen` .pub file, or a directory of them;
 * default <data dir>/trusted-keys/). Read when needed, so a worker picks up a key added later.
 */
import { readdir, stat } from 'node:fs/promises';
import path from 'node:path';
import { FleetpatchError } from '../errors.ts';
import { readPublicKey, type PublicKey } from '../payload/signing.ts';
import { readInputText } from '../runtime/files.ts';
import type { Config } from '../runtime/config.ts';

/** At most this many keys are read from a directory. */
const MAX_KEYS = 256;

/**
 * The trusted keys. A default directory that does not exist means no key is trusted (every
 * signed payload is then refused, unsigned ones too unless a plan allows them); a path the
 * environment names explicitly must exist. A key file that cannot be read is KEY_INVALID, naming it.
 */
export async function loadTrustedKeys(config: Pick<Config, 'trustedKeys'>): Promise<PublicKey[]> {
  const { path: where, explicit } = config.trustedKeys;
  let s;
  try {
    s = await stat(where);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT' && !explicit) return [];
    throw new FleetpatchError('CONFIG_INVALID', `FLEETPATCH_TRUSTED_KEYS=${JSON.stringify(where)}: ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file or directory' : (e as Error).message}`);
  }
  const files = s.isDirectory()
    ? (await readdir(where)).filter((f) => f.endsWith('.pub')).sort().slice(0, MAX_KEYS).map((f) => path.join(where, f))
    : [where];
  const keys: PublicKey[] = [];
  for (const file of files) {
    try {
      keys.push(readPublicKey(await readInputText(file, 'key')));
    } catch (e) {
      const err = e as FleetpatchError;
      throw new FleetpatchError(err.code === 'USAGE' || err.code === 'ARGUMENT' ? 'CONFIG_INVALID' : (err.code ?? 'KEY_INVALID'), `trusted key ${file}: ${err.message}`, { file });
    }
  }
  return keys;
}
