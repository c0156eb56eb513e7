/**
 * Files named on the command line are looked at before they are read: not there, a directory, a
 * symlink loop, a FIFO or a device is refused at once (USAGE: the command line names a file that is not one), a file that cannot be read says
 * why (FILE_ERROR with the errno), and nothing larger than the limit of its kind is read.
 * In the int tier: it makes its FIFO with mkfifo(1), a process.
 */
import { execFileSync } from 'node:child_process';
import { mkdtemp, open, rm, symlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { FleetpatchError, XenError } from '../../src/errors.ts';
import { FILE_LIMITS, readInputFile } from '../../src/runtime/files.ts';
import { MAX_PAYLOAD_SIZE } from '../../src/payload/upload-check.ts';

// Which files readInputFile opens: a file refused for its size must not even be opened.
vi.mock('node:fs/promises', async (importOriginal) => {
  const actual = await importOriginal<typeof import('node:fs/promises')>();
  return { ...actual, open: vi.fn(actual.open) };
});

let dir: string;
let fifo: string;
beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'fleetpatch-files-'));
  fifo = path.join(dir, 'fifo');
  execFileSync('mkfifo', [fifo]);
  await symlink(path.join(dir, 'loop-b'), path.join(dir, 'loop-a'));
  await symlink(path.join(dir, 'loop-a'), path.join(dir, 'loop-b'));
});
afterAll(() => rm(dir, { recursive: true, force: true }));

async function refusal(file: string, kind: keyof typeof FILE_LIMITS = 'payload'): Promise<FleetpatchError> {
  const e = await readInputFile(file, kind).catch((x: unknown) => x);
  expect(e).toBeInstanceOf(FleetpatchError);
  return e as FleetpatchError;
}

describe('readInputFile', () => {
  it('reads no payload the hypervisor would refuse for its size, and refuses none it would take', () => {
    // runtime/ sits below payload/ and cannot import the constant; this keeps the two equal.
    expect(FILE_LIMITS.payload).toBe(MAX_PAYLOAD_SIZE);
  });

  it.each([
    ['a missing file', () => path.join(dir, 'missing'), /no such file/],
    ['a directory', () => dir, /is a directory/],
    ['a symlink loop', () => path.join(dir, 'loop-a'), /symlink loop/],
    ['/dev/zero', () => '/dev/zero', /a character device, not a regular file/],
    ['a FIFO (would block forever)', () => fifo, /a FIFO \(named pipe\), not a regular file/],
    ['a path through a file', () => '/etc/passwd/x', /not a directory/],
  ])('%s: USAGE, at once', async (_what, file, message) => {
    const e = await refusal(file());
    expect(e.code).toBe('USAGE');
    expect(e.message).toMatch(message);
  });

  it('a file that cannot be read: FILE_ERROR with the errno (not a usage error)', async () => {
    // /proc/self/mem is a regular file whose first page is not mapped: read(2) fails with EIO.
    const e = await refusal('/proc/self/mem');
    expect(e).toMatchObject({ code: 'FILE_ERROR', details: { errno: 'EIO' } });
  });

  it('a payload over 2 MiB is refused with EINVAL before a byte is read, like Xen', async () => {
    const big = path.join(dir, 'big.livepatch');
    const h = await open(big, 'w');
    await h.truncate(200 * 1024 * 1024);
    await h.close();
    vi.mocked(open).mockClear();
    const e = await refusal(big);
    expect(vi.mocked(open)).not.toHaveBeenCalled();
    expect(e).toBeInstanceOf(XenError);
    expect(e).toMatchObject({ code: 'EINVAL', details: { check: 'size' } });
    expect(e.message).toMatch(/209715200 bytes; Xen refuses payloads over 2 MiB/);
  });

  it('a plan over 1 MiB: FILE_TOO_LARGE', async () => {
    const big = path.join(dir, 'big.yaml');
    await writeFile(big, Buffer.alloc(FILE_LIMITS.plan + 1, 0x20));
    expect((await refusal(big, 'plan')).code).toBe('FILE_TOO_LARGE');
  });

  it('reads a regular file within the limit, exactly', async () => {
    const f = path.join(dir, 'ok.bin');
    await writeFile(f, Buffer.from([1, 2, 3]));
    vi.mocked(open).mockClear();
    expect([...(await readInputFile(f, 'payload'))]).toEqual([1, 2, 3]);
    // What the size refusal above is held to: the spy does see the files readInputFile opens.
    expect(vi.mocked(open)).toHaveBeenCalledWith(f, expect.anything());
    const limit = path.join(dir, 'limit.bin');
    await writeFile(limit, Buffer.alloc(FILE_LIMITS.payload));
    expect((await readInputFile(limit, 'payload')).length).toBe(FILE_LIMITS.payload);
  });
});
