/**
 * Xen's own test payloads (xen/test/livepatch: xen_hello_world, xen_bye_world, xen_replace_world,
 * xen_nop, xen_no_xen_buildid), built in process by the payload builder for the emulator's
 * built-in image: quick to make, so tests in any tier can have them. The gcc-built ones
 * (test/fixtures/toolchain.ts) are the same payloads compiled and linked as Xen's Makefile does.
 */
import { buildPayload, type PayloadSpec } from '../../src/payload/builder.ts';
import { DEFAULT_IMAGE } from '../../src/payload/image.ts';
import { parsePayload } from '../../src/payload/model.ts';

const build = (spec: PayloadSpec) => buildPayload(spec, { image: DEFAULT_IMAGE });
const buildIdOf = (bytes: Uint8Array) => parsePayload(bytes).buildIdHex;

export interface XenTestPayloads {
  hello: Uint8Array;
  bye: Uint8Array;
  replace: Uint8Array;
  nop: Uint8Array;
  noXenBuildId: Uint8Array;
  /** Build-ids, lowercase hex. */
  buildIds: { hello: string; bye: string; replace: string; nop: string };
}

export function xenTestPayloads(): XenTestPayloads {
  const hello = build({ name: 'xen_hello_world', funcs: [{ target: 'xen_extra_version', returns: 'Hello World' }], writableData: 8, modinfo: ['LIVEPATCH_RULEZ'] });
  const bye = build({ name: 'xen_bye_world', depends: buildIdOf(hello), funcs: [{ target: 'xen_extra_version', returns: 'Bye World!' }] });
  const replace = build({ name: 'xen_replace_world', funcs: [{ target: 'xen_extra_version', returns: 'Hello Again World!', oldAddress: 'name' }] });
  const nop = build({ name: 'xen_nop', funcs: [{ target: 'xen_minor_version', nop: true }] });
  const noXenBuildId = build({ name: 'xen_no_xen_buildid', xenDepends: null, funcs: [{ target: 'xen_minor_version', nop: true }] });
  return { hello, bye, replace, nop, noXenBuildId, buildIds: { hello: buildIdOf(hello), bye: buildIdOf(bye), replace: buildIdOf(replace), nop: buildIdOf(nop) } };
}

/** Any other payload for the built-in image, patching xen_extra_version to return `returns`. */
export function otherPayload(name: string, returns: string, extra: Partial<PayloadSpec> = {}): Uint8Array {
  return build({ name, funcs: [{ target: 'xen_extra_version', returns }], ...extra });
}
