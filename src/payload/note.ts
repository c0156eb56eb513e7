/**
 * ELF build-id notes, checked exactly as Xen checks them (xen_build_id_check in
 * xen/common/version.c, plus the empty-descriptor check of prepare_payload).
 *
 * Layout: `{u32 namesz; u32 descsz; u32 type}` (12 bytes), the name at +12, the descriptor at
 * +12 + align4(namesz). A note is a valid build-id only if, in this order:
 *   1. the section is longer than the 12-byte header                         else EINVAL
 *   2. type == NT_GNU_BUILD_ID (3)                                           else ENODATA
 *   3. namesz + descsz does not wrap around in u32                           else EINVAL
 *   4. namesz >= 4                                                           else EINVAL
 *   5. namesz + descsz <= size - 12 (the name's padding is not counted)      else EINVAL
 *   6. the name starts with "GNU\0" (strncmp over namesz)                    else ENODATA
 *   7. descsz > 0                                                            else EINVAL
 *
 * Check 5 ignores the padding after the name, so a descriptor may legally end up to 3 bytes past
 * the section; Xen then reads the bytes that follow the section in the payload. `data` may
 * therefore extend beyond `size` (pass the file from the section's offset on); a descriptor that
 * would run past the end of `data` itself is refused with EINVAL instead of being read.
 */
import { XenError, type XenErrnoName } from '../errors.ts';

export const NT_GNU_BUILD_ID = 3;
export const NOTE_HEADER_SIZE = 12;

/** Which of the seven checks refused the note (1-based, as listed above). */
export type BuildIdNoteCheck = 1 | 2 | 3 | 4 | 5 | 6 | 7;

export interface BuildIdNote {
  readonly namesz: number;
  readonly descsz: number;
  readonly type: number;
  /** The descriptor: the build-id itself. */
  readonly buildId: Uint8Array;
}

function refuse(errno: XenErrnoName, check: BuildIdNoteCheck, reason: string, facts: Record<string, unknown>): never {
  throw new XenError(errno, reason, { check, ...facts });
}

/**
 * Parses and checks a build-id note of `size` bytes at the start of `data`. Throws XenError with
 * Xen's errno and `details.check` naming the failed check.
 */
export function parseBuildIdNote(data: Uint8Array, size: number = data.length): BuildIdNote {
  if (!(size > NOTE_HEADER_SIZE)) {
    refuse('EINVAL', 1, `the note is ${size} bytes, not longer than its ${NOTE_HEADER_SIZE}-byte header`, { size });
  }
  if (data.length < NOTE_HEADER_SIZE) {
    refuse('EINVAL', 1, `only ${data.length} bytes of the note's header are present`, { size });
  }
  const v = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const namesz = v.getUint32(0, true);
  const descsz = v.getUint32(4, true);
  const type = v.getUint32(8, true);
  const facts = { size, namesz, descsz, type };
  if (type !== NT_GNU_BUILD_ID) {
    refuse('ENODATA', 2, `the note's type is ${type}, not NT_GNU_BUILD_ID (${NT_GNU_BUILD_ID})`, facts);
  }
  if (namesz + descsz > 0xffffffff) {
    refuse('EINVAL', 3, `namesz ${namesz} + descsz ${descsz} wraps around 32 bits`, facts);
  }
  if (namesz < 4) {
    refuse('EINVAL', 4, `namesz is ${namesz}, too short for the owner "GNU\\0"`, facts);
  }
  if (namesz + descsz > size - NOTE_HEADER_SIZE) {
    refuse('EINVAL', 5, `namesz ${namesz} + descsz ${descsz} exceed the ${size - NOTE_HEADER_SIZE} bytes after the note header`, facts);
  }
  // strncmp(name, "GNU", namesz) with namesz >= 4 compares exactly "GNU\0".
  const name = data.subarray(NOTE_HEADER_SIZE, NOTE_HEADER_SIZE + 4);
  if (!(name[0] === 0x47 && name[1] === 0x4e && name[2] === 0x55 && name[3] === 0)) {
    const printable = Array.from(data.subarray(NOTE_HEADER_SIZE, NOTE_HEADER_SIZE + Math.min(namesz, 16)))
      .map((b) => (b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : b === 0 ? '\\0' : `\\x${b.toString(16).padStart(2, '0')}`))
      .join('');
    refuse('ENODATA', 6, `the note's owner is "${printable}", not "GNU"`, facts);
  }
  if (descsz === 0) {
    refuse('EINVAL', 7, 'the note carries an empty build-id (descsz 0)', facts);
  }
  const descAt = NOTE_HEADER_SIZE + align4(namesz);
  if (descAt + descsz > data.length) {
    refuse('EINVAL', 5, `the build-id (bytes ${descAt}..${descAt + descsz}) runs past the end of the payload`, facts);
  }
  return { namesz, descsz, type, buildId: data.slice(descAt, descAt + descsz) };
}

function align4(n: number): number {
  return Math.ceil(n / 4) * 4;
}

/** A well-formed GNU build-id note for `buildId` (what `ld --build-id` writes). */
export function encodeBuildIdNote(buildId: Uint8Array): Uint8Array {
  const out = new Uint8Array(NOTE_HEADER_SIZE + 4 + align4(buildId.length));
  const v = new DataView(out.buffer);
  v.setUint32(0, 4, true);
  v.setUint32(4, buildId.length, true);
  v.setUint32(8, NT_GNU_BUILD_ID, true);
  out.set([0x47, 0x4e, 0x55, 0], NOTE_HEADER_SIZE);
  out.set(buildId, NOTE_HEADER_SIZE + 4);
  return out;
}
