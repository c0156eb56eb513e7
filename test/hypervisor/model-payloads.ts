/**
 * Payloads as plain facts, for state-machine tests that need no ELF: a fake upload checker that
 * knows them by the bytes it is given (the UTF-8 of a key) and applies the upload checks the state
 * machine relies on (name and build-id already loaded: EEXIST; xen_depends: EINVAL).
 */
import { XenError } from '../../src/errors.ts';
import type { CallResult, HostImage, PayloadFacts, UploadChecker } from '../../src/emulator/state-machine.ts';

export const HV_BUILD_ID = 'aa'.repeat(20);
export const OTHER_HV_BUILD_ID = 'bb'.repeat(20);

export const IMAGE: HostImage = {
  name: 'test-image',
  buildId: HV_BUILD_ID,
  functions: new Map([
    ['xen_extra_version', { address: 0xffff82d040200020n, size: 8, result: { kind: 'string', value: '-unstable' } as CallResult }],
    ['xen_minor_version', { address: 0xffff82d040200010n, size: 6, result: { kind: 'integer', value: 19 } as CallResult }],
  ]),
  functionAt: (a) => (a === 0xffff82d040200020n ? 'xen_extra_version' : a === 0xffff82d040200010n ? 'xen_minor_version' : undefined),
  source: null,
};

export interface FakeSpec {
  buildId: string;
  depends?: string;
  xenDepends?: string | null;
  /** Target function -> the string it returns while this payload provides it. */
  returns?: Record<string, string>;
  safeToReapply?: boolean;
  vetoingHooks?: boolean;
  metadata?: string[];
}

export function facts(spec: FakeSpec): PayloadFacts {
  const funcs = Object.entries(spec.returns ?? { xen_extra_version: `from ${spec.buildId.slice(0, 4)}` }).map(([target, value]) => ({
    target,
    name: target,
    oldAddr: IMAGE.functions.get(target)?.address ?? 0n,
    oldSize: 8,
    newAddr: 0xffff82d040400000n,
    newSize: 8,
    nop: false,
    result: { kind: 'string', value } as CallResult,
  }));
  return {
    buildId: spec.buildId,
    depends: spec.depends ?? HV_BUILD_ID,
    xenDepends: spec.xenDepends === undefined ? HV_BUILD_ID : spec.xenDepends,
    funcs,
    vetoingHooks: spec.vetoingHooks ?? false,
    metadata: spec.metadata ?? [],
    safeToReapply: spec.safeToReapply ?? true,
    layout: { textAddr: 0xffff82d040400000n, rwAddr: 0xffff82d040401000n, roAddr: 0xffff82d040402000n, pages: 3 },
    model: spec,
  };
}

export function bytesOf(key: string): Uint8Array {
  return new TextEncoder().encode(key);
}

/** A checker that knows payloads by key (the uploaded bytes are the key's UTF-8). */
export function fakeChecker(library: Record<string, FakeSpec>): UploadChecker {
  return ({ name, bytes, image, loaded }) => {
    if (name.length === 0 || name.length > 127) throw new XenError('EINVAL', 'bad name');
    if (bytes.length === 0) throw new XenError('EINVAL', `${name}: the payload is empty`);
    if (loaded.some((p) => p.name === name)) throw new XenError('EEXIST', `a payload named ${name} is already loaded`);
    const spec = library[new TextDecoder().decode(bytes)];
    if (!spec) throw new XenError('EINVAL', `${name}: not an ELF file`);
    if (spec.xenDepends === null) throw new XenError('EINVAL', `${name}: .livepatch.xen_depends is missing`);
    if ((spec.xenDepends ?? HV_BUILD_ID) !== image.buildId) throw new XenError('EINVAL', `${name}: build-id mismatch`);
    const dup = loaded.find((p) => p.facts.buildId === spec.buildId);
    if (dup) throw new XenError('EEXIST', `${name}: build-id ${spec.buildId} is already loaded as ${dup.name}`);
    return facts(spec);
  };
}

export function id(n: number): string {
  return n.toString(16).padStart(2, '0').repeat(20);
}
