/**
 * What a chaos run must prove, as pure checks over three accounts of the same run: the live hosts
 * (LIST), the emulated hypervisors' own journal (what really happened on each host), and
 * fleetpatch's event store. Each check returns a verdict with counts and the first offenders.
 */
import type { JournalEntry } from '../src/emulator/journal.ts';
import type { DomainEvent } from '../src/events/catalogue.ts';

export interface Verdict {
  name: string;
  ok: boolean;
  /** What was checked, in numbers. */
  detail: string;
  /** The first offenders, in words. */
  problems: string[];
}

const verdict = (name: string, problems: string[], detail: string): Verdict => ({ name, ok: problems.length === 0, detail, problems: problems.slice(0, 10) });

/** Every host's live stack equals the one replayed from its events. */
export function stacksAgree(live: Map<string, string[]>, replayed: Map<string, string[]>): Verdict {
  const problems: string[] = [];
  for (const [host, stack] of live) {
    const r = replayed.get(host) ?? [];
    if (r.join() !== stack.join()) problems.push(`${host}: live [${stack.join(', ')}], replayed [${r.join(', ')}]`);
  }
  return verdict('live stacks equal the replayed ones', problems, `${live.size} hosts compared`);
}

/** After the rollback, no payload of the rollout is loaded (let alone applied) on any host. */
export function nothingLeftAfterRollback(loaded: Map<string, string[]>, ours: ReadonlySet<string>, rollback: string): Verdict {
  const problems: string[] = [];
  for (const [host, buildIds] of loaded) {
    const left = buildIds.filter((b) => ours.has(b) || b === '<unreachable>');
    if (left.length > 0) problems.push(`${host}: still holds ${left.map((b) => b.slice(0, 12)).join(', ')}`);
  }
  return verdict('nothing of the rolled-back rollout is left loaded or applied', problems, `${loaded.size} hosts read; ${rollback}`);
}

/**
 * No payload of the rollouts was applied twice on a host within one boot (from the hypervisors'
 * journal). A REPLACE reverts the whole stack, also when it then fails; the restore of the stack
 * it reverted applies those payloads again, which is not a second patch: a payload's count starts
 * afresh when a REPLACE reverted it (the revert journalled with the REPLACE's outcome, another
 * payload replaced or failed, in the same request).
 */
export function nothingAppliedTwice(journal: Record<string, JournalEntry[]>, ours: ReadonlySet<string>): Verdict {
  const problems: string[] = [];
  let applies = 0;
  for (const [host, entries] of Object.entries(journal)) {
    const seen = new Map<string, number>();
    for (const e of entries) {
      const byReplace = e.kind === 'reverted' && entries.some((o) => o.at === e.at && o.boot === e.boot && o.name !== e.name && (o.kind === 'replaced' || o.kind === 'failed'));
      if (byReplace) seen.delete(`${e.boot}/${e.buildId}`);
      if ((e.kind === 'applied' || e.kind === 'replaced') && e.buildId && ours.has(e.buildId)) {
        applies++;
        const k = `${e.boot}/${e.buildId}`;
        seen.set(k, (seen.get(k) ?? 0) + 1);
        if (seen.get(k) === 2) problems.push(`${host}: ${e.name} applied twice in boot ${e.boot}`);
      }
    }
  }
  return verdict('no payload applied twice on a host (per boot, from the hypervisors\' journal)', problems, `${applies} applies of the rollout's payloads journalled`);
}

type Kind = 'uploaded' | 'applied' | 'reverted' | 'unloaded' | 'replaced';

/** Per host and payload, how many of each change the events record. */
function recordedChanges(events: readonly DomainEvent[]): Map<string, number> {
  const out = new Map<string, number>();
  const add = (k: string) => out.set(k, (out.get(k) ?? 0) + 1);
  const kindOf: Partial<Record<DomainEvent['type'], Kind>> = {
    PayloadUploaded: 'uploaded',
    PayloadApplied: 'applied',
    PayloadReverted: 'reverted',
    PayloadUnloaded: 'unloaded',
    PayloadReplaced: 'replaced',
  };
  for (const e of events) {
    const kind = kindOf[e.type];
    if (!kind) continue;
    const { hostId, payload } = e as { hostId: string; payload: { buildId: string } };
    // A REPLACE on an empty stack reverted nothing: to the hypervisor it is an APPLY, journalled so.
    add(`${hostId}/${e.type === 'PayloadReplaced' && e.replaced.length === 0 ? 'applied' : kind}/${payload.buildId}`);
    // REPLACE reverts the whole stack: the journal sees those reverts one by one.
    if (e.type === 'PayloadReplaced') for (const r of e.replaced) add(`${hostId}/reverted/${r.buildId}`);
  }
  return out;
}

/**
 * Every change the hypervisors made to a payload's state has its event (restated ones count),
 * and no event claims a change that never happened.
 */
export function everyChangeRecorded(journal: Record<string, JournalEntry[]>, events: readonly DomainEvent[]): Verdict {
  const happened = new Map<string, number>();
  let changes = 0;
  for (const [host, entries] of Object.entries(journal)) {
    for (const e of entries) {
      if (e.kind === 'uploaded' || e.kind === 'applied' || e.kind === 'reverted' || e.kind === 'unloaded' || e.kind === 'replaced') {
        changes++;
        const k = `${host}/${e.kind}/${e.buildId}`;
        happened.set(k, (happened.get(k) ?? 0) + 1);
      }
    }
  }
  const recorded = recordedChanges(events);
  const problems: string[] = [];
  for (const [k, n] of happened) {
    const r = recorded.get(k) ?? 0;
    if (r < n) problems.push(`${k}: ${n} on the host, ${r} recorded`);
  }
  for (const [k, r] of recorded) {
    const n = happened.get(k) ?? 0;
    if (r > n) problems.push(`${k}: ${r} recorded, only ${n} on the host`);
  }
  return verdict('every payload change on a host has its event, and no event invents one', problems, `${changes} changes journalled, ${[...recorded.values()].reduce((a, b) => a + b, 0)} recorded`);
}

/** Every dependency check a hypervisor made is recorded (with what was expected and found). */
export function everyCheckRecorded(journal: Record<string, JournalEntry[]>, events: readonly DomainEvent[]): Verdict {
  const made = new Map<string, number>();
  let checks = 0;
  for (const [host, entries] of Object.entries(journal)) {
    for (const e of entries) {
      if (e.kind !== 'checked' || !e.check) continue;
      checks++;
      const k = `${host}/${e.check.kind}/${e.check.payloadBuildId}/${e.check.expected}/${e.check.found}`;
      made.set(k, (made.get(k) ?? 0) + 1);
    }
  }
  const recorded = new Map<string, number>();
  for (const e of events) {
    if (e.type !== 'DependencyChecked' || !e.reason?.startsWith('checked by the hypervisor')) continue;
    const k = `${e.hostId}/${e.on}/${e.payload.buildId}/${e.expected}/${e.found}`;
    recorded.set(k, (recorded.get(k) ?? 0) + 1);
  }
  const problems: string[] = [];
  for (const [k, n] of made) {
    const r = recorded.get(k) ?? 0;
    if (r < n) problems.push(`${k}: made ${n}, recorded ${r}`);
  }
  return verdict('every dependency check a hypervisor made is recorded', problems, `${checks} checks journalled`);
}

/** A host's latest outcome in one rollout (its repairs included) that was a failure. */
export interface FailedHost {
  rolloutId: string;
  hostId: string;
  why: string;
}

/** The hosts each rollout ended with failed (the latest outcome of each host counts), from its events. */
export function failedHosts(events: readonly DomainEvent[]): FailedHost[] {
  const latest = new Map<string, FailedHost | null>();
  for (const e of events) {
    if (e.type !== 'HostPatchFinished') continue;
    const key = `${e.rolloutId}\u0000${e.hostId}`;
    latest.delete(key);
    latest.set(key, e.outcome === 'failed' ? { rolloutId: e.rolloutId, hostId: e.hostId, why: `${e.wave}: ${e.failure?.stage} ${e.failure?.code}: ${e.failure?.reason}` } : null);
  }
  return [...latest.values()].filter((f): f is FailedHost => f !== null);
}

/** Hosts the rollouts failed are hosts a host fault was injected on: infrastructure faults spend no budget. */
export function failuresAreHostFaults(failed: readonly FailedHost[], faultyHosts: ReadonlySet<string>): Verdict {
  const problems = failed.filter((f) => !faultyHosts.has(f.hostId)).map((f) => `${f.hostId} failed in ${f.rolloutId} without a host fault: ${f.why}`);
  return verdict('no failure budget spent on infrastructure faults', problems, `${failed.length} host outcome(s) failed, ${faultyHosts.size} host(s) had host faults injected`);
}

/**
 * Every repair of the rollout recorded each host it took as an outcome of its own, once, in its
 * wave; its totals (RepairFinished) are those outcomes; and each host's latest repair outcome is
 * what the host runs, as read right after the repair: patched runs the payload, failed runs none
 * of it. A host that rebooted after its outcome (the reboot recorded before the read) runs
 * nothing whatever the outcome said, and is counted apart.
 *
 * @param events the store's events in the global order, read after `live` was read
 * @param live each host's applied stack (build-ids) right after the repair
 */
export function repairsRecorded(events: readonly DomainEvent[], live: ReadonlyMap<string, string[]>, ours: ReadonlySet<string>, rolloutId: string): Verdict {
  const problems: string[] = [];
  const repairs = new Map<string, { lost: number; finished?: { patched: number; failed: number; reason?: string }; outcomes: Map<string, string[]> }>();
  const latest = new Map<string, { repair: string; outcome: string; at: number }>();
  const rebootedAt = new Map<string, number>();
  events.forEach((e, at) => {
    if (e.type === 'HostRebooted') rebootedAt.set(e.hostId, at);
    if (!('rolloutId' in e) || e.rolloutId !== rolloutId) return;
    if (e.type === 'RepairStarted') repairs.set(e.repair, { lost: e.lost, outcomes: new Map() });
    if (e.type === 'RepairFinished') {
      const r = repairs.get(e.repair);
      if (r) r.finished = { patched: e.patched, failed: e.failed, ...(e.reason ? { reason: e.reason } : {}) };
      else problems.push(`${e.repair} finished without having started`);
    }
    if (e.type === 'HostPatchFinished') {
      const r = repairs.get(e.wave);
      if (!r) return;
      r.outcomes.set(e.hostId, [...(r.outcomes.get(e.hostId) ?? []), e.outcome]);
      latest.set(e.hostId, { repair: e.wave, outcome: e.outcome, at });
    }
  });
  let outcomes = 0;
  let failed = 0;
  for (const [name, r] of repairs) {
    const all = [...r.outcomes.values()];
    outcomes += all.length;
    for (const [host, list] of r.outcomes) if (list.length > 1) problems.push(`${name}: ${host} has ${list.length} outcomes recorded (${list.join(', ')})`);
    const count = (o: string) => all.filter((l) => l[0] === o).length;
    failed += count('failed');
    if (!r.finished) {
      problems.push(`${name} never finished`);
      continue;
    }
    if (r.finished.patched !== count('patched') || r.finished.failed !== count('failed')) {
      problems.push(`${name}: its totals say ${r.finished.patched} patched and ${r.finished.failed} failed, its hosts' records ${count('patched')} patched and ${count('failed')} failed`);
    }
    if (!r.finished.reason && all.length !== r.lost) problems.push(`${name}: ${r.lost} host(s) had lost the payload, ${all.length} have an outcome recorded`);
  }
  let compared = 0;
  let rebootedSince = 0;
  for (const [host, l] of latest) {
    if ((rebootedAt.get(host) ?? -1) > l.at) {
      rebootedSince++;
      continue;
    }
    const stack = live.get(host);
    if (!stack) {
      problems.push(`${host}: recorded ${l.outcome} by ${l.repair}, not read after the repair`);
      continue;
    }
    compared++;
    const runs = stack.some((b) => ours.has(b));
    if (l.outcome === 'failed' && runs) problems.push(`${host}: recorded failed by ${l.repair}, runs the payload (${stack.map((b) => b.slice(0, 12)).join(', ')})`);
    if (l.outcome !== 'failed' && !runs) problems.push(`${host}: recorded ${l.outcome} by ${l.repair}, runs [${stack.map((b) => b.slice(0, 12)).join(', ')}]`);
  }
  return verdict(
    'every repair outcome is recorded per host, and is what the host runs',
    problems,
    `${repairs.size} repair(s), ${outcomes} host outcome(s) recorded (${failed} failed); ${compared} compared with the live hosts, ${rebootedSince} rebooted since`,
  );
}

/** Recorded drift means fleetpatch found a host in a state it could not explain. */
export function noUnexplainedDrift(events: readonly DomainEvent[]): Verdict {
  const drift = events.filter((e) => e.type === 'DriftDetected') as Extract<DomainEvent, { type: 'DriftDetected' }>[];
  return verdict('no unexplained drift (every difference was a recorded reboot or a restated step)', drift.map((d) => `${d.hostId}: ${d.differences[0]?.description}`), `${drift.length} DriftDetected events`);
}
