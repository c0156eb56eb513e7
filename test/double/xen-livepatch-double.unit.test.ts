/**
 * The xen-livepatch double on the transcripts no emulated host can produce: its hypercalls
 * answered by a script instead (an XSM denial, ENOMEM, an action hook's rc, a state after the work
 * that Xen does not reach), so every path of the double is held to what Xen 4.20's tool printed,
 * byte for byte. No socket, no process: the emulated-host half is xen-livepatch-double.int.test.ts.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HypercallError, type Hypercalls, type ListedEntry } from '../../src/double/hypercalls.ts';
import { exitCodeOf, runXenLivepatch } from '../../src/double/xen-livepatch.ts';
import { transcriptsOf } from '../host/fixtures/xen-livepatch-transcripts.ts';

const T = transcriptsOf('4.20');
const CAPTURED_DIR = '/tmp/fleetpatch-upload/';
let dir: string;

beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'xen-livepatch-double-unit-'));
  await writeFile(path.join(dir, 'xen_hello_world.livepatch'), new Uint8Array([0x7f, 0x45, 0x4c, 0x46]));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const refuse = (errno: number) => () => Promise.reject(new HypercallError(errno));
const never = () => Promise.reject(new Error('the tool must not make this hypercall here'));

function script(over: Partial<Hypercalls>): Hypercalls {
  return { list: never, get: never, upload: never, action: never, buildId: never, call: never, console: never, ...over };
}

/** GETs answered in turn: the status before the action, then after it. */
function gets(...answers: ({ state: 'CHECKED' | 'APPLIED'; rc: number } | number)[]): Hypercalls['get'] {
  let i = 0;
  return () => {
    const a = answers[i++];
    if (a === undefined) return never();
    return typeof a === 'number' ? Promise.reject(new HypercallError(a)) : Promise.resolve(a);
  };
}

const ok = () => Promise.resolve();

const ROWS: ListedEntry[] = [
  { name: 'xen_hello_world', state: 'APPLIED', rc: 0, metadata: ['LIVEPATCH_RULEZ'] },
  { name: 'xen_bye_world', state: 'CHECKED', rc: -22, metadata: [] },
  { name: 'xen_replace_world', state: 'APPLIED', rc: 0, metadata: [] },
  { name: 'lp_4.17.3-3.11.gf717213.xs8-4.17.3-3.12.xs8', state: 'CHECKED', rc: -11, metadata: ['a=1', 'b=2'] },
  { name: 'exactly_forty_bytes_long_payload_name_xx', state: 'CHECKED', rc: 0, metadata: [] },
  { name: 'x'.repeat(40), state: 'CHECKED', rc: -16, metadata: ['key=value'] },
  { name: 'ünïcödé_pätch', state: 'CHECKED', rc: 0, metadata: [] },
  { name: 'lp_hook_denied', state: 'CHECKED', rc: -1, metadata: [] },
  { name: 'lp_odd_rc', state: 'CHECKED', rc: -512, metadata: [] },
];

/** What each hypercall answers, for the scenarios an emulated host cannot produce. */
const SCRIPTED: Record<string, Hypercalls> = {
  'list-rows': script({ list: () => Promise.resolve(ROWS) }),
  'list-sizes-eperm': script({ list: refuse(1) }),
  'list-sizes-eacces': script({ list: refuse(13) }),
  'upload-enomem': script({ upload: refuse(12) }),
  'upload-ebusy': script({ upload: refuse(16) }),
  'upload-eperm': script({ upload: refuse(1) }),
  'apply-refused-eperm': script({ get: gets({ state: 'CHECKED', rc: 0 }), action: refuse(1) }),
  'apply-wrong-state-after': script({ get: gets({ state: 'CHECKED', rc: 0 }, { state: 'CHECKED', rc: 0 }), action: ok }),
  'unload-still-loaded': script({ get: gets({ state: 'CHECKED', rc: 0 }, { state: 'CHECKED', rc: 0 }), action: ok }),
};

describe("the xen-livepatch double, its hypercalls scripted, prints what Xen 4.20's tool prints", () => {
  for (const [name, hypercalls] of Object.entries(SCRIPTED)) {
    it(name, async () => {
      const t = T[name]!;
      const local = (s: string) => s.replaceAll(CAPTURED_DIR, `${dir}/`);
      let stdout = '';
      let stderr = '';
      const exitCode = await runXenLivepatch(t.argv.map(local), {
        hypercalls,
        streams: { out: (s) => void (stdout += s), err: (s) => void (stderr += s) },
        sleepMs: () => Promise.resolve(),
      });
      expect({ exitCode, stdout, stderr }).toEqual({ exitCode: t.exitCode, stdout: local(t.stdout as string), stderr: local(t.stderr as string) });
    });
  }

  it('a GET that fails after the action: the errno as "Error", as the tool does for rc -errno', async () => {
    let stdout = '';
    let stderr = '';
    const code = await runXenLivepatch(['revert', 'p'], {
      hypercalls: script({ get: gets({ state: 'APPLIED', rc: 0 }, 12), action: ok }),
      streams: { out: (s) => void (stdout += s), err: (s) => void (stderr += s) },
      sleepMs: () => Promise.resolve(),
    });
    expect({ code, stdout, stderr }).toEqual({ code: 1, stdout: 'Reverting p... failed\n', stderr: 'Error 12: Cannot allocate memory\n' });
  });

  it('sleeps once, 60 ms (twice the 30 ms it gives the hypervisor), between the action and its second GET', async () => {
    const slept: number[] = [];
    const timeouts: number[] = [];
    await runXenLivepatch(['apply', 'p', '--nodeps'], {
      hypercalls: script({
        get: gets({ state: 'CHECKED', rc: 0 }, { state: 'APPLIED', rc: 0 }),
        action: (_n, cmd, o) => {
          expect(cmd).toBe('apply');
          expect(o.nodeps).toBe(true);
          timeouts.push(o.timeoutNs);
          return ok();
        },
      }),
      streams: { out: () => undefined, err: () => undefined },
      sleepMs: async (ms) => void slept.push(ms),
    });
    expect({ slept, timeouts }).toEqual({ slept: [60], timeouts: [30_000_000] });
  });

  it("exits as main() does: 0, 2 for EAGAIN and EBUSY, 1 for anything else", () => {
    expect([0, 11, 16, 22, 2, -1, 1, 12].map(exitCodeOf)).toEqual([0, 2, 2, 1, 1, 1, 1, 1]);
  });
});
