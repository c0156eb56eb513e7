/**
 * A second built-in hypervisor build, for fleets that mix builds (the demo, tests, benchmarks):
 * the same version getters as the default image, Xen 4.21, and its own build-id, so a fix must
 * be built once per build.
 */
import { defineImage, type HypervisorImage } from '../payload/index.ts';

export const XEN_4_21_IMAGE: HypervisorImage = defineImage({
  name: 'xen-4.21',
  buildId: '4c2f0f9a1d7e3b5a6c8e0d2f4a6b8c0e1f3a5b7d',
  functions: [
    { name: 'xen_major_version', returns: { kind: 'u32', value: 4 } },
    { name: 'xen_minor_version', returns: { kind: 'u32', value: 21 } },
    { name: 'xen_extra_version', returns: { kind: 'string', value: '-unstable' } },
    { name: 'xen_changeset', returns: { kind: 'string', value: 'fleetpatch image 4.21' } },
  ],
});
