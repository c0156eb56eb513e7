import { execFile } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const BIN = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'bin', 'fleetpatch.js');

function fleetpatch(args: string[], env: Record<string, string>): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [BIN, ...args], { env: { ...process.env, ...env } }, (error, stdout, stderr) => {
      resolve({ code: error ? (typeof error.code === 'number' ? error.code : 1) : 0, stdout, stderr });
    });
  });
}

describe('the fleetpatch command with a wrong setting', () => {
  it('prints one line naming DATABASE_URL and exits 1, without a stack trace', async () => {
    const r = await fleetpatch(['demo'], { DATABASE_URL: 'not-a-url' });
    expect(r.code).toBe(1);
    const lines = r.stderr.trim().split('\n');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^fleetpatch: CONFIG_INVALID: DATABASE_URL="not-a-url": must be a URL like postgres:\/\//);
    expect(r.stderr).not.toMatch(/\bat .*\.ts:\d+/);
  });

  it('refuses an unknown command with usage and exit 2', async () => {
    const r = await fleetpatch(['frobnicate'], {});
    expect(r.code).toBe(2);
    expect(r.stderr).toBe('fleetpatch: USAGE: unknown command "frobnicate"\n');
    expect(r.stdout).toContain('Commands:');
  });

  it('names a password-bearing DATABASE_URL without its password', async () => {
    const r = await fleetpatch(['audit', 'verify'], { DATABASE_URL: 'postgres://user:secret@:5432/x' });
    expect(r.code).toBe(1);
    expect(r.stderr).toBe('fleetpatch: CONFIG_INVALID: DATABASE_URL="postgres://user:***@:5432/x": must be a URL like postgres://user@host:5432/database (with :password after the user if it needs one)\n');
  });
});
