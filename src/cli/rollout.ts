/**
 * `fleetpatch rollout plan|start|status|watch|pause|resume|abort|approve|rollback`.
 * `plan` is the dry run: it reads the live hosts and changes nothing (no host, no record).
 */
import os from 'node:os';
import { FleetpatchError } from '../errors.ts';
import { openInventory } from '../app/inventory.ts';
import type { Actor } from '../rollout/types.ts';
import { loadConfig } from '../runtime/config.ts';
import { startRepair, startRollback, steeringError, steerRollout } from '../control/steer.ts';
import { latestProgress } from '../control/later-runs.ts';
import { rolloutStatus } from '../control/status.ts';
import { taskQueueWorkers } from '../control/workers.ts';
import { boundedInteger, boundedText, parseCommandArgs, requirePositional } from './args.ts';
import { withServices } from '../app/context.ts';
import type { CliIO, Command } from './io.ts';
import { connectClient, describeProgress, describeRollback, readPlanFile, resolvePlanPayloads, rolloutIdOf, startRollout, watchProgress } from './rollouts.ts';
import { renderTable } from './table.ts';
import { startFleetpatchWorker } from '../app/worker.ts';
import { EventStore } from '../events/store.ts';
import { migrate } from '../events/migrate.ts';
import { startServices } from '../runtime/services.ts';
import { describeRolloutReport } from './audit.ts';
import { dryRunPreflight } from '../control/dry-run.ts';

const USAGE = [
  'Usage: fleetpatch rollout <command> [options]',
  '',
  '  plan <plan.yaml> [--json]                     dry-run preflight: hosts, builds, waves; changes nothing',
  '  start <plan.yaml> [--by WHO] [--reason WHY] [--id ID] [--watch] [--with-worker]',
  '  status <id> [--json]                          progress per wave, failures with reasons, decisions',
  '  watch <id>                                    live progress until the rollout ends',
  '  pause <id> --reason WHY [--by WHO]',
  '  resume <id> --reason WHY [--by WHO]',
  '  abort <id> --reason WHY [--by WHO] [--rollback]',
  '  approve <id> --reason WHY [--by WHO] [--wave NAME]',
  '  rollback <id> --reason WHY [--by WHO]         revert a finished rollout on every host it patched',
  '  repair <id> --reason WHY [--by WHO]           patch again the hosts of a finished rollout that lost its payload (rebooted)',
  '',
  'The fleet comes from FLEETPATCH_FLEET_FILE (default <FLEETPATCH_DATA_DIR>/fleet.json).',
];

const OPTIONS = {
  help: { type: 'boolean', short: 'h' },
  json: { type: 'boolean' },
  by: { type: 'string' },
  reason: { type: 'string' },
  id: { type: 'string' },
  wave: { type: 'string' },
  watch: { type: 'boolean' },
  'with-worker': { type: 'boolean' },
  rollback: { type: 'boolean' },
  'interval-ms': { type: 'string' },
} as const;

function actor(by: string | undefined): Actor {
  const id = by ?? process.env.USER ?? os.userInfo().username;
  if (!id.trim() || id.length > 200) throw new FleetpatchError('USAGE', `--by must name who acts in 1 to 200 characters`);
  return { kind: 'user', id };
}

function requireReason(reason: string | undefined, what: string): string {
  if (!reason || !reason.trim()) throw new FleetpatchError('USAGE', `rollout ${what}: say why with --reason "..." (it is recorded)`);
  // Recorded as is, and inside longer sentences ("aborted by <who>: <why>"): at most 1000 characters.
  return boundedText(reason, '--reason', MAX_REASON, `rollout ${what}`)!;
}

/** A reason is recorded as is and inside other sentences, which the catalogue caps at 2000 characters. */
const MAX_REASON = 1000;

/** What the workflow ids and the event store accept as a rollout id. */
const ROLLOUT_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

function rolloutIdArg(id: string, sub: string): string {
  if (!ROLLOUT_ID.test(id)) throw new FleetpatchError('USAGE', `rollout ${sub}: "${id.slice(0, 40)}" is not a rollout id (letters, digits, ".", "_", "-"; at most 128)`);
  return id;
}

function intervalMs(values: { 'interval-ms'?: string | undefined }, sub: string): number {
  return boundedInteger(values['interval-ms'], '--interval-ms', 50, 60_000, `rollout ${sub}`) ?? 1000;
}

export const rolloutCommand: Command = async (args, io) => {
  const [sub, ...rest] = args;
  if (!sub || sub === '--help' || sub === '-h') {
    USAGE.forEach((l) => io.out(l));
    if (!sub) throw new FleetpatchError('USAGE', 'rollout: missing command (plan, start, status, watch, pause, resume, abort, approve, rollback)');
    return 0;
  }
  const { values, positionals } = parseCommandArgs(rest, OPTIONS, `rollout ${sub}`);
  if (values.help) {
    USAGE.forEach((l) => io.out(l));
    return 0;
  }
  switch (sub) {
    case 'plan':
      return planCommand(requirePositional(positionals, 0, 'the plan file', 'rollout plan'), Boolean(values.json), io);
    case 'start': {
      const file = requirePositional(positionals, 0, 'the plan file', 'rollout start');
      if (values.id !== undefined) rolloutIdArg(values.id, sub);
      boundedText(values.reason, '--reason', MAX_REASON, 'rollout start');
      actor(values.by);
      intervalMs(values, sub);
      return startCommand(file, values, io);
    }
    case 'status':
    case 'watch':
    case 'pause':
    case 'resume':
    case 'abort':
    case 'approve':
    case 'rollback':
    case 'repair': {
      const id = rolloutIdArg(requirePositional(positionals, 0, 'the rollout id', `rollout ${sub}`), sub);
      // Everything the command line says is checked before any service is started.
      actor(values.by);
      intervalMs(values, sub);
      if (sub !== 'status' && sub !== 'watch') requireReason(values.reason, sub);
      if (values.wave !== undefined) boundedText(values.wave, '--wave', 63, `rollout ${sub}`);
      return controlCommand(sub, id, values, io);
    }
    default:
      throw new FleetpatchError('USAGE', `rollout: unknown command "${sub}" (plan, start, status, watch, pause, resume, abort, approve, rollback, repair)`);
  }
};

async function planCommand(file: string, json: boolean, io: CliIO): Promise<number> {
  const config = loadConfig();
  const { plan, dir } = await readPlanFile(file);
  // Payloads named by build-id come from the store; a REPLACE asks it which payloads it could put back.
  const needsStore = plan.payloads.some((p) => 'buildId' in p) || plan.mode === 'replace';
  const run = async (pool?: import('../runtime/database.ts').Pool) => {
    const resolved = await resolvePlanPayloads(plan, dir, { ...(pool ? { pool } : {}), actor: actor(undefined), store: false, planFile: file });
    const result = await dryRunPreflight(resolved, await openInventory({ fleetFile: config.fleetFile, dataDir: config.dataDir, ...(pool ? { pool } : {}) }), pool ? { pool } : {});
    const { rolloutId } = result;
    if (json) {
      io.out(JSON.stringify({ rolloutId, plan: resolved, summary: result.summary, waves: result.waves, hosts: result.hosts }, null, 2));
      return 0;
    }
    io.out(`rollout ${rolloutId} (dry run: nothing was changed)`);
    io.out('');
    io.out('payloads:');
    for (const p of resolved.payloads) io.out(`  ${p.name}  build-id ${p.buildId}  depends ${p.depends}  xen_depends ${p.xenDepends ?? '(none)'}`);
    const s = result.summary;
    io.out('');
    io.out(`hosts: ${s.selected} selected, ${s.targets} to patch, ${s.alreadyPatched} already patched, ${s.incompatible} incompatible, ${s.unreachable} unreachable now`);
    if (s.unknownHostIds.length) io.out(`unknown host ids in the plan: ${s.unknownHostIds.join(', ')}`);
    io.out('');
    const byBuild = new Map<string, number>();
    for (const t of result.targets) for (const b of t.buildIds) byBuild.set(b, (byBuild.get(b) ?? 0) + 1);
    for (const p of resolved.payloads) io.out(`  ${p.name}: ${byBuild.get(p.buildId) ?? 0} hosts`);
    io.out('');
    const rows = result.waves.map((w) => [w.name, w.steps.reduce((n, st) => n + st.hostIds.length, 0), w.concurrency, w.steps.length === 0 ? '(skipped: target reached)' : w.steps.map((st) => `${st.group ?? 'all'}:${st.hostIds.length}`).join(' ')]);
    renderTable(['wave', 'hosts', 'concurrency', 'steps'], rows).forEach((l) => io.out(l));
    const incompatible = result.hosts.filter((h) => h.verdict === 'incompatible');
    if (incompatible.length) {
      io.out('');
      io.out('incompatible hosts (left alone):');
      for (const h of incompatible.slice(0, 20)) io.out(`  ${h.hostId}: ${h.reason}`);
      if (incompatible.length > 20) io.out(`  ... ${incompatible.length - 20} more (--json lists all)`);
    }
    if (s.unrestorable) {
      io.out('');
      io.out(`warning: ${s.unrestorable} host(s) carry payloads with writable data that fleetpatch has no bytes for; if their REPLACE fails, their former stack cannot be put back:`);
      for (const u of s.unrestorableSamples ?? []) io.out(`  ${u.hostId}: ${u.payloads.join(', ')}`);
      io.out('  store those payloads first: fleetpatch payload store <file>');
    }
    const unreachable = result.hosts.filter((h) => h.verdict === 'unreachable');
    if (unreachable.length) {
      io.out('');
      io.out('unreachable now (they count as failures if still unreachable at their turn):');
      for (const h of unreachable.slice(0, 20)) io.out(`  ${h.hostId}: ${h.reason}`);
    }
    return 0;
  };
  if (!needsStore) return run();
  return withServices({ database: true, temporal: false }, ({ services }) => run(services.pool));
}

type Values = ReturnType<typeof parseCommandArgs<typeof OPTIONS>>['values'];

async function startCommand(file: string, values: Values, io: CliIO): Promise<number> {
  const { plan, dir } = await readPlanFile(file);
  return withServices({ database: true, temporal: true }, async ({ config, services, logger, shutdown }) => {
    const by = actor(values.by);
    const resolved = await resolvePlanPayloads(plan, dir, { pool: services.pool, actor: by, store: true, planFile: file });
    const { client, close } = await connectClient(services.temporal);
    shutdown.add('temporal client', close);
    if (values['with-worker']) await startFleetpatchWorker({ services, fleetFile: config.fleetFile, dataDir: config.dataDir, logger, shutdown });
    const s = await startRollout(client, services.taskQueue, resolved, { requestedBy: by, ...(values.reason ? { reason: values.reason } : {}), ...(values.id ? { rolloutId: values.id } : {}) });
    io.out(s.started ? `started rollout ${s.rolloutId} (workflow ${s.workflowId})` : `rollout ${s.rolloutId} already exists (workflow ${s.workflowId}); not started again`);
    if (!values['with-worker']) {
      const pollers = await taskQueueWorkers(client, services.taskQueue).then((w) => w.live, () => 0);
      if (pollers === 0) io.err(`note: no worker polls task queue "${services.taskQueue}" yet; run \`fleetpatch worker\` (or start with --with-worker)`);
    }
    if (values.watch || values['with-worker']) return watchProgress(() => latestProgress(client, s.rolloutId), io, intervalMs(values, 'start'), shutdown.signal);
    return 0;
  });
}

async function controlCommand(sub: string, id: string, values: Values, io: CliIO): Promise<number> {
  if (sub === 'status') return statusCommand(id, values, io);
  return withServices({ database: sub === 'rollback' || sub === 'repair', temporal: true }, async ({ services, shutdown }) => {
    const { client, close } = await connectClient(services.temporal);
    shutdown.add('temporal client', close);
    const by = actor(values.by);
    switch (sub) {
      case 'watch':
        return watchProgress(() => latestProgress(client, id), io, intervalMs(values, sub), shutdown.signal);
      case 'pause':
      case 'resume':
      case 'abort':
      case 'approve': {
        // A rollout that does not exist or has ended cannot take an update; one that no worker
        // runs would leave the update waiting: steerRollout says which, without waiting.
        const reason = requireReason(values.reason, sub);
        const p = await steerRollout(client, id, sub, { by, reason, ...(values.wave ? { wave: values.wave } : {}), rollback: Boolean(values.rollback) });
        io.out(describeProgress(p)[0]!);
        if (p.waiting) io.out(`waiting: ${p.waiting}`);
        return 0;
      }
      case 'repair': {
        const reason = requireReason(values.reason, sub);
        const handle = await startRepair(client, services.taskQueue, new EventStore(services.pool), id, by, reason);
        io.out(`repairing ${rolloutIdOf(id)} (workflow ${handle.workflowId}): reading every host it patched...`);
        const r = await handle.result().catch((e: unknown) => {
          throw steeringError(e, id, sub);
        });
        io.out(`${r.repair}: ${r.checked} host(s) read, ${r.lost} had lost the payload; ${r.patched} patched again, ${r.failed} failed${r.budgetReason ? `; stopped: ${r.budgetReason}` : ''}`);
        return r.failed > 0 || r.stopped !== 'done' ? 1 : 0;
      }
      case 'rollback': {
        const reason = requireReason(values.reason, sub);
        const rb = await startRollback(client, services.taskQueue, id, by, reason);
        io.out(`rolling back ${rolloutIdOf(id)} (workflow ${rb.workflowId})...`);
        const summary = await rb.result().catch((e: unknown) => {
          throw steeringError(e, id, sub);
        });
        describeRollback({ ...summary, status: 'finished', requestedBy: by, reason }).forEach((l) => io.out(l));
        return summary.outcome === 'rolled-back' ? 0 : 1;
      }
    }
    return 0;
  });
}

/**
 * The status of a rollout from whichever source can give it: Temporal (live, and with what ran
 * after the rollout ended), which needs no PostgreSQL; else what the event store recorded, saying
 * why on one line of stderr and exiting 1. Each service is started only when it is needed, so an
 * outage of one never hides what the other knows.
 */
async function statusCommand(id: string, values: Values, io: CliIO): Promise<number> {
  return withServices({ database: false, temporal: false }, async ({ config, logger, shutdown }) => {
    const view = await rolloutStatus(
      {
        temporal: async () => {
          const services = await startServices(config, logger, shutdown, { temporal: true, database: false });
          const { client, close } = await connectClient(services.temporal);
          shutdown.add('temporal client', close);
          return client;
        },
        store: async () => {
          const services = await startServices(config, logger, shutdown, { database: true, temporal: false, prepareDatabase: async (pool) => void (await migrate(pool)) });
          return new EventStore(services.pool);
        },
      },
      id,
    );
    if (view.source === 'temporal') {
      if (values.json) io.out(JSON.stringify(view.progress, null, 2));
      else describeProgress(view.progress).forEach((l) => io.out(l));
      return 0;
    }
    const message = `${view.why}; ${view.recorded ? 'what the event store recorded is shown instead' : 'the event store has recorded nothing for it yet'}`;
    if (values.json) {
      io.out(JSON.stringify({ ok: false, source: 'event store', error: { code: view.code, message, details: { ...(view.taskQueue ? { taskQueue: view.taskQueue } : {}) } }, recorded: view.recorded?.summary ?? null }, null, 2));
    } else if (view.recorded) {
      io.out(`(from the event store: ${view.why})`);
      describeRolloutReport(view.recorded).forEach((l) => io.out(l));
    }
    io.err(`fleetpatch: ${view.code}: ${message}`);
    return 1;
  });
}
