/**
 * Puts the doubles where a dom0 agent can run them: a directory holding `xen-livepatch` and `xl`
 * (small sh scripts that run bin/*-double.js with this Node and name the config file) and the
 * config file itself (mode 0600: it holds the host's token). The scripts set
 * FLEETPATCH_DOUBLE_CONFIG themselves, so they work when the caller clears the environment, as
 * the agent's runner does (PATH and LC_ALL=C only).
 */
import { chmod, mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { DoubleConfigSchema, type DoubleConfig } from './config.ts';

const BIN = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'bin');

export interface InstalledDoubles {
  xenLivepatch: string;
  xl: string;
  config: string;
}

/** Single-quoted for sh: nothing inside is special but the quote itself. */
function shQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

function script(entry: string, config: string): string {
  // exec: the tool's process is node itself, so a timeout's kill of its group ends it.
  return `#!/bin/sh\nFLEETPATCH_DOUBLE_CONFIG=${shQuote(config)} exec ${shQuote(process.execPath)} ${shQuote(path.join(BIN, entry))} "$@"\n`;
}

/** Writes the two doubles and their config into `dir` (created if need be); returns their paths. */
export async function writeToolDoubles(dir: string, config: DoubleConfig): Promise<InstalledDoubles> {
  const checked = DoubleConfigSchema.parse(config);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const files: InstalledDoubles = { xenLivepatch: path.join(dir, 'xen-livepatch'), xl: path.join(dir, 'xl'), config: path.join(dir, 'double.json') };
  await writeFile(files.config, `${JSON.stringify(checked)}\n`, { mode: 0o600 });
  await writeFile(files.xenLivepatch, script('xen-livepatch-double.js', files.config), { mode: 0o700 });
  await writeFile(files.xl, script('xl-double.js', files.config), { mode: 0o700 });
  // writeFile's mode applies only when it creates the file.
  await Promise.all([chmod(files.config, 0o600), chmod(files.xenLivepatch, 0o700), chmod(files.xl, 0o700)]);
  return files;
}
