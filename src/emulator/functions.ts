/**
 * The function table of a host: for each hypervisor function, which applied payload provides it
 * now, and what calling it returns. A health check reads this (`GET /hosts/:id/functions/:fn`,
 * `fleetpatch hv call <fn>`) the way Xen's test suite reads `xl info` after loading a payload.
 *
 * Xen patches by writing a jump at old_addr; applying a payload on top of another that patched the
 * same function overwrites that jump, and reverting restores the previous one. So the provider of a
 * function is the topmost applied payload that patches it, and with none, the image itself.
 */
import { XenError } from '../errors.ts';
import { appliedStack, settle, type CallResult, type Host, type Outcome } from './state-machine.ts';

export interface FunctionProvider {
  readonly name: string;
  readonly buildId: string;
}

export interface FunctionView {
  readonly function: string;
  readonly result: CallResult;
  /** null: the image's own code runs. */
  readonly providedBy: FunctionProvider | null;
}

/** The topmost applied payload patching `fn`, with the result of its replacement. */
function patchedBy(host: Host, fn: string): FunctionView | null {
  const stack = appliedStack(host);
  for (let i = stack.length - 1; i >= 0; i--) {
    const p = stack[i]!;
    const f = p.facts.funcs.find((x) => x.target === fn);
    if (!f) continue;
    const result: CallResult = p.corruptResult !== null ? { kind: 'string', value: p.corruptResult } : f.result;
    return { function: fn, result, providedBy: { name: p.name, buildId: p.facts.buildId } };
  }
  return null;
}

/**
 * Every function of the image, and every function a loaded payload patches, with its current
 * provider. A function only a payload that is not applied names, and the image does not have,
 * has no code to run: it is left out (it made GET /functions a 500; found by fuzzing).
 */
export function functionTable(host0: Host, now: number): FunctionView[] {
  const host = settle(host0, now);
  const names = new Set<string>(host.image.functions.keys());
  for (const p of host.payloads) for (const f of p.facts.funcs) names.add(f.target);
  return [...names].sort().flatMap((fn) => describe(host, fn) ?? []);
}

function describe(host: Host, fn: string): FunctionView | null {
  const patched = patchedBy(host, fn);
  if (patched) return patched;
  const own = host.image.functions.get(fn);
  return own ? { function: fn, result: own.result, providedBy: null } : null;
}

/** Calls `fn` on the emulated host: its result now, and who provides it. ENOENT for an unknown function. */
export function callFunction(host0: Host, fn: string, now: number): Outcome<FunctionView> {
  const host = settle(host0, now);
  const view = describe(host, fn);
  if (!view) return { ok: false, host, error: new XenError('ENOENT', `${fn}: no such function in ${host.image.name} or in any loaded payload`, { hostId: host.id, function: fn }) };
  return { ok: true, host, value: view };
}

/** The value a caller compares: the string, the number, or null when it cannot be known. */
export function resultValue(r: CallResult): string | number | null {
  return r.kind === 'undefined' ? null : r.value;
}

/**
 * How `fleetpatch hv call <fn>` prints a result: the string, the number, or a sentence saying why
 * it cannot be told ("cannot tell what xen_extra_version returns: its replacement … branches at +0x12").
 */
export function formatResult(r: CallResult, fn: string): string {
  switch (r.kind) {
    case 'string':
      return r.value;
    case 'integer':
      return String(r.value);
    case 'undefined':
      return `cannot tell what ${fn} returns: ${r.why}`;
  }
}
