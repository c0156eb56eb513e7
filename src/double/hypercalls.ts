/**
 * The four live-patch sysctls the tools make (LIST, GET, UPLOAD, ACTION) and the two `xl` reads,
 * as the doubles need them, answered by one emulated host through HostAgent. A hypercall that Xen
 * refuses is a `HypercallError` carrying the errno libxc leaves in `errno`; anything else (the
 * host unreachable, a protocol error) is not something a hypercall returns, and is thrown as it
 * came: the double dies of it, as a tool dies when dom0 goes away under it.
 */
import { XenError } from '../errors.ts';
import type { HostAgent } from '../agent/client.ts';
import type { ActionCmd, PayloadState } from '../agent/contract.ts';

export interface ListedEntry {
  name: string;
  state: PayloadState;
  rc: number;
  /** The .modinfo strings; xen-livepatch prints them joined by ';'. */
  metadata: string[];
}

export interface Hypercalls {
  list(): Promise<ListedEntry[]>;
  get(name: string): Promise<{ state: PayloadState; rc: number }>;
  upload(name: string, bytes: Uint8Array): Promise<void>;
  action(name: string, cmd: ActionCmd, opts: { timeoutNs: number; nodeps: boolean }): Promise<void>;
  /** XENVER_build_id: the running hypervisor's build-id (lowercase hex). */
  buildId(): Promise<string>;
  /** What a hypervisor function returns now: a string, a number, or null when it cannot be told. */
  call(fn: string): Promise<string | number | null>;
  /** The console ring (`xl dmesg`): the debug dump. */
  console(): Promise<string>;
}

/** A refused hypercall: the errno libxc leaves behind. */
export class HypercallError extends Error {
  constructor(readonly errno: number) {
    super(`hypercall failed with errno ${errno}`);
  }
}

async function hypercall<T>(call: () => Promise<T>): Promise<T> {
  try {
    return await call();
  } catch (e) {
    if (e instanceof XenError) throw new HypercallError(e.errno);
    throw e;
  }
}

/** The hypercalls of the host `agent` talks to. */
export function agentHypercalls(agent: HostAgent): Hypercalls {
  return {
    list: () => hypercall(async () => (await agent.listAll()).entries.map((e) => ({ name: e.name, state: e.state, rc: e.rc, metadata: e.metadata }))),
    get: (name) => hypercall(async () => {
      const s = await agent.get(name);
      return { state: s.state, rc: s.rc };
    }),
    upload: (name, bytes) => hypercall(async () => void (await agent.upload(name, bytes))),
    action: (name, cmd, opts) => hypercall(async () => void (await agent.action(name, cmd, opts))),
    buildId: () => hypercall(async () => (await agent.list({ idx: 0, nr: 0 })).hypervisor.buildId),
    call: (fn) => hypercall(async () => (await agent.call(fn)).result),
    console: () => hypercall(() => agent.dump()),
  };
}
