/**
 * The hypervisor's build-id from `xl info build_id` and `xl info`, in the formats of
 * tools/xl/xl_info.c (Xen 4.17 to 4.20: `maybe_printf("build_id               : %s\n", …)`; with
 * an argument, xl prints what follows ": " of each line that starts with it), and what xl prints
 * when it cannot give it.
 */
import { describe, expect, it } from 'vitest';
import { FleetpatchError } from '../../src/errors.ts';
import { parseXlBuildId, parseXlInfoBuildId } from '../../src/host/xl-info-output.ts';

const BUILD_ID = 'b48efad4098d4242ea8a36386ea1467ab59cffc9';

/** `xl info` of a 4.20 host: the keys and their padding as xl_info.c prints them; the values are an example. */
const XL_INFO = [
  'host                   : dom0-host-07',
  'release                : 6.1.0-28-amd64',
  'version                : #1 SMP PREEMPT_DYNAMIC Debian 6.1.119-1 (2024-11-22)',
  'machine                : x86_64',
  'nr_cpus                : 8',
  'max_cpu_id             : 7',
  'nr_nodes               : 1',
  'cores_per_socket       : 4',
  'threads_per_core       : 2',
  'cpu_mhz                : 2893.202',
  'hw_caps                : 178bfbff:f6d8320b:2e500800:244037ff:0000000f:219c91a9:00400004:00000500',
  'virt_caps              : pv hvm hvm_directio pv_directio hap shadow gnttab-v1 gnttab-v2',
  'total_memory           : 32605',
  'free_memory            : 30284',
  'sharing_freed_memory   : 0',
  'sharing_used_memory    : 0',
  'outstanding_claims     : 0',
  'free_cpus              : 0',
  'xen_major              : 4',
  'xen_minor              : 20',
  'xen_extra              : .0',
  'xen_version            : 4.20.0',
  'xen_caps               : xen-3.0-x86_64 hvm-3.0-x86_32 hvm-3.0-x86_32p hvm-3.0-x86_64',
  'xen_scheduler          : credit2',
  'xen_pagesize           : 4096',
  'platform_params        : virt_start=0xffff800000000000',
  'xen_changeset          : ',
  'xen_commandline        : placeholder dom0_mem=2048M,max:2048M',
  'cc_compiler            : gcc (Debian 12.2.0-14) 12.2.0',
  'cc_compile_by          : pkg-xen-devel',
  'cc_compile_domain      : lists.alioth.debian.org',
  'cc_compile_date        : Mon Mar 10 12:00:00 UTC 2025',
  `build_id               : ${BUILD_ID}`,
  'xend_config_format     : 4',
].join('\n') + '\n';

function failure(f: () => unknown): FleetpatchError {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(FleetpatchError);
    expect((e as Error).message).not.toMatch(/\n/);
    return e as FleetpatchError;
  }
  throw new Error('expected the read to throw');
}

describe('xl info build_id', () => {
  it('is the value alone on one line', () => {
    expect(parseXlBuildId({ exitCode: 0, stdout: `${BUILD_ID}\n`, stderr: '' })).toBe(BUILD_ID);
    // any whole number of bytes: Xen hands over what the build-id note holds
    expect(parseXlBuildId({ exitCode: 0, stdout: 'c0ffee\n', stderr: '' })).toBe('c0ffee');
  });

  it('an empty value (4.17 to 4.19) and "(null)" (4.20) mean Xen did not give it: the tool failed, though it exits 0', () => {
    for (const stdout of ['\n', '(null)\n']) {
      const e = failure(() => parseXlBuildId({ exitCode: 0, stdout, stderr: '' }));
      expect(e.code).toBe('HOST_TOOL_FAILED');
      expect(e.message).toMatch(/the hypervisor did not give it/);
    }
  });

  it('xl that cannot start says so on standard error and exits 1', () => {
    const e = failure(() =>
      parseXlBuildId({
        exitCode: 1,
        stdout: '',
        stderr: 'xencall: error: Could not obtain handle on privileged command interface: No such file or directory\nlibxl: error: libxl.c:102:libxl_ctx_alloc: cannot open libxc handle: No such file or directory\ncannot init xl context\n',
      }),
    );
    expect(e.code).toBe('HOST_TOOL_FAILED');
    expect(e.message).toBe('xl info build_id: xl exited with 1: "cannot init xl context"');
    expect(e.details.printed).toHaveLength(3);
  });

  it('nothing printed: a failure when xl said why, not understood when it did not', () => {
    expect(failure(() => parseXlBuildId({ exitCode: 0, stdout: '', stderr: 'get_scheduler sysctl failed.\n' })).message).toMatch(/"get_scheduler sysctl failed."/);
    expect(failure(() => parseXlBuildId({ exitCode: 0, stdout: '', stderr: '' })).code).toBe('HOST_TOOL_OUTPUT');
    expect(failure(() => parseXlBuildId({ exitCode: 3, stdout: '', stderr: '' })).message).toBe('xl info build_id: xl exited with 3 and said nothing');
  });

  it('anything but lowercase hex of whole bytes on exactly one line is refused, quoted', () => {
    for (const stdout of [`${BUILD_ID.toUpperCase()}\n`, 'abc\n', `0x${BUILD_ID}\n`, `${BUILD_ID} \n`, 'build_id               : abcd\n', `${BUILD_ID}\n${BUILD_ID}\n`, BUILD_ID, `${'ab'.repeat(4097)}\n`]) {
      const e = failure(() => parseXlBuildId({ exitCode: 0, stdout, stderr: '' }));
      expect(e.code).toBe('HOST_TOOL_OUTPUT');
    }
    expect(failure(() => parseXlBuildId({ exitCode: 0, stdout: Uint8Array.from([0x61, 0xff, 0x0a]), stderr: '' })).message).toMatch(/not UTF-8/);
    expect(failure(() => parseXlBuildId({ exitCode: 0, stdout: `${BUILD_ID}\n`, stderr: 'surprise\n' })).message).toMatch(/"surprise"/);
    // the libraries' log lines do not spoil a build-id that was printed
    expect(parseXlBuildId({ exitCode: 0, stdout: `${BUILD_ID}\n`, stderr: 'libxl: warning: something the library logs\n' })).toBe(BUILD_ID);
  });
});

describe('xl info', () => {
  it('gives the value of its build_id line', () => {
    expect(parseXlInfoBuildId({ exitCode: 0, stdout: XL_INFO, stderr: '' })).toBe(BUILD_ID);
  });

  it('refuses output with no build_id line, two, or one that is not hex', () => {
    expect(failure(() => parseXlInfoBuildId({ exitCode: 0, stdout: XL_INFO.replace(/^build_id.*\n/m, ''), stderr: '' })).message).toMatch(/no build_id line.*"xend_config_format     : 4"/);
    expect(failure(() => parseXlInfoBuildId({ exitCode: 0, stdout: XL_INFO + `build_id               : ${BUILD_ID}\n`, stderr: '' })).message).toMatch(/2 build_id lines/);
    expect(failure(() => parseXlInfoBuildId({ exitCode: 0, stdout: XL_INFO.replace(BUILD_ID, 'not-hex'), stderr: '' })).code).toBe('HOST_TOOL_OUTPUT');
    expect(failure(() => parseXlInfoBuildId({ exitCode: 0, stdout: XL_INFO.replace(`: ${BUILD_ID}`, `:${BUILD_ID}`), stderr: '' })).message).toMatch(/is not "build_id <spaces>: <hex>"/);
    expect(failure(() => parseXlInfoBuildId({ exitCode: 0, stdout: XL_INFO.replace(BUILD_ID, '(null)'), stderr: '' })).code).toBe('HOST_TOOL_FAILED');
    expect(failure(() => parseXlInfoBuildId({ exitCode: 0, stdout: '', stderr: '' })).message).toMatch(/it printed nothing/);
  });
});
