/**
 * Reading the files a command is given, bounded: stat first, refuse what is not a regular file
 * (a directory, a FIFO, /dev/zero, a socket) before reading a byte, refuse sizes beyond the limit
 * of its kind, and never read more than that limit even if the file grows meanwhile.
 *
 * Errors (docs/runtime.md):
 * - not there, a directory, a symlink loop, not a regular file: USAGE (exit 2): the command line
 *   named a file that is not one (every file read here is one a command was given);
 * - there but unreadable (permissions, I/O): FILE_ERROR with the errno (exit 1);
 * - too large: the kind's own refusal (exit 1): EINVAL for payloads, like Xen's upload;
 *   FILE_TOO_LARGE for the rest.
 */
import { constants, type Stats } from 'node:fs';
import { open, stat } from 'node:fs/promises';
import { FleetpatchError, XenError } from '../errors.ts';

/** What fleetpatch reads, and the most it reads of each (documented in docs/runtime.md). */
export const FILE_LIMITS = {
  /** Xen's LIVEPATCH_MAX_SIZE (2 MiB, MAX_PAYLOAD_SIZE in src/payload/upload-check.ts; a test keeps them equal): a bigger payload is refused with EINVAL. */
  payload: 2 * 1024 * 1024,
  /** A rollout plan (YAML or JSON); a plan naming 10,000 hosts by id is about 200 KiB. */
  plan: 1024 * 1024,
  /** A linked hypervisor image (xen-syms). */
  image: 64 * 1024 * 1024,
  /** A payload build spec. */
  spec: 1024 * 1024,
  /** Signing keys, public keys and signatures (JSON, a few hundred bytes). */
  key: 64 * 1024,
  signature: 64 * 1024,
  /** A fault-injection file. */
  faults: 1024 * 1024,
  /** A fleet file (100,000 hosts with their tokens is about 20 MiB). */
  fleet: 64 * 1024 * 1024,
} as const;

export type FileKind = keyof typeof FILE_LIMITS;

const NOUN: Record<FileKind, string> = {
  payload: 'payload',
  plan: 'plan',
  image: 'hypervisor image',
  spec: 'payload spec',
  key: 'key file',
  signature: 'signature file',
  faults: 'faults file',
  fleet: 'fleet file',
};

function describeStat(s: Stats): string {
  if (s.isDirectory()) return 'a directory';
  if (s.isFIFO()) return 'a FIFO (named pipe)';
  if (s.isCharacterDevice()) return 'a character device';
  if (s.isBlockDevice()) return 'a block device';
  if (s.isSocket()) return 'a socket';
  return 'not a regular file';
}

/** The error for a file that cannot be used, by the errno Node gave. */
export function fileError(e: unknown, file: string, kind: FileKind): FleetpatchError {
  if (e instanceof FleetpatchError) return e;
  const code = (e as NodeJS.ErrnoException).code ?? 'EIO';
  const what = `${NOUN[kind]} ${file}`;
  switch (code) {
    case 'ENOENT':
      return new FleetpatchError('USAGE', `${what}: no such file`, { file, errno: code });
    case 'ENOTDIR':
      return new FleetpatchError('USAGE', `${what}: a component of the path is not a directory`, { file, errno: code });
    case 'ELOOP':
      return new FleetpatchError('USAGE', `${what}: too many levels of symbolic links (a symlink loop)`, { file, errno: code });
    case 'EISDIR':
      return new FleetpatchError('USAGE', `${what}: is a directory`, { file, errno: code });
    case 'ENAMETOOLONG':
      return new FleetpatchError('USAGE', `${what}: the file name is too long`, { file, errno: code });
    default:
      return new FleetpatchError('FILE_ERROR', `cannot read ${what}: ${code}${(e as Error).message ? ` (${(e as Error).message.replace(/^[A-Z]+: /, '').split(',')[0]})` : ''}`, { file, errno: code });
  }
}

function tooLarge(file: string, kind: FileKind, size: number | bigint): FleetpatchError {
  const limit = FILE_LIMITS[kind];
  if (kind === 'payload') {
    return new XenError('EINVAL', `${file}: the payload is ${size} bytes; Xen refuses payloads over 2 MiB (${limit} bytes, LIVEPATCH_MAX_SIZE)`, { step: 1, check: 'size', file, size: Number(size) });
  }
  return new FleetpatchError('FILE_TOO_LARGE', `${NOUN[kind]} ${file} is ${size} bytes; fleetpatch reads at most ${limit} bytes of a ${NOUN[kind]}`, { file, size: Number(size), limit });
}

/**
 * The bytes of a regular file of at most FILE_LIMITS[kind] bytes. The path is looked at first
 * (stat never blocks on a FIFO and never reads a device), then opened without blocking and looked
 * at again through the descriptor, so a file swapped in between is caught too.
 */
export async function readInputFile(file: string, kind: FileKind): Promise<Uint8Array> {
  const limit = FILE_LIMITS[kind];
  let before: Stats;
  try {
    before = await stat(file);
  } catch (e) {
    throw fileError(e, file, kind);
  }
  if (before.isDirectory()) throw new FleetpatchError('USAGE', `${NOUN[kind]} ${file}: is a directory`, { file, errno: 'EISDIR' });
  if (!before.isFile()) throw new FleetpatchError('USAGE', `${NOUN[kind]} ${file}: is ${describeStat(before)}, not a regular file`, { file });
  if (before.size > limit) throw tooLarge(file, kind, before.size);
  let handle;
  try {
    handle = await open(file, constants.O_RDONLY | constants.O_NONBLOCK | (constants.O_NOCTTY ?? 0));
  } catch (e) {
    throw fileError(e, file, kind);
  }
  try {
    const now = await handle.stat();
    if (!now.isFile()) throw new FleetpatchError('USAGE', `${NOUN[kind]} ${file}: is ${describeStat(now)}, not a regular file`, { file });
    if (now.size > limit) throw tooLarge(file, kind, now.size);
    // One byte more than the size seen tells a file that grew since it was looked at.
    const buffer = Buffer.alloc(Number(now.size) + 1);
    let size = 0;
    for (;;) {
      const { bytesRead } = await handle.read(buffer, size, buffer.length - size, size);
      if (bytesRead === 0) break;
      size += bytesRead;
      if (size > now.size) throw new FleetpatchError('FILE_ERROR', `${NOUN[kind]} ${file} grew while it was being read; try again once it is complete`, { file });
    }
    return new Uint8Array(buffer.buffer, buffer.byteOffset, size);
  } catch (e) {
    throw fileError(e, file, kind);
  } finally {
    await handle.close().catch(() => undefined);
  }
}

/**
 * Checks, without reading it, that `file` is a regular file within the limit of its kind: for
 * files another module then reads itself.
 */
export async function checkInputFile(file: string, kind: FileKind): Promise<void> {
  let s: Stats;
  try {
    s = await stat(file);
  } catch (e) {
    throw fileError(e, file, kind);
  }
  if (s.isDirectory()) throw new FleetpatchError('USAGE', `${NOUN[kind]} ${file}: is a directory`, { file, errno: 'EISDIR' });
  if (!s.isFile()) throw new FleetpatchError('USAGE', `${NOUN[kind]} ${file}: is ${describeStat(s)}, not a regular file`, { file });
  if (s.size > FILE_LIMITS[kind]) throw tooLarge(file, kind, s.size);
}

/** The text of a bounded input file (UTF-8). */
export async function readInputText(file: string, kind: FileKind): Promise<string> {
  return new TextDecoder().decode(await readInputFile(file, kind));
}

/** True when `file` exists (whatever it is); errors other than "not there" are reported. */
export async function fileExists(file: string, kind: FileKind): Promise<boolean> {
  try {
    await stat(file);
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw fileError(e, file, kind);
  }
}
