/**
 * The one way a command ends with an error: one line on stderr, `fleetpatch: CODE: message`, from
 * the catalogue, with its documented exit code; no stack trace; passwords masked; with --json, an
 * error object on stdout (except for usage errors, which print nothing there).
 */
import { describe, expect, it } from 'vitest';
import { EXIT_CODES, FleetpatchError, XenError, exitCodeFor, toCatalogued } from '../../src/errors.ts';
import { memoryIO } from '../../src/cli/io.ts';
import { main, reportError } from '../../src/cli/main.ts';

function errno(code: string, syscall: string, path?: string): NodeJS.ErrnoException {
  return Object.assign(new Error(`${code}: something, ${syscall}${path ? ` '${path}'` : ''}`), { code, syscall, ...(path ? { path } : {}) });
}

function named(name: string, message: string): Error {
  const e = new Error(message);
  Object.defineProperty(e, 'name', { value: name });
  return e;
}

describe('toCatalogued: every error is a catalogue error', () => {
  it.each([
    [new FleetpatchError('PLAN_INVALID', 'x'), 'PLAN_INVALID'],
    [errno('ENOENT', 'open', '/no/such'), 'USAGE'],
    [errno('ELOOP', 'stat', '/loop'), 'USAGE'],
    [errno('EISDIR', 'read', '/tmp'), 'USAGE'],
    [errno('EACCES', 'open', '/root/x'), 'FILE_ERROR'],
    [errno('EIO', 'read', '/proc/self/mem'), 'FILE_ERROR'],
    [errno('ECONNREFUSED', 'connect'), 'HOST_UNREACHABLE'],
    [named('WorkflowNotFoundError', 'Workflow not found: rollout-x'), 'ROLLOUT_NOT_FOUND'],
    [named('WorkflowUpdateFailedError', 'Update failed'), 'ROLLOUT_STATE'],
    [named('ServiceError', 'Failed to connect before the deadline'), 'TEMPORAL_UNAVAILABLE'],
    [Object.assign(new Error('terminating connection'), { severity: 'FATAL', code: '57P01' }), 'DATABASE_UNAVAILABLE'],
    [Object.assign(new Error('value out of range'), { severity: 'ERROR', code: '22003' }), 'INTERNAL'],
    [new RangeError('Invalid time value'), 'INTERNAL'],
    ['a string was thrown', 'INTERNAL'],
  ] as const)('%s -> %s', (e, code) => {
    const c = toCatalogued(e);
    expect(c).toBeInstanceOf(FleetpatchError);
    expect(c.code).toBe(code);
    expect(c.message).not.toContain('\n');
  });

  it('gives each code its documented exit code', () => {
    expect(exitCodeFor('USAGE')).toBe(EXIT_CODES.USAGE);
    expect(exitCodeFor('INTERNAL')).toBe(EXIT_CODES.INTERNAL);
    for (const code of ['PLAN_INVALID', 'ROLLOUT_NOT_FOUND', 'FILE_ERROR', 'EINVAL', 'PAYLOAD_TAMPERED', 'NO_WORKER'] as const) expect(exitCodeFor(code)).toBe(EXIT_CODES.FAILED);
  });
});

describe('reportError', () => {
  it('one line, no stack, even for an error nobody expected; its cause is kept for LOG_LEVEL=debug only', () => {
    const io = memoryIO();
    const e = new TypeError('Cannot read properties of undefined (reading \'x\')\n    at somewhere (file.ts:1:2)');
    expect(reportError(e, io)).toBe(70);
    expect(io.stderr).toHaveLength(1);
    expect(io.stderr[0]).toMatch(/^fleetpatch: INTERNAL: internal error: TypeError: Cannot read properties/);
    expect(io.stderr[0]).not.toMatch(/\bat .*:\d+:\d+/);
  });

  it('masks passwords in any message', () => {
    const io = memoryIO();
    reportError(new Error('connect to postgres://fp:hunter2@db/x failed'), io);
    expect(io.stderr.join('\n')).not.toContain('hunter2');
    expect(io.stderr[0]).toContain('postgres://fp:***@db/x');
  });

  it('--json: an error object on stdout; a usage error prints nothing there', () => {
    const io = memoryIO();
    expect(reportError(new FleetpatchError('FILE_ERROR', 'cannot read payload x: EIO', { errno: 'EIO', token: 'secret' }), io, { json: true })).toBe(1);
    expect(JSON.parse(io.stdout[0]!)).toEqual({ ok: false, error: { code: 'FILE_ERROR', message: 'cannot read payload x: EIO', details: { errno: 'EIO' } } });
    const usage = memoryIO();
    expect(reportError(new FleetpatchError('USAGE', 'payload x: no such file'), usage, { json: true })).toBe(2);
    expect(usage.stdout).toEqual([]);
    expect(usage.stderr).toEqual(['fleetpatch: USAGE: payload x: no such file']);
  });

  it('a Xen refusal keeps its errno name as the code', () => {
    const io = memoryIO();
    expect(reportError(new XenError('EINVAL', 'too big'), io)).toBe(1);
    expect(io.stderr).toEqual(['fleetpatch: EINVAL: too big']);
  });
});

describe('main', () => {
  it('no command: the usage on stdout, one line on stderr, exit 2', async () => {
    const io = memoryIO();
    expect(await main([], io)).toBe(2);
    expect(io.stdout.join('\n')).toContain('Commands:');
    expect(io.stderr).toEqual(['fleetpatch: USAGE: missing command (see the list above)']);
  });

  it('an unknown command, also one named like an Object property', async () => {
    for (const name of ['frobnicate', 'constructor', '__proto__', 'toString']) {
      const io = memoryIO();
      expect(await main([name], io)).toBe(2);
      expect(io.stderr).toEqual([`fleetpatch: USAGE: unknown command "${name}"`]);
    }
  });
});
