/**
 * The emulator's own journal of what happened on each host: uploads, applies, reverts, replaces,
 * unloads, reboots and every dependency check the hypervisor made. It is the hypervisor's side of
 * the story, kept apart from fleetpatch's events, so a chaos run can check fleetpatch's record
 * against what really happened (nothing applied twice, every change and check recorded).
 *
 * Entries come from comparing a host's state before and after each request (`transitions`, pure),
 * so every path that changes a host, including asynchronous actions completing and crashes, is
 * journalled the same way.
 */
import { bootId, type DependencyCheck, type Host } from './state-machine.ts';

export interface JournalEntry {
  /** Wall time of the request that saw the change. */
  at: string;
  /** The boot the host was in after the change. */
  boot: string;
  kind: 'uploaded' | 'applied' | 'reverted' | 'unloaded' | 'replaced' | 'rebooted' | 'failed' | 'checked';
  name?: string;
  buildId?: string;
  /** For `checked`: the check the hypervisor made; for `failed`: the rc. */
  check?: DependencyCheck;
  rc?: number;
}

/** What changed between two states of one host (in the order Xen would have done it). */
export function transitions(before: Host, after: Host): Omit<JournalEntry, 'at'>[] {
  const boot = bootId(after);
  if (after.boots !== before.boots) {
    const out: Omit<JournalEntry, 'at'>[] = [{ boot, kind: 'rebooted' }];
    // Whatever the host did after coming back up within the same request (nothing, in practice).
    return out;
  }
  const out: Omit<JournalEntry, 'at'>[] = [];
  const was = new Map(before.payloads.map((p) => [p.name, p]));
  const now = new Map(after.payloads.map((p) => [p.name, p]));
  const replaced = after.stack.length === 1 && !before.stack.includes(after.stack[0]!) && before.stack.length > 0 && before.stack.every((n) => !after.stack.includes(n));
  for (const [name, p] of was) {
    if (!now.has(name)) out.push({ boot, kind: 'unloaded', name, buildId: p.facts.buildId });
  }
  for (const [name, p] of now) {
    if (!was.has(name)) out.push({ boot, kind: 'uploaded', name, buildId: p.facts.buildId });
  }
  for (const name of [...before.stack].reverse()) {
    const p = now.get(name);
    if (p && p.state === 'CHECKED') out.push({ boot, kind: 'reverted', name, buildId: p.facts.buildId });
  }
  for (const name of after.stack) {
    if (before.stack.includes(name)) continue;
    const p = now.get(name)!;
    out.push({ boot, kind: replaced ? 'replaced' : 'applied', name, buildId: p.facts.buildId });
  }
  for (const [name, p] of now) {
    const old = was.get(name);
    if (old && old.rc === -11 && p.rc !== 0 && p.rc !== -11) out.push({ boot, kind: 'failed', name, buildId: p.facts.buildId, rc: p.rc });
  }
  return out;
}
