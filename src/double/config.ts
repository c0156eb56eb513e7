/**
 * Which emulated host a tool double answers for: a small JSON file named by
 * FLEETPATCH_DOUBLE_CONFIG, or FLEETPATCH_DOUBLE_URL, FLEETPATCH_DOUBLE_HOST and
 * FLEETPATCH_DOUBLE_TOKEN. The file is the way that survives a caller which runs the tools with
 * an environment of its own (the dom0 agent passes only PATH and LC_ALL=C): `writeToolDoubles`
 * (install.ts) writes one with two wrapper scripts that name it.
 */
import { readFile } from 'node:fs/promises';
import { z } from 'zod';
import { FleetpatchError } from '../errors.ts';
import { unstorable } from '../domain/text.ts';

const Text = z.string().min(1).refine((s) => !unstorable(s), 'must be storable text (no NUL, no lone surrogate)');

export const DoubleConfigSchema = z.strictObject({
  /** The fleet server's base URL. */
  url: Text.refine((s) => /^https?:\/\//.test(s), 'must be an http(s) URL'),
  hostId: Text,
  token: Text,
  /** Per request to the host; default HostAgent's (10 s). */
  timeoutMs: z.number().int().min(1).max(600_000).optional(),
  /**
   * Play a dom0 without the hypervisor interface: xencall cannot open /dev/xen/privcmd with this
   * errno, and xen-livepatch says "failed to get the handler" and exits 0, as the real one does.
   */
  noHandle: z.enum(['ENOENT', 'EACCES']).optional(),
});
export type DoubleConfig = z.infer<typeof DoubleConfigSchema>;

/** A config file holds a URL and a token: a few hundred bytes. */
const MAX_CONFIG_BYTES = 64 * 1024;

function invalid(where: string, problem: string): FleetpatchError {
  return new FleetpatchError('DOUBLE_CONFIG_INVALID', `${where}: ${problem}`, { where });
}

function parse(where: string, value: unknown): DoubleConfig {
  const r = DoubleConfigSchema.safeParse(value);
  if (r.success) return r.data;
  const first = r.error.issues[0]!;
  throw invalid(where, `${first.path.length ? first.path.join('.') : 'the config'} ${first.message}`);
}

/** The double's host, from the environment given (a file first, else the three variables). */
export async function readDoubleConfig(env: Readonly<Record<string, string | undefined>>): Promise<DoubleConfig> {
  const file = env.FLEETPATCH_DOUBLE_CONFIG;
  if (file) {
    let text: string;
    try {
      const bytes = await readFile(file);
      if (bytes.length > MAX_CONFIG_BYTES) throw invalid(file, `is ${bytes.length} bytes; a double's config is at most ${MAX_CONFIG_BYTES}`);
      text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
    } catch (e) {
      if (e instanceof FleetpatchError) throw e;
      throw invalid(file, `cannot be read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
    }
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch (e) {
      throw invalid(file, `is not JSON (${(e as Error).message})`);
    }
    return parse(file, json);
  }
  const { FLEETPATCH_DOUBLE_URL: url, FLEETPATCH_DOUBLE_HOST: hostId, FLEETPATCH_DOUBLE_TOKEN: token } = env;
  if (!url && !hostId && !token) {
    throw invalid('the environment', 'set FLEETPATCH_DOUBLE_CONFIG to a JSON file {"url","hostId","token"}, or FLEETPATCH_DOUBLE_URL, FLEETPATCH_DOUBLE_HOST and FLEETPATCH_DOUBLE_TOKEN');
  }
  return parse('the environment (FLEETPATCH_DOUBLE_URL, _HOST, _TOKEN)', { url, hostId, token });
}
