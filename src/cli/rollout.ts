/**
 * `fleetpatch rollout plan|start|status|watch|pause|resume|abort|approve|rollback`.
 * `plan` is the dry run: it reads the live hosts and changes nothing (no host, no record).
 */
import os from 'node:os';
import { WorkflowUpdateFailedError } from '@temporalio/client';
import { FleetpatchError } from '../errors.ts';
import { FleetClient } from '../hypervisor/agent-client.ts';
import { readLiveStates } from '../hypervisor/live-state.ts';
import { preflight } from '../rollout/preflight.ts';
import { rolloutIdFor } from '../rollout/resolve.ts';
import type { Actor } from '../rollout/types.ts';
import { loadConfig } from '../runtime/config.ts';
import { abortUpdate, approveUpdate, pauseUpdate, resumeUpdate } from '../../workflows/messages.ts';
import type { rolloutWorkflow } from '../../workflows/rollout.ts';
import { rollbackWorkflow } from '../../workflows/rollback.ts';
import { parseCommandArgs, requirePositional } from './args.ts';
import { withServices } from './context.ts';
import type { CliIO, Command } from './io.ts';
import { connectClient, describeProgress, isFinal, readPlanFile, readProgress, resolvePlanPayloads, rolloutIdOf, startRollout, workflowIdOf } from './rollouts.ts';
import { renderTable } from './table.ts';
import { startFleetpatchWorker } from '../runtime/fleetpatch-worker.ts';

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
  return { kind: 'user', id: by ?? process.env.USER ?? os.userInfo().username };
}

function requireReason(reason: string | undefined, what: string): string {
  if (!reason || !reason.trim()) throw new FleetpatchError('USAGE', `rollout ${what}: say why with --reason "..." (it is recorded)`);
  return reason;
}

export const rolloutCommand: Command = async (args, io) => {
  const [sub, ...rest] = args;
  if (!sub || sub === '--help' || sub === '-h') {
    USAGE.forEach((l) => io.out(l));
    return sub ? 0 : 2;
  }
  const { values, positionals } = parseCommandArgs(rest, OPTIONS, `rollout ${sub}`);
  if (values.help) {
    USAGE.forEach((l) => io.out(l));
    return 0;
  }
  switch (sub) {
    case 'plan':
      return planCommand(requirePositional(positionals, 0, 'the plan file', 'rollout plan'), Boolean(values.json), io);
    case 'start':
      return startCommand(requirePositional(positionals, 0, 'the plan file', 'rollout start'), values, io);
    case 'status':
    case 'watch':
    case 'pause':
    case 'resume':
    case 'abort':
    case 'approve':
    case 'rollback': {
      const id = requirePositional(positionals, 0, 'the rollout id', `rollout ${sub}`);
      return controlCommand(sub, id, values, io);
    }
    default:
      throw new FleetpatchError('USAGE', `rollout: unknown command "${sub}" (plan, start, status, watch, pause, resume, abort, approve, rollback)`);
  }
};

async function planCommand(file: string, json: boolean, io: CliIO): Promise<number> {
  const config = loadConfig();
  const { plan, dir } = await readPlanFile(file);
  const needsStore = plan.payloads.some((p) => 'buildId' in p);
  const run = async (pool?: import('../runtime/database.ts').Pool) => {
    const resolved = await resolvePlanPayloads(plan, dir, { ...(pool ? { pool } : {}), actor: actor(undefined), store: false });
    const fleet = await FleetClient.open(config.fleetFile);
    const hosts = fleet.fleet.hosts.map((h) => ({ id: h.id, labels: h.labels, buildId: h.buildId }));
    const live = await readLiveStates(fleet, hosts.map((h) => h.id));
    const rolloutId = rolloutIdFor(resolved);
    const result = preflight(resolved, hosts, live, rolloutId);
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
    const resolved = await resolvePlanPayloads(plan, dir, { pool: services.pool, actor: by, store: true });
    const { client, close } = await connectClient(services.temporalAddress, services.namespace);
    shutdown.add('temporal client', close);
    if (values['with-worker']) await startFleetpatchWorker({ services, fleetFile: config.fleetFile, dataDir: config.dataDir, logger, shutdown });
    const s = await startRollout(client, services.taskQueue, resolved, { requestedBy: by, ...(values.reason ? { reason: values.reason } : {}), ...(values.id ? { rolloutId: values.id } : {}) });
    io.out(s.started ? `started rollout ${s.rolloutId} (workflow ${s.workflowId})` : `rollout ${s.rolloutId} already exists (workflow ${s.workflowId}); not started again`);
    if (!values['with-worker']) {
      const pollers = await client.workflowService
        .describeTaskQueue({ namespace: services.namespace, taskQueue: { name: services.taskQueue }, taskQueueType: 1 })
        .then((r) => r.pollers?.length ?? 0, () => 0);
      if (pollers === 0) io.err(`note: no worker polls task queue "${services.taskQueue}" yet; run \`fleetpatch worker\` (or start with --with-worker)`);
    }
    if (values.watch || values['with-worker']) return watch(client, s.rolloutId, io, Number(values['interval-ms'] ?? 1000), shutdown.signal);
    return 0;
  });
}

async function watch(client: import('@temporalio/client').Client, id: string, io: CliIO, intervalMs: number, signal: AbortSignal): Promise<number> {
  let last = '';
  for (;;) {
    const p = await readProgress(client, id);
    const text = describeProgress(p).join('\n');
    if (text !== last) {
      if (io.isTTY) io.out('\x1b[2J\x1b[H' + text);
      else io.out(`--- ${new Date().toISOString()}\n${text}`);
      last = text;
    }
    if (isFinal(p)) return p.status === 'succeeded' ? 0 : 1;
    await new Promise<void>((resolve) => {
      const t = setTimeout(resolve, intervalMs);
      signal.addEventListener('abort', () => (clearTimeout(t), resolve()), { once: true });
    });
    if (signal.aborted) return 130;
  }
}

async function controlCommand(sub: string, id: string, values: Values, io: CliIO): Promise<number> {
  return withServices({ database: sub === 'rollback', temporal: true }, async ({ services, shutdown }) => {
    const { client, close } = await connectClient(services.temporalAddress, services.namespace);
    shutdown.add('temporal client', close);
    const handle = client.workflow.getHandle<typeof rolloutWorkflow>(workflowIdOf(id));
    const by = actor(values.by);
    try {
      switch (sub) {
        case 'status': {
          const p = await readProgress(client, id);
          if (values.json) io.out(JSON.stringify(p, null, 2));
          else describeProgress(p).forEach((l) => io.out(l));
          return 0;
        }
        case 'watch':
          return watch(client, id, io, Number(values['interval-ms'] ?? 1000), shutdown.signal);
        case 'pause':
          io.out(describeProgress(await handle.executeUpdate(pauseUpdate, { args: [{ by, reason: requireReason(values.reason, sub) }] }))[0]!);
          return 0;
        case 'resume':
          io.out(describeProgress(await handle.executeUpdate(resumeUpdate, { args: [{ by, reason: requireReason(values.reason, sub) }] }))[0]!);
          return 0;
        case 'abort':
          io.out(describeProgress(await handle.executeUpdate(abortUpdate, { args: [{ by, reason: requireReason(values.reason, sub), rollback: Boolean(values.rollback) }] }))[0]!);
          return 0;
        case 'approve':
          io.out(describeProgress(await handle.executeUpdate(approveUpdate, { args: [{ by, reason: requireReason(values.reason, sub), ...(values.wave ? { wave: values.wave } : {}) }] }))[0]!);
          return 0;
        case 'rollback': {
          const reason = requireReason(values.reason, sub);
          const p = await readProgress(client, id);
          if (!isFinal(p)) throw new FleetpatchError('ROLLOUT_STATE', `rollout ${p.rolloutId} is still ${p.status}; use \`fleetpatch rollout abort ${p.rolloutId} --rollback --reason ...\``);
          const input = await rolloutInput(handle);
          const rb = await client.workflow.start(rollbackWorkflow, {
            taskQueue: services.taskQueue,
            workflowId: `${workflowIdOf(id)}/rollback-by-${by.id}-${Date.now()}`,
            args: [{ rolloutId: rolloutIdOf(id), mode: input.plan.mode, reason: `${reason} (requested by ${by.id})`, ...(input.plan.verify ? { verify: input.plan.verify } : {}), concurrency: input.plan.concurrency }],
          });
          io.out(`rolling back ${rolloutIdOf(id)} (workflow ${rb.workflowId})...`);
          const summary = await rb.result();
          io.out(`rolled back ${summary.rolledBack} hosts; ${summary.stackGrew} left alone because their stack grew above ours; ${summary.failed} failed; ${summary.nothingToDo} had nothing to revert`);
          for (const pr of summary.problems) io.out(`  ${pr.hostId}: ${pr.outcome}: ${pr.reason}`);
          return summary.failed > 0 ? 1 : 0;
        }
      }
    } catch (e) {
      if (e instanceof WorkflowUpdateFailedError) {
        throw new FleetpatchError('ROLLOUT_STATE', `rollout ${rolloutIdOf(id)} refused to ${sub}: ${(e.cause as Error | undefined)?.message ?? e.message}`);
      }
      throw e;
    }
    return 0;
  });
}

/** The rollout's input, from the first event of its history (Temporal keeps it there). */
async function rolloutInput(handle: import('@temporalio/client').WorkflowHandle<typeof rolloutWorkflow>) {
  const history = await handle.fetchHistory();
  const attrs = history.events?.[0]?.workflowExecutionStartedEventAttributes;
  const { defaultPayloadConverter } = await import('@temporalio/common');
  const payload = attrs?.input?.payloads?.[0];
  if (!payload) throw new FleetpatchError('ROLLOUT_NOT_FOUND', 'the rollout workflow has no recorded input');
  return defaultPayloadConverter.fromPayload<import('../rollout/types.ts').RolloutInput>(payload);
}

