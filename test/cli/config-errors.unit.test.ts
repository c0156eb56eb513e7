/**
 * The fleetpatch command with a wrong setting or command, run in-process (test/cli/support/run-cli.ts:
 * main() with everything written to stdout and stderr captured, as a user would see it).
 */
import { describe, expect, it } from 'vitest';
import { runCli } from './support/run-cli.ts';

describe('the fleetpatch command with a wrong setting', () => {
  it('prints one line naming DATABASE_URL and exits 1, without a stack trace', async () => {
    const r = await runCli(['demo'], { DATABASE_URL: 'not-a-url' });
    expect(r.code).toBe(1);
    const lines = r.stderr.trim().split('\n');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^fleetpatch: CONFIG_INVALID: DATABASE_URL="not-a-url": must be a URL like postgres:\/\//);
    expect(r.stderr).not.toMatch(/\bat .*\.ts:\d+/);
  });

  it('names a bad Temporal TLS setting in one line, and never shows the API key', async () => {
    const key = 'tmprl-very-SECRET-key-42';
    const missing = await runCli(['audit', 'verify'], { TEMPORAL_ADDRESS: 'temporal.internal:7233', TEMPORAL_API_KEY: key, TEMPORAL_TLS_SERVER_CA_CERT_PATH: '/nonexistent/ca.pem' });
    expect(missing.code).toBe(1);
    expect(missing.stderr).toBe('fleetpatch: TLS_MATERIAL_INVALID: TEMPORAL_TLS_SERVER_CA_CERT_PATH=/nonexistent/ca.pem: the server CA certificate file: no such file\n');
    const noAddress = await runCli(['audit', 'verify'], { TEMPORAL_ADDRESS: '', TEMPORAL_API_KEY: key });
    expect(noAddress.code).toBe(1);
    expect(noAddress.stderr).toMatch(/^fleetpatch: CONFIG_INVALID: TEMPORAL_API_KEY without TEMPORAL_ADDRESS: /);
    expect(missing.stderr + missing.stdout + noAddress.stderr + noAddress.stdout).not.toContain(key);
  });

  it('refuses an unknown command with usage and exit 2', async () => {
    const r = await runCli(['frobnicate']);
    expect(r.code).toBe(2);
    expect(r.stderr).toBe('fleetpatch: USAGE: unknown command "frobnicate"\n');
    expect(r.stdout).toContain('Commands:');
  });

  it('names a password-bearing DATABASE_URL without its password', async () => {
    const r = await runCli(['audit', 'verify'], { DATABASE_URL: 'postgres://user:secret@:5432/x' });
    expect(r.code).toBe(1);
    expect(r.stderr).toBe('fleetpatch: CONFIG_INVALID: DATABASE_URL="postgres://user:***@:5432/x": must be a URL like postgres://user@host:5432/database (with :password after the user if it needs one)\n');
  });

  it('the logger writes through fs.writeSync on fd 2, which runCli captures as stderr', async () => {
    // What runCli relies on to see a log line a command prints on its way to an error.
    const fs = (await import('node:fs')).default;
    const { createLogger } = await import('../../src/runtime/logger.ts');
    const lines: string[] = [];
    const original = fs.writeSync;
    try {
      fs.writeSync = ((fd: number, s: unknown) => (lines.push(`${fd}:${String(s)}`), String(s).length)) as typeof fs.writeSync;
      createLogger('info', { pretty: false }).info('hello from the logger');
    } finally {
      fs.writeSync = original;
    }
    expect(lines).toEqual([expect.stringMatching(/^2:\{.*"msg":"hello from the logger"/)]);
  });
});
