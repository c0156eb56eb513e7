/**
 * Rollouts as a person reads them: progress and rollbacks as lines. Starting, finding and reading
 * rollouts lives in src/control/rollouts.ts (shared with the HTTP API); it is re-exported here for
 * the commands, the demo and the tests that import it from this module.
 */
import { totals, type RollbackProgress, type RolloutProgress } from '../rollout/progress.ts';
import { describeStack } from '../rollout/restore.ts';
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
    `rollback ${r.status}${r.status === 'finished' ? (notBack === 0 ? ' (every host is back to its former stack)' : ' (INCOMPLETE)') : ''}, requested by ${r.requestedBy.id}: ${r.reason}`,
    `  ${back} of ${r.hosts} touched host(s) back (${r.rolledBack} restored, ${r.nothingToDo} had nothing to undo)${notBack > 0 ? `; NOT back: ${r.stackGrew} stack grew above ours, ${r.unrecoverable} unrecoverable, ${r.failed} failed` : ''}`,
  ];
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
  lines.push(
    ...renderTable(
      ['wave', 'status', 'planned', 'done', 'patched', 'already', 'failed', 'unreachable'],
      p.waves.map((w) => [w.name, w.status, w.planned, w.done, w.patched, w.already, w.failed, w.unreachable]),
    ),
  );
  lines.push(`total: ${t.done}/${t.planned} done, ${t.patched} patched, ${t.already} already, ${t.failed} failed`);
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
