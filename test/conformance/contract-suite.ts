/**
 * The host contract, as one suite run against every implementation of it: the emulator
 * (emulator.int.test.ts) and the dom0 agent driving Xen's tools (there: its doubles over an
 * emulated host). Every row of Xen's order-of-application run (xen-livepatch.md section 5), in
 * order, on one host, and every refusal of sections 2 and 3 with its errno, each on a host of its
 * own. The checks are what the contract defines — errno names, states, rc, metadata, what a
 * patched function returns — never the wording of a reason, which only the emulator knows (a
 * real host says "Error 22" and leaves the why on its console).
 *
 * Where Xen allows two answers for one fact, both are taken:
 * - an action Xen refuses in the hypercall, or whose scheduled work fails, ends the same for a
 *   caller (the payload keeps its state, the errno is known): `refusedOrFailed` takes either,
 *   a thrown XenError or a final status with rc -errno;
 * - an action on a payload whose own action is pending: the hypercall says EBUSY, the tool says
 *   "Operation already in progress" without calling it (EAGAIN); both are retryable.
 *
 * Usage: `contractSuite('emulator', async () => ({ host: (opts) => …, payloads }))`, where `host()`
 * gives a host with nothing loaded (a new one per call) as a HostAgent, or anything with the
 * same methods; `slowActions` asks for one whose actions stay pending (rc -EAGAIN) for a minute.
 */
import { describe, expect, it } from 'vitest';
import type { HostAgent } from '../../src/agent/client.ts';
import type { ActionCmd, WireStatus } from '../../src/agent/contract.ts';
import { XEN_ERRNO, XenError, type XenErrnoName } from '../../src/errors.ts';

/** What the suite asks of a host: the contract's operations, as HostAgent offers them. */
export type ContractHost = Pick<HostAgent, 'listAll' | 'get' | 'upload' | 'action' | 'actAndWait' | 'call'>;

/** Xen's own test payloads (xen/test/livepatch), built for the hypervisor the hosts run. */
export interface ContractPayloads {
  /** xen_hello_world: "Hello World", depends on the hypervisor, has .bss, modinfo LIVEPATCH_RULEZ. */
  hello: Uint8Array;
  /** xen_bye_world: "Bye World!", depends on xen_hello_world. */
  bye: Uint8Array;
  /** xen_replace_world: "Hello Again World!", for REPLACE. */
  replace: Uint8Array;
  /** xen_nop: NOPs xen_minor_version, no .data: may be re-applied. */
  nop: Uint8Array;
  /** xen_nop without .livepatch.xen_depends. */
  noXenBuildId: Uint8Array;
}

export interface ContractTarget {
  /** A host with nothing loaded, not used by any other test. */
  host(opts?: { slowActions?: boolean }): Promise<ContractHost>;
  payloads: ContractPayloads;
  /** Per request and for the work of each action; a loaded machine is slow. */
  timeoutMs?: number;
}

const HELLO = 'xen_hello_world';
const BYE = 'xen_bye_world';
const REPLACE = 'xen_replace_world';
const NOP = 'xen_nop';
const EXTRA = 'xen_extra_version';

async function xenError(p: Promise<unknown>): Promise<XenError> {
  try {
    await p;
  } catch (e) {
    if (e instanceof XenError) return e;
    throw e;
  }
  throw new Error('expected Xen to refuse, and it did not');
}

/** Refused with `errno`, synchronously. */
async function refused(p: Promise<unknown>, errno: XenErrnoName): Promise<void> {
  expect((await xenError(p)).errnoName).toBe(errno);
}

export function contractSuite(label: string, open: () => Promise<ContractTarget>): void {
  describe(`the host contract: ${label}`, () => {
    let target: ContractTarget;
    const waitMs = () => Math.min(60_000, target.timeoutMs ?? 10_000);

    /** Runs an action to its end; the final status (null when nothing was scheduled). */
    const act = async (h: ContractHost, name: string, cmd: ActionCmd, nodeps = false): Promise<WireStatus | null> =>
      (await h.actAndWait(name, cmd, { waitMs: waitMs(), nodeps, deadlineMs: waitMs() })).status;

    /** The action ends in `state` with rc 0. */
    const done = async (h: ContractHost, name: string, cmd: ActionCmd, state: 'APPLIED' | 'CHECKED') => {
      await act(h, name, cmd);
      expect(await h.get(name)).toMatchObject({ state, rc: 0 });
    };

    /** Refused in the hypercall, or failed in its work: either way `errno`, and the payload still `state`. */
    const refusedOrFailed = async (h: ContractHost, name: string, cmd: ActionCmd, errno: XenErrnoName, state: 'APPLIED' | 'CHECKED') => {
      let status: WireStatus | null = null;
      try {
        status = await act(h, name, cmd);
      } catch (e) {
        if (!(e instanceof XenError)) throw e;
        expect(e.errnoName).toBe(errno);
      }
      if (status) expect(status.rc).toBe(-XEN_ERRNO[errno]);
      expect((await h.get(name)).state).toBe(state);
    };

    const load = async (h: ContractHost, name: string, bytes: Uint8Array) => {
      await h.upload(name, bytes);
      await done(h, name, 'apply', 'APPLIED');
    };
    const rows = async (h: ContractHost) => (await h.listAll()).entries.map((e) => [e.name, e.state, e.rc]);
    const extra = async (h: ContractHost) => (await h.call(EXTRA)).result;

    it('opens', async () => {
      target = await open();
    }, 300_000);

    it("runs Xen's order-of-application run, every row in order (section 5)", async () => {
      const { payloads: P } = target;
      const h = await target.host();
      const unpatched = await extra(h);

      // revert with nothing loaded: ENOENT
      await refused(h.action(HELLO, 'revert'), 'ENOENT');
      await refused(h.get(HELLO), 'ENOENT');

      // load hello: "Hello World"; load it again: EEXIST
      await load(h, HELLO, P.hello);
      expect(await extra(h)).toBe('Hello World');
      await refused(h.upload(HELLO, P.hello), 'EEXIST');

      // the list shows it APPLIED, with its .modinfo
      const list = await h.listAll();
      expect(list.entries.map((e) => ({ name: e.name, state: e.state, rc: e.rc, metadata: e.metadata }))).toEqual([{ name: HELLO, state: 'APPLIED', rc: 0, metadata: ['LIVEPATCH_RULEZ'] }]);

      // revert, unload, unload again: ENOENT
      await done(h, HELLO, 'revert', 'CHECKED');
      expect(await extra(h)).toBe(unpatched);
      await act(h, HELLO, 'unload');
      await refused(h.get(HELLO), 'ENOENT');
      await refused(h.action(HELLO, 'unload'), 'ENOENT');

      // hello, then bye on top of it: "Bye World!"
      await load(h, HELLO, P.hello);
      await load(h, BYE, P.bye);
      expect(await extra(h)).toBe('Bye World!');

      // upload replace and REPLACE: bye reverted, hello reverted, replace applied alone
      await h.upload(REPLACE, P.replace);
      await done(h, REPLACE, 'replace', 'APPLIED');
      expect(await rows(h)).toEqual([
        [HELLO, 'CHECKED', 0],
        [BYE, 'CHECKED', 0],
        [REPLACE, 'APPLIED', 0],
      ]);
      expect(await extra(h)).toBe('Hello Again World!');

      // apply hello: EINVAL (it has .data and was applied before)
      await refusedOrFailed(h, HELLO, 'apply', 'EINVAL', 'CHECKED');
      // apply bye: EINVAL (it depends on hello, and the top is replace)
      await refusedOrFailed(h, BYE, 'apply', 'EINVAL', 'CHECKED');
      // apply replace: nothing to do
      await act(h, REPLACE, 'apply');
      expect(await h.get(REPLACE)).toMatchObject({ state: 'APPLIED', rc: 0 });
      expect(await extra(h)).toBe('Hello Again World!');

      // revert replace, unload all three
      await done(h, REPLACE, 'revert', 'CHECKED');
      for (const name of [REPLACE, BYE, HELLO]) {
        await act(h, name, 'unload');
        await refused(h.get(name), 'ENOENT');
      }
      expect(await rows(h)).toEqual([]);
      expect(await extra(h)).toBe(unpatched);

      // nop: load, revert, apply again (no .data: allowed), unload while applied: EINVAL, still applied
      await load(h, NOP, P.nop);
      await done(h, NOP, 'revert', 'CHECKED');
      await done(h, NOP, 'apply', 'APPLIED');
      await refused(h.action(NOP, 'unload'), 'EINVAL');
      expect(await h.get(NOP)).toMatchObject({ state: 'APPLIED' });
    }, 300_000);

    describe('refusals, each with its errno, and nothing half-done', () => {
      it('upload without .livepatch.xen_depends: EINVAL, nothing loaded', async () => {
        const h = await target.host();
        await refused(h.upload('xen_no_xen_buildid', target.payloads.noXenBuildId), 'EINVAL');
        await refused(h.get('xen_no_xen_buildid'), 'ENOENT');
        expect(await rows(h)).toEqual([]);
      });

      it('a name of 128 bytes (no room for the NUL): EINVAL, nothing loaded; 127 bytes is a name', async () => {
        const h = await target.host();
        await refused(h.upload('n'.repeat(128), target.payloads.hello), 'EINVAL');
        expect(await rows(h)).toEqual([]);
        await h.upload('n'.repeat(127), target.payloads.hello);
        expect(await rows(h)).toEqual([['n'.repeat(127), 'CHECKED', 0]]);
      });

      it('a duplicate: the same name EEXIST, the same build-id under another name EEXIST', async () => {
        const h = await target.host();
        await h.upload(HELLO, target.payloads.hello);
        await refused(h.upload(HELLO, target.payloads.nop), 'EEXIST');
        await refused(h.upload('hello_again', target.payloads.hello), 'EEXIST');
        expect(await rows(h)).toEqual([[HELLO, 'CHECKED', 0]]);
      });

      it('an unknown payload: ENOENT for GET and for every action', async () => {
        const h = await target.host();
        await refused(h.get('nothing_here'), 'ENOENT');
        for (const cmd of ['apply', 'revert', 'replace', 'unload'] as const) await refused(h.action('nothing_here', cmd), 'ENOENT');
      });

      it('apply on the wrong build-id: bye on an empty stack is EINVAL, and with nodeps it applies', async () => {
        const h = await target.host();
        await h.upload(BYE, target.payloads.bye);
        await refusedOrFailed(h, BYE, 'apply', 'EINVAL', 'CHECKED');
        await act(h, BYE, 'apply', true);
        expect(await h.get(BYE)).toMatchObject({ state: 'APPLIED', rc: 0 });
        expect(await extra(h)).toBe('Bye World!');
      });

      it('revert of a payload that is not the top of the stack: EBUSY, the stack unchanged', async () => {
        const h = await target.host();
        await load(h, HELLO, target.payloads.hello);
        await load(h, BYE, target.payloads.bye);
        await refusedOrFailed(h, HELLO, 'revert', 'EBUSY', 'APPLIED');
        expect(await rows(h)).toEqual([
          [HELLO, 'APPLIED', 0],
          [BYE, 'APPLIED', 0],
        ]);
        expect(await extra(h)).toBe('Bye World!');
      });

      it('unload of an applied payload: EINVAL, still applied', async () => {
        const h = await target.host();
        await load(h, HELLO, target.payloads.hello);
        await refused(h.action(HELLO, 'unload'), 'EINVAL');
        expect(await h.get(HELLO)).toMatchObject({ state: 'APPLIED', rc: 0 });
      });

      it('while an action is pending: rc -EAGAIN; another action on the host EBUSY; one on the same payload EBUSY or EAGAIN', async () => {
        const h = await target.host({ slowActions: true });
        await h.upload(HELLO, target.payloads.hello);
        await h.upload(NOP, target.payloads.nop);
        await h.action(HELLO, 'apply');
        expect(await h.get(HELLO)).toMatchObject({ state: 'CHECKED', rc: -11 });
        const other = await xenError(h.action(NOP, 'apply'));
        expect(other.errnoName).toBe('EBUSY');
        expect(other.retryable).toBe(true);
        const same = await xenError(h.action(HELLO, 'revert'));
        expect(['EBUSY', 'EAGAIN']).toContain(same.errnoName);
        expect(same.retryable).toBe(true);
        expect(await h.get(NOP)).toMatchObject({ state: 'CHECKED', rc: 0 });
      });
    });
  });
}
