/**
 * What the host checks before Xen sees a payload, in this order, each with one clear error and
 * nothing run: the size Xen takes (EINVAL, as Xen), a name the tool's list can give back
 * (assertReadableName), a signature by one of the host's OWN trusted keys (PAYLOAD_UNSIGNED,
 * PAYLOAD_UNTRUSTED: a compromised control plane cannot make a host run what its owner did not
 * sign; verified before the bytes are parsed, so unsigned bytes never reach the ELF reader), the
 * ELF as Xen's loader reads it (src/payload: Xen's errno), and a .modinfo the list can print on
 * one row (PAYLOAD_REFUSED). What the parse learned is kept: xen-livepatch list shows none of it.
 */
import { createHash } from 'node:crypto';
import { FleetpatchError, XenError } from '../errors.ts';
import { MAX_SIGNATURE_HEADER_BYTES, SIGNATURE_HEADER } from '../agent/contract.ts';
import { parsePayload } from '../payload/model.ts';
import { MAX_PAYLOAD_SIZE } from '../payload/upload-check.ts';
import { SignatureFileSchema, readPublicKey, verifyPayload, type PayloadSignature, type PublicKey } from '../payload/signing.ts';
import { printable } from '../domain/text.ts';
import type { LearnedPayload } from './agent-state.ts';
import { assertReadableName } from './xen-livepatch-output.ts';

/** The signature header's value as a signature file, or PAYLOAD_UNTRUSTED saying what is wrong with it. */
export function decodeSignatureHeader(value: string, name: string): PayloadSignature {
  if (value.length > MAX_SIGNATURE_HEADER_BYTES) {
    throw new FleetpatchError('PAYLOAD_UNTRUSTED', `${name}: the ${SIGNATURE_HEADER} header is ${value.length} bytes; a signature is far shorter`, { payload: name });
  }
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(value.trim())) {
    throw new FleetpatchError('PAYLOAD_UNTRUSTED', `${name}: the ${SIGNATURE_HEADER} header is not base64`, { payload: name });
  }
  let doc: unknown;
  try {
    doc = JSON.parse(Buffer.from(value.trim(), 'base64').toString('utf8'));
  } catch {
    throw new FleetpatchError('PAYLOAD_UNTRUSTED', `${name}: the ${SIGNATURE_HEADER} header is not base64 of a signature file's JSON`, { payload: name });
  }
  const r = SignatureFileSchema.safeParse(doc);
  if (!r.success) {
    const i = r.error.issues[0]!;
    throw new FleetpatchError('PAYLOAD_UNTRUSTED', `${name}: the ${SIGNATURE_HEADER} header is not a fleetpatch payload signature (${printable(i.path.join('.') || '(top)')}: ${i.message})`, { payload: name });
  }
  return r.data;
}

/** The host's trusted keys file: a JSON array of public key files, or one. KEY_INVALID naming the file and the entry. */
export function readTrustedKeys(text: string, file: string): PublicKey[] {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (e) {
    throw new FleetpatchError('KEY_INVALID', `${file} is not JSON: ${(e as Error).message}`, { file });
  }
  const list = Array.isArray(doc) ? doc : [doc];
  if (list.length === 0) throw new FleetpatchError('KEY_INVALID', `${file} holds no key: the agent would refuse every payload`, { file });
  return list.map((k, i) => {
    try {
      return readPublicKey(JSON.stringify(k));
    } catch (e) {
      throw new FleetpatchError('KEY_INVALID', `${file}${Array.isArray(doc) ? ` [${i}]` : ''}: ${(e as Error).message}`, { file, index: i });
    }
  });
}

export interface GateInput {
  name: string;
  bytes: Uint8Array;
  /** The body was longer than the agent read (it stops at Xen's limit). */
  size: number;
  /** The signature header's value, if any. */
  signature: string | undefined;
  trusted: readonly PublicKey[];
  now: Date;
}

/** Every check before `xen-livepatch upload`; the payload's facts, or the first refusal. */
export function gateUpload(input: GateInput): LearnedPayload {
  const { name, bytes, size } = input;
  if (size === 0) throw new XenError('EINVAL', `${name}: the payload is empty; Xen refuses a payload of 0 bytes`, { payload: name, size });
  if (size > MAX_PAYLOAD_SIZE) {
    throw new XenError('EINVAL', `${name}: the payload is ${size} bytes; Xen accepts at most 2 MiB (${MAX_PAYLOAD_SIZE})`, { payload: name, size });
  }
  assertReadableName(name);
  if (input.signature === undefined || input.signature === '') {
    throw new FleetpatchError('PAYLOAD_UNSIGNED', `${name}: the payload comes without a signature (${SIGNATURE_HEADER}); this host runs only payloads signed by one of its ${input.trusted.length} trusted key(s)`, {
      payload: name,
    });
  }
  const signature = decodeSignatureHeader(input.signature, name);
  let key: PublicKey;
  try {
    key = verifyPayload(bytes, signature, input.trusted);
  } catch (e) {
    throw new FleetpatchError('PAYLOAD_UNTRUSTED', `${name}: ${(e as Error).message} (this host's own trusted keys)`, { payload: name, keyId: signature.keyId });
  }
  const payload = parsePayload(bytes, { name });
  for (const m of payload.modinfo) {
    if (/[\u0000-\u001f\u007f\ufffd]/.test(m.raw)) {
      throw new FleetpatchError(
        'PAYLOAD_REFUSED',
        `${name}: its .modinfo string "${printable(m.raw.slice(0, 60))}" holds a newline, a control character or bytes that are not UTF-8: xen-livepatch list prints .modinfo on the payload's row, where it could pass for a row of its own or not be read back`,
        { payload: name },
      );
    }
  }
  return {
    name,
    buildId: payload.buildIdHex,
    depends: payload.dependsHex,
    xenDepends: payload.xenDependsHex,
    metadata: payload.modinfo.map((m) => m.raw),
    functions: payload.funcs.map((f) => f.name ?? f.oldSymbol ?? '').filter((n) => n !== ''),
    safeToReapply: payload.canReapply,
    sha256: createHash('sha256').update(bytes).digest('hex'),
    size,
    signedBy: key.keyId,
    uploadedAt: input.now.toISOString(),
    reverted: false,
    lastCmd: null,
  };
}
