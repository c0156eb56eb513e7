/**
 * The live code of an emulated host: the image's bytes with what every applied payload wrote over
 * them (xen/arch/x86/livepatch.c, arch_livepatch_apply). Expectations (Xen 4.14+) compare against
 * these bytes at APPLY, and a NOPed function's result is decided from them.
 *
 * Applying a function writes, at old_addr (or 4 bytes further when the function starts with
 * ENDBR64, or its poisoned form: the CET hotpatching offset), either `e9 <rel32>`, a 5-byte jump
 * to new_addr, or, for a NOP entry (new_addr 0), new_size bytes of NOPs (Xen's add_nops with the
 * P6 NOPs, at most 8 bytes each). Payloads applied on top of each other overwrite one another's
 * bytes, so the live bytes are the image's with every applied payload's patches written over them,
 * bottom of the stack first.
 *
 * Pure: no node: imports.
 */
/** The part of a patched function the live code depends on (the state machine's PatchedFunction has it). */
export interface FunctionPatch {
  readonly oldAddr: bigint;
  readonly newAddr: bigint;
  readonly newSize: number;
  readonly nop: boolean;
}

/** The part of a host the live code depends on: its image's bytes and its applied payloads' patches. */
export interface CodeView {
  readonly image: { readonly codeAt?: (address: bigint, length: number) => Uint8Array | null | undefined };
  readonly payloads: readonly { readonly name: string; readonly facts: { readonly funcs: readonly FunctionPatch[] } }[];
  readonly stack: readonly string[];
}

/** ARCH_PATCH_INSN_SIZE: jmp rel32. */
export const PATCH_INSN_SIZE = 5;
const ENDBR64 = [0xf3, 0x0f, 0x1e, 0xfa];
/** What Xen writes over an ENDBR64 it seals (nopl (%rax) with an operand-size prefix). */
const ENDBR64_POISON = [0x66, 0x0f, 0x1f, 0x00];
export const ENDBR64_LEN = 4;

/** P6_NOP1..P6_NOP8 (Xen's ideal_nops on current CPUs). */
const P6_NOPS: readonly (readonly number[])[] = [
  [],
  [0x90],
  [0x66, 0x90],
  [0x0f, 0x1f, 0x00],
  [0x0f, 0x1f, 0x40, 0x00],
  [0x0f, 0x1f, 0x44, 0x00, 0x00],
  [0x66, 0x0f, 0x1f, 0x44, 0x00, 0x00],
  [0x0f, 0x1f, 0x80, 0x00, 0x00, 0x00, 0x00],
  [0x0f, 0x1f, 0x84, 0x00, 0x00, 0x00, 0x00, 0x00],
];
const ASM_NOP_MAX = 8;

/** add_nops: `len` bytes of NOPs, in pieces of at most 8. */
export function nopBytes(len: number): Uint8Array {
  const out = new Uint8Array(Math.max(0, len));
  let at = 0;
  while (at < out.length) {
    const n = Math.min(out.length - at, ASM_NOP_MAX);
    out.set(P6_NOPS[n]!, at);
    at += n;
  }
  return out;
}

function startsWith(bytes: Uint8Array | null, prefix: readonly number[]): boolean {
  return !!bytes && bytes.length >= prefix.length && prefix.every((b, i) => bytes[i] === b);
}

/** Where the patch goes in a function whose first bytes are `head`: after an ENDBR64 (or its poison). */
export function patchOffset(head: Uint8Array | null): number {
  return startsWith(head, ENDBR64) || startsWith(head, ENDBR64_POISON) ? ENDBR64_LEN : 0;
}

/** The bytes arch_livepatch_apply writes for `f` at old_addr + offset. */
export function patchBytes(f: FunctionPatch, offset: number): Uint8Array {
  if (f.nop) return nopBytes(f.newSize);
  const insn = new Uint8Array(PATCH_INSN_SIZE);
  insn[0] = 0xe9;
  const rel = BigInt.asIntN(32, f.newAddr - (f.oldAddr + BigInt(offset) + BigInt(PATCH_INSN_SIZE)));
  new DataView(insn.buffer).setInt32(1, Number(rel), true);
  return insn;
}

/** Writes `patch` (placed at `patchAt`) over `bytes` (placed at `address`) where they overlap. */
export function overlay(bytes: Uint8Array, address: bigint, patch: Uint8Array, patchAt: bigint): void {
  const from = patchAt > address ? patchAt : address;
  const end = patchAt + BigInt(patch.length) < address + BigInt(bytes.length) ? patchAt + BigInt(patch.length) : address + BigInt(bytes.length);
  for (let a = from; a < end; a++) bytes[Number(a - address)] = patch[Number(a - patchAt)]!;
}

/**
 * `length` bytes of live code at `address`: the image's bytes with the patches of every applied
 * payload written over them, bottom of the stack first; null when the image has no bytes there.
 */
export function liveCode(host: CodeView, address: bigint, length: number): { bytes: Uint8Array; patchedBy: string | null } | null {
  const original = host.image.codeAt?.(address, length);
  if (!original) return null;
  const bytes = Uint8Array.from(original);
  let patchedBy: string | null = null;
  for (const name of host.stack) {
    const p = host.payloads.find((x) => x.name === name);
    if (!p) continue;
    for (const f of p.facts.funcs) {
      const offset = patchOffset(host.image.codeAt?.(f.oldAddr, ENDBR64_LEN) ?? null);
      const patch = patchBytes(f, offset);
      const at = f.oldAddr + BigInt(offset);
      if (at < address + BigInt(length) && at + BigInt(patch.length) > address) {
        overlay(bytes, address, patch, at);
        patchedBy = name;
      }
    }
  }
  return { bytes, patchedBy };
}
