/**
 * The key webhook notifications are signed with (HMAC-SHA256): FLEETPATCH_WEBHOOK_SECRET, or one
 * made once and kept (0600) in <data dir>/webhook-secret, so every worker sharing the data dir
 * signs alike. Receivers check `X-Fleetpatch-Signature` with it (docs/api.md#webhooks).
 */
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { loadConfig } from './config.ts';

let cached: Promise<string> | undefined;

export function webhookSecret(): Promise<string> {
  cached ??= (async () => {
    const config = loadConfig();
    if (config.webhookSecret) return config.webhookSecret;
    const file = path.join(config.dataDir, 'webhook-secret');
    const existing = await readFile(file, 'utf8').catch(() => null);
    if (existing && existing.trim()) return existing.trim();
    await mkdir(path.dirname(file), { recursive: true });
    const secret = randomBytes(32).toString('base64url');
    // wx: two workers starting at once keep whichever wrote first.
    await writeFile(file, `${secret}\n`, { mode: 0o600, flag: 'wx' }).catch(() => undefined);
    return (await readFile(file, 'utf8')).trim();
  })();
  return cached;
}
