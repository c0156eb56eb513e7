/**
 * Rollouts as a person reads them: progress and rollbacks as lines. Starting, finding and reading
 * rollouts lives in src/control/rollouts.ts (shared with the HTTP API); it is re-exported here for
 * the commands, the demo and the tests that import it from this module.
 */
import { FleetpatchError } from '../errors.ts';
import { isFinal } from '../control/rollouts.ts';
import { totals, type RollbackProgress, type RolloutProgress } from '../rollout/progress.ts';
import { describeStack } from '../rollout/restore.ts';
import type { CliIO } from './io.ts';
import { renderTable } from './table.ts';

export {
  ROLLOUT_WORKFLOW_PREFIX,
  connectClient,
  isFinal,
  readPlanFile,
  readProgress,
  resolvePlanPayloads,
  rolloutIdOf,
  startRollout,
  workflowIdOf,
  type ResolveOptions,
  type Started,
} from '../control/rollouts.ts';

/**
 * A rollback as lines a person reads: who asked and why, how many hosts are back, and for every
 * host that is not, where its stack stands, where it should, and why.
 */
export function describeRollback(r: Omit<RollbackProgress, 'problems'> & { problems: RollbackProgress['problems'] }): string[] {
  const back = r.rolledBack + r.nothingToDo;
  const notBack = r.stackGrew + r.unrecoverable + r.failed;
  const lines = [
    `rollback ${r.status}${r.status === 'finished' ? (notBack === 0 ? ' (every host is back to its former stack)' : ' (INCOMPLETE)') : r.status === 'failed' ? ' (INCOMPLETE: it stopped on an error)' : ''}, requested by ${r.requestedBy.id}${r.startedAt ? ` at ${r.startedAt}` : ''}: ${r.reason}`,
    `  ${back} of ${r.hosts} touched host(s) back (${r.rolledBack} restored, ${r.nothingToDo} had nothing to undo)${notBack > 0 ? `; NOT back: ${r.stackGrew} stack grew above ours, ${r.unrecoverable} unrecoverable, ${r.failed} failed` : ''}`,
  ];
  if (r.error) lines.push(`  ${r.error}`);
  for (const x of r.problems) {
    lines.push(`  ${x.hostId}: ${x.outcome}: stack now ${describeStack(x.stackNow)}, should be ${describeStack(x.formerStack)}: ${x.reason}`);
  }
  if (notBack > r.problems.length) lines.push(`  ... ${notBack - r.problems.length} more (see fleetpatch audit rollout)`);
  return lines;
}

/** Progress as lines a person reads: header, one row per wave, failures, decisions. */
export function describeProgress(p: RolloutProgress): string[] {
  const t = totals(p);
  const lines = [`rollout ${p.rolloutId} (${p.planName}): ${p.status}${p.stopReason ? ` — ${p.stopReason}` : ''}`];
  if (p.waiting) lines.push(`waiting: ${p.waiting}`);
  if (p.preflight) {
    const pf = p.preflight;
    lines.push(`preflight: ${pf.selected} hosts selected, ${pf.targets} to patch, ${pf.alreadyPatched} already patched, ${pf.incompatible} incompatible, ${pf.unreachable} unreachable`);
    if (pf.unrestorable) {
      lines.push(`warning: ${pf.unrestorable} host(s) carry payloads with writable data that fleetpatch has no bytes for; if their REPLACE fails, their former stack cannot be put back:`);
      for (const u of pf.unrestorableSamples ?? []) lines.push(`  ${u.hostId}: ${u.payloads.join(', ')} (store the file with \`fleetpatch payload store\`)`);
    }
  }
  // A repair is a wave of its own after the plan's: the hosts that had lost the payload.
  const repairs = (p.repairs ?? []).map((r) => [r.name, r.status, r.lost, r.patched + r.failed, r.patched, 0, r.failed, 0]);
  lines.push(
    ...renderTable(
      ['wave', 'status', 'planned', 'done', 'patched', 'already', 'failed', 'unreachable'],
      [...p.waves.map((w) => [w.name, w.status, w.planned, w.done, w.patched, w.already, w.failed, w.unreachable]), ...repairs],
    ),
  );
  lines.push(`total: ${t.done}/${t.planned} done, ${t.patched} patched, ${t.already} already, ${t.failed} failed${repairs.length > 0 ? ' (the plan\'s waves; repairs below)' : ''}`);
  for (const r of p.repairs ?? []) {
    lines.push(`${r.name} ${r.status}, requested by ${r.requestedBy.id} at ${r.startedAt}: ${r.reason}: ${r.status === 'running' ? 'reading and patching again the hosts that lost the payload' : `${r.checked} host(s) read, ${r.lost} had lost the payload; ${r.patched} patched again, ${r.failed} failed`}${r.stopReason ? `; stopped: ${r.stopReason}` : ''}`);
  }
  if (p.awaitingApprovalAfter) lines.push(`waiting for approval after wave "${p.awaitingApprovalAfter}": fleetpatch rollout approve ${p.rolloutId} --reason "..."`);
  if (p.bakingUntil) lines.push(`baking until ${p.bakingUntil}`);
  if (p.rollback) lines.push(...describeRollback(p.rollback));
  if (p.failures.length > 0) {
    lines.push('failures:');
    for (const f of p.failures.slice(0, 10)) lines.push(`  ${f.hostId} (${f.wave}, ${f.stage}): ${f.code}: ${f.reason}${f.restore ? `; ${f.restore}` : ''}`);
    if (p.failures.length > 10) lines.push(`  ... ${p.failures.length - 10} more (fleetpatch audit rollout ${p.rolloutId})`);
  }
  for (const d of p.decisions) lines.push(`${d.at} ${d.action} by ${d.by.id}${d.wave ? ` (wave ${d.wave})` : ''}: ${d.reason}`);
  return lines;
}

/**
 * Follows a rollout until it ends: its progress on every change, and once (not on every try) that
 * it cannot be read while Temporal or its worker is away. Exits 0 when it succeeded, 1 when it
 * ended otherwise, 130 when interrupted. Every wait removes what it added to `signal`.
 */
export async function watchProgress(read: () => Promise<RolloutProgress>, io: CliIO, intervalMs: number, signal: AbortSignal): Promise<number> {
  let last = '';
  let down: { since: Date } | undefined;
  for (;;) {
    let p: RolloutProgress;
    try {
      p = await read();
      down = undefined;
    } catch (e) {
      // Temporal away (restarting, network): say so once, and keep watching until it is back.
      if (!(e instanceof FleetpatchError && (e.code === 'TEMPORAL_UNAVAILABLE' || e.code === 'NO_WORKER')) && !isUnavailable(e)) throw e;
      if (!down) {
        down = { since: new Date() };
        io.err(`waiting: the rollout cannot be read since ${down.since.toISOString()} (${e instanceof Error ? e.message.split('\n')[0] : String(e)}); retrying`);
      }
      await pause(Math.max(intervalMs, 1000), signal);
      if (signal.aborted) return 130;
      continue;
    }
    const text = describeProgress(p).join('\n');
    if (text !== last) {
      if (io.isTTY) io.out('\x1b[2J\x1b[H' + text);
      else io.out(`--- ${new Date().toISOString()}\n${text}`);
      last = text;
    }
    if (isFinal(p)) return p.status === 'succeeded' ? 0 : 1;
    await pause(intervalMs, signal);
    if (signal.aborted) return 130;
  }
}

/** Waits `ms`, or less when `signal` aborts; either way its listener is gone afterwards. */
export function pause(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise<void>((resolve) => {
    if (signal.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener('abort', done, { once: true });
  });
}

/** A gRPC error that means the Temporal server is not answering (UNAVAILABLE, DEADLINE_EXCEEDED). */
function isUnavailable(e: unknown): boolean {
  const code = (e as { code?: number; cause?: { code?: number } } | undefined)?.code ?? (e as { cause?: { code?: number } } | undefined)?.cause?.code;
  return code === 14 || code === 4;
}
