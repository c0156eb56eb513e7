/**
 * `fleetpatch audit ...`: ask the event store what ran where, when, and why. Every subcommand
 * prints a table for people or, with --json, the full records for programs. `verify` exits 1 when
 * a hash chain is broken, `replay` when the live host differs from its events.
 */
import os from 'node:os';
import { boundedInteger, isoInstant, parseCommandArgs, requirePositional } from './args.ts';
import { withServices } from '../app/context.ts';
import type { CliIO, Command } from './io.ts';
import { renderTable } from './table.ts';
import { FleetpatchError } from '../errors.ts';
import type { FleetClient } from '../agent/client.ts';
import { openInventory } from '../app/inventory.ts';
import { loadConfig } from '../runtime/config.ts';
import { hostStateFromList } from '../agent/live-state.ts';
import {
  CHECK_OUTCOMES,
  EventStore,
  dependencyChecks,
  describeActor,
  describeEvent,
  hostStackAsOf,
  hostTimeline,
  listRollouts,
  replayHost,
  rolloutReport,
  shortId,
  verifyChains,
  whereIsPayload,
  type AsOf,
  type HostStackState,
  type ReadLiveState,
} from '../events/index.ts';

const SUBCOMMANDS = {
  timeline: 'timeline --host H [--limit N]            every step on a host and its outcome in each rollout',
  stack: 'stack --host H [--at TIME | --position N]  the host\'s loaded payloads and applied stack, now or as of then',
  checks: 'checks [--host H] [--payload BUILD-ID] [--rollout R] [--outcome match|mismatch|unreachable] [--limit N]',
  where: 'where --payload BUILD-ID [--at TIME]       which hosts have the payload loaded or applied',
  rollouts: 'rollouts                                   every rollout, newest first: plan, status, hosts',
  rollout: 'rollout ID                                 waves, hosts, outcomes, decisions (who, why), rollback',
  verify: 'verify [--stream S]                        recompute every hash chain; exit 1 at a broken link',
  replay: 'replay --host H [--fleet-file F] [--no-record]  compare replayed events with the live host; record drift',
} as const;

function usage(io: CliIO): void {
  io.out('Usage: fleetpatch audit <subcommand> [options] [--json]');
  io.out('');
  for (const line of Object.values(SUBCOMMANDS)) io.out(`  ${line}`);
  io.out('');
  io.out('TIME is ISO 8601 (2025-03-01T10:00:00Z): the state as recorded by then. N in --position is the host stream\'s position.');
}

const common = { json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } } as const;

/** The most rows --limit asks for (the queries read at most this many). */
const MAX_LIMIT = 1_000_000;

export const auditCommand: Command = async (args, io) => {
  const [sub, ...rest] = args;
  if (!sub || sub === '--help' || sub === '-h' || sub === 'help') {
    usage(io);
    if (!sub) throw new FleetpatchError('USAGE', `audit: missing subcommand (one of ${Object.keys(SUBCOMMANDS).join(', ')})`);
    return 0;
  }
  if (!Object.hasOwn(SUBCOMMANDS, sub)) throw new FleetpatchError('USAGE', `audit: unknown subcommand "${sub}" (one of ${Object.keys(SUBCOMMANDS).join(', ')})`);
  if (rest.includes('--help') || rest.includes('-h')) {
    io.out(`Usage: fleetpatch audit ${SUBCOMMANDS[sub as keyof typeof SUBCOMMANDS]} [--json]`);
    return 0;
  }
  const run = RUNNERS[sub as keyof typeof SUBCOMMANDS];
  const prepared = run(rest);
  return withServices({ database: true, temporal: false }, async ({ services, config }) => prepared(new EventStore(services.pool), io, config.fleetFile));
};

/** Each runner parses its options first (so a usage error needs no database), then runs. */
type Runner = (args: string[]) => (store: EventStore, io: CliIO, fleetFile: string) => Promise<number>;

const RUNNERS: Record<keyof typeof SUBCOMMANDS, Runner> = {
  timeline: (args) => {
    const { values } = parseCommandArgs(args, { ...common, host: { type: 'string' }, limit: { type: 'string' } }, 'audit timeline');
    const host = required(values.host, '--host', 'timeline');
    const limit = boundedInteger(values.limit, '--limit', 1, MAX_LIMIT, 'audit timeline');
    return async (store, io) => {
      const events = await hostTimeline(store, host, limit === undefined ? {} : { limit });
      if (values.json) return json(io, events);
      if (events.length === 0) {
        io.out(`No events recorded for host ${host}.`);
        return 0;
      }
      io.out(`Timeline of host ${host}: ${events.length} event(s)`);
      table(
        io,
        ['WHEN', 'WHERE', 'ACTOR', 'EVENT', 'WHAT'],
        events.map((e) => [when(e.event.occurredAt), e.streamId === `host-${host}` ? `#${e.streamPosition}` : `${e.streamId}#${e.streamPosition}`, describeActor(e.event.actor), e.event.type, describeEvent(e.event)]),
      );
      return 0;
    };
  },

  stack: (args) => {
    const { values } = parseCommandArgs(args, { ...common, host: { type: 'string' }, at: { type: 'string' }, position: { type: 'string' } }, 'audit stack');
    const host = required(values.host, '--host', 'stack');
    if (values.at !== undefined && values.position !== undefined) throw new FleetpatchError('USAGE', 'audit stack: give --at or --position, not both');
    const position = boundedInteger(values.position, '--position', 0, Number.MAX_SAFE_INTEGER, 'audit stack');
    const at = isoInstant(values.at, '--at', 'audit stack');
    const asOf: AsOf = at !== undefined ? { at } : position !== undefined ? { position } : 'now';
    return async (store, io) => {
      const state = await hostStackAsOf(store, host, asOf);
      if (values.json) return json(io, { asOf, state });
      const as = asOf === 'now' ? 'now' : 'at' in asOf ? `as recorded by ${asOf.at}` : `as of position ${asOf.position}`;
      io.out(`Host ${host} ${as}: ${state.streamPosition} event(s) replayed${state.updatedAt ? `, last recorded ${when(state.updatedAt)}` : ''}`);
      io.out(`Hypervisor build-id: ${state.hypervisorBuildId ?? '(not recorded)'}`);
      printStack(io, state);
      return 0;
    };
  },

  checks: (args) => {
    const { values } = parseCommandArgs(
      args,
      { ...common, host: { type: 'string' }, payload: { type: 'string' }, rollout: { type: 'string' }, outcome: { type: 'string' }, limit: { type: 'string' } },
      'audit checks',
    );
    if (values.outcome !== undefined && !(CHECK_OUTCOMES as readonly string[]).includes(values.outcome)) {
      throw new FleetpatchError('USAGE', `audit checks: --outcome must be one of ${CHECK_OUTCOMES.join(', ')}`);
    }
    const limit = boundedInteger(values.limit, '--limit', 1, MAX_LIMIT, 'audit checks');
    if (values.payload !== undefined && !/^(?:[0-9a-f]{2}){1,128}$/.test(values.payload)) throw new FleetpatchError('USAGE', `audit checks: --payload must be a build-id in lowercase hex, not "${values.payload.slice(0, 40)}"`);
    const filter = {
      ...(values.host !== undefined ? { hostId: values.host } : {}),
      ...(values.payload !== undefined ? { buildId: values.payload } : {}),
      ...(values.rollout !== undefined ? { rolloutId: values.rollout } : {}),
      ...(values.outcome !== undefined ? { outcome: values.outcome } : {}),
    };
    return async (store, io) => {
      const checks = await dependencyChecks(store, filter, limit === undefined ? {} : { limit });
      if (values.json) return json(io, checks);
      if (checks.length === 0) {
        io.out('No dependency checks recorded that match.');
        return 0;
      }
      io.out(`${checks.length} dependency check(s), ${checks.filter((c) => c.event.outcome !== 'match').length} not matching`);
      table(
        io,
        ['WHEN', 'HOST', 'PHASE', 'PAYLOAD', 'ON', 'EXPECTED', 'FOUND', 'AGAINST', 'OUTCOME', 'ROLLOUT', 'WHY'],
        checks.map(({ event: c }) => [
          when(c.occurredAt),
          c.hostId,
          c.phase,
          `${c.payload.name} (${shortId(c.payload.buildId)})`,
          c.on,
          shortId(c.expected),
          shortId(c.found),
          c.against.kind === 'hypervisor' ? 'hypervisor' : c.against.name,
          c.outcome === 'match' ? 'match' : c.outcome.toUpperCase(),
          c.correlation.rolloutId ?? '-',
          [c.errno, c.reason].filter(Boolean).join(': ') || '-',
        ]),
      );
      return 0;
    };
  },

  where: (args) => {
    const { values } = parseCommandArgs(args, { ...common, payload: { type: 'string' }, at: { type: 'string' } }, 'audit where');
    const buildId = required(values.payload, '--payload', 'where');
    if (!/^(?:[0-9a-f]{2}){1,128}$/.test(buildId)) throw new FleetpatchError('USAGE', `audit where: --payload must be a build-id in lowercase hex, not "${buildId.slice(0, 40)}"`);
    isoInstant(values.at, '--at', 'audit where');
    return async (store, io) => {
      const placements = await whereIsPayload(store, buildId, values.at !== undefined ? { at: values.at } : {});
      if (values.json) return json(io, placements);
      const applied = placements.filter((p) => p.state === 'APPLIED').length;
      io.out(`Payload ${buildId} ${values.at ? `as recorded by ${values.at}` : 'now'}: applied on ${applied} host(s), loaded only on ${placements.length - applied}`);
      if (placements.length > 0) {
        table(
          io,
          ['HOST', 'NAME', 'STATE', 'STACK POSITION'],
          placements.map((p) => [p.hostId, p.name, p.state, p.stackIndex === null ? '-' : `${p.stackIndex + 1} of ${p.stackHeight}${p.stackIndex === p.stackHeight - 1 ? ' (top)' : ''}`]),
        );
      }
      return 0;
    };
  },

  rollouts: (args) => {
    const { values } = parseCommandArgs(args, common, 'audit rollouts');
    return async (store, io) => {
      const rollouts = await listRollouts(store);
      if (values.json) return json(io, rollouts);
      if (rollouts.length === 0) {
        io.out('No rollouts recorded.');
        return 0;
      }
      table(
        io,
        ['ROLLOUT', 'PLAN', 'STATUS', 'STARTED', 'BY', 'FINISHED', 'PATCHED', 'ALREADY', 'FAILED', 'WHY'],
        rollouts.map((r) => [
          r.rolloutId,
          r.planName ?? '?',
          r.status,
          r.startedAt ? when(r.startedAt) : '-',
          r.startedBy ? describeActor(r.startedBy) : '-',
          r.finishedAt ? when(r.finishedAt) : '-',
          String(r.hosts.patched),
          String(r.hosts.already),
          String(r.hosts.failed),
          r.finishReason ?? '-',
        ]),
      );
      return 0;
    };
  },

  rollout: (args) => {
    const { values, positionals } = parseCommandArgs(args, common, 'audit rollout');
    const rolloutId = requirePositional(positionals, 0, 'rollout id', 'audit rollout');
    return async (store, io) => {
      const report = await rolloutReport(store, rolloutId);
      if (values.json) return json(io, report);
      describeRolloutReport(report).forEach((l) => io.out(l));
      return 0;
    };
  },

  verify: (args) => {
    const { values } = parseCommandArgs(args, { ...common, stream: { type: 'string' } }, 'audit verify');
    if (values.stream !== undefined && !/^(host|rollout|payload|access)-.{1,200}$/s.test(values.stream)) {
      throw new FleetpatchError('USAGE', `audit verify: --stream must be a stream name (host-<id>, rollout-<id>, payload-<build-id> or access-<token name>), not "${values.stream.slice(0, 40)}"`);
    }
    return async (store, io) => {
      const report = await verifyChains(store, values.stream !== undefined ? { streamId: values.stream } : {});
      if (values.json) {
        json(io, report);
        return report.ok ? 0 : 1;
      }
      const payloadWords = `${report.payloads} stored payload(s) match the digest recorded when they were stored`;
      const registryWords = values.stream !== undefined ? 'the stream registry records it' : `the stream registry's chains hold and every stream they record (${report.registered}) is there`;
      if (report.ok) {
        io.out(`OK: ${report.events} event(s) in ${report.streams} stream(s); every hash chain holds and ends at its stream head; ${registryWords}; ${payloadWords}; the global order checks hold.`);
      } else {
        if (report.breaks.length > 0 || (report.registryBreaks.length === 0 && report.payloadBreaks.length === 0 && report.orderBreaks.length === 0)) {
          io.out(`BROKEN: ${report.breaks.length} of ${report.streams} stream(s) fail verification (${report.events} event(s) read).`);
        } else {
          io.out(`BROKEN: every hash chain of ${report.streams} stream(s) holds (${report.events} event(s) read), but:`);
        }
        if (report.breaks.length > 0) {
          table(
            io,
            ['STREAM', 'POSITION', 'BREAK', 'WHAT'],
            report.breaks.map((b) => [b.streamId, b.kind === 'deleted' || b.kind === 'unregistered' ? '-' : String(b.position), b.kind, b.description]),
          );
          for (const b of report.breaks) {
            if (b.kind === 'altered' || b.kind === 'head') io.out(`  ${b.streamId}@${b.position}: expected hash ${b.expectedHash ?? '-'}, stored ${b.storedHash ?? '-'}`);
          }
        }
        if (report.registryBreaks.length > 0) {
          io.out(`STREAM REGISTRY: ${report.registryBreaks.length} problem(s) (${report.registered} stream(s) recorded):`);
          table(io, ['CHAIN', 'POSITION', 'STREAM', 'PROBLEM', 'WHAT'], report.registryBreaks.map((b) => [String(b.shard), String(b.position), b.streamId ?? '-', b.kind, b.description]));
        }
        if (report.payloadBreaks.length > 0) {
          io.out(`PAYLOADS: ${report.payloadBreaks.length} of ${report.payloads + report.payloadBreaks.filter((b) => b.kind === 'missing').length} stored payload(s) are not what was recorded:`);
          table(io, ['PAYLOAD', 'BUILD-ID', 'BREAK', 'WHAT'], report.payloadBreaks.map((b) => [b.name, b.buildId, b.kind, b.description]));
        } else {
          io.out(`Payloads: ${payloadWords}.`);
        }
        if (report.orderBreaks.length > 0) {
          io.out(`GLOBAL ORDER: ${report.orderBreaks.length} problem(s):`);
          table(io, ['STREAM', 'POSITION', 'PROBLEM', 'WHAT'], report.orderBreaks.map((b) => [b.streamId, String(b.position), b.kind, b.description]));
        }
      }
      for (const note of report.notes) io.out(`Note: ${note}`);
      io.out(`Heads digest: ${report.headsDigest} (keep it elsewhere to notice a rewritten history)`);
      return report.ok ? 0 : 1;
    };
  },

  replay: (args) => {
    const { values } = parseCommandArgs(args, { ...common, host: { type: 'string' }, 'fleet-file': { type: 'string' }, 'no-record': { type: 'boolean' } }, 'audit replay');
    const host = required(values.host, '--host', 'replay');
    return async (store, io, fleetFile) => {
      const fleet = await openInventory({ pool: store.pool, fleetFile: values['fleet-file'] ?? fleetFile, dataDir: loadConfig().dataDir });
      const result = await replayHost(store, host, liveStateOf(fleet), {
        actor: { kind: 'user', id: os.userInfo().username },
        record: !values['no-record'],
      });
      if (values.json) {
        json(io, result);
        return result.differences.length === 0 ? 0 : 1;
      }
      io.out(`Host ${host}: ${result.replayed.streamPosition} event(s) replayed, compared with the live host at ${fleet.hosts.find((h) => h.id === host)?.url ?? "(not in the fleet)"}`);
      if (result.differences.length === 0) {
        io.out('The live host runs exactly what its events say.');
      } else {
        io.out(`DRIFT: ${result.differences.length} difference(s)`);
        table(io, ['WHERE', 'EVENTS SAY', 'HOST HAS', 'WHAT'], result.differences.map((d) => [d.where + (d.index !== undefined ? ` ${d.index}` : ''), d.replayed ?? '-', d.live ?? '-', d.description]));
        if (result.drift) io.out(`${result.drift.alreadyRecorded ? 'Already recorded' : 'Recorded'} as DriftDetected at host-${host}#${result.drift.streamPosition}.`);
        else io.out('Not recorded (--no-record).');
      }
      if (result.replayed.anomalies.length > 0) {
        io.out('Facts Xen could not have produced, found while replaying:');
        for (const a of result.replayed.anomalies) io.out(`  #${a.streamPosition} ${a.type}: ${a.description}`);
      }
      return result.differences.length === 0 ? 0 : 1;
    };
  },
};

/** A rollout's report, as the lines `audit rollout` prints (also `rollout status` without a worker). */
export function describeRolloutReport(report: Awaited<ReturnType<typeof rolloutReport>>): string[] {
  const lines: string[] = [];
  const s = report.summary;
  lines.push(`Rollout ${s.rolloutId}: "${s.planName ?? '?'}" (${s.mode ?? '?'}), ${s.status.toUpperCase()}`);
  lines.push(`Started ${s.startedAt ? when(s.startedAt) : '?'} by ${s.startedBy ? describeActor(s.startedBy) : '?'}${s.startReason ? `: ${s.startReason}` : ''}`);
  if (s.finishedAt) lines.push(`Finished ${when(s.finishedAt)}${s.finishReason ? `: ${s.finishReason}` : ''}`);
  lines.push(`Payloads: ${s.payloads.map((p) => `${p.name} (${shortId(p.buildId)})`).join(', ') || '-'}`);
  lines.push(`Hosts: ${s.hosts.patched} patched, ${s.hosts.already} already, ${s.hosts.failed} failed (${s.hosts.unreachable} unreachable)`);
  lines.push('');
  lines.push(
    ...renderTable(
      ['WAVE', 'STATUS', 'PLANNED', 'PATCHED', 'ALREADY', 'FAILED', 'UNREACHABLE', 'WHY'],
      s.waves.map((w) => [w.name, w.status, String(w.planned), String(w.patched), String(w.already), String(w.failed), String(w.unreachable), w.reason ?? '-']),
    ),
  );
  if (s.decisions.length > 0) {
    lines.push('');
    lines.push(...renderTable(['WHEN', 'DECISION', 'BY', 'WAVE', 'WHY'], s.decisions.map((d) => [when(d.at), d.action, describeActor(d.by), d.wave ?? '-', d.reason ?? '-'])));
  }
  if (report.hosts.length > 0) {
    lines.push('');
    lines.push(
      ...renderTable(
        ['HOST', 'WAVE', 'OUTCOME', 'APPLIED', 'WHY'],
        report.hosts.map((h) => [
          h.hostId,
          h.wave,
          h.outcome + (h.revertedAfterFailure ? ' (reverted)' : '') + (h.restore ? ` (restore: ${h.restore.outcome})` : ''),
          h.applied.map((p) => p.name).join(', ') || '-',
          h.failure ? `${h.failure.stage} ${h.failure.code}${h.failure.unreachable ? ' (unreachable)' : ''}: ${h.failure.reason}` : '-',
        ]),
      ),
    );
  }
  if (s.rollback) {
    lines.push('');
    const r = s.rollback;
    const notBack = r.stackGrew + r.unrecoverable + r.failed;
    lines.push(
      `Rollback ${r.status}${r.outcome ? ` (${r.outcome.toUpperCase()})` : ''}, asked by ${r.requestedBy ? describeActor(r.requestedBy) : '?'} ${when(r.startedAt)}: ${r.reason}; ` +
        `${r.rolledBack} rolled back, ${r.nothingToDo} nothing to do, ${notBack} not back (${r.stackGrew} stack grew, ${r.unrecoverable} unrecoverable, ${r.failed} failed) of ${r.hosts}`,
    );
    if (report.rollbacks.length > 0) {
      lines.push(
        ...renderTable(
          ['HOST', 'OUTCOME', 'REVERTED', 'RE-APPLIED', 'STACK NOW', 'SHOULD BE', 'WHY'],
          report.rollbacks.map((b) => {
            const back = b.outcome === 'rolled-back' || b.outcome === 'nothing-to-do';
            return [
              b.hostId,
              b.outcome,
              b.reverted.map((p) => p.name).join(', ') || '-',
              b.reapplied.map((p) => p.name).join(', ') || '-',
              b.stackNow ? b.stackNow.map((p) => p.name).join(', ') || '(empty)' : '?',
              back ? '(as now)' : b.formerStack ? b.formerStack.map((p) => p.name).join(', ') || '(empty)' : '?',
              b.reason ?? '-',
            ];
          }),
        ),
      );
    }
  }
  lines.push('');
  lines.push(`Dependency checks: ${report.checksTotal} recorded, ${report.failedChecks.length} not matching${report.failedChecks.length ? ':' : ''}`);
  for (const c of report.failedChecks) lines.push(`  ${c.event.hostId}: ${describeEvent(c.event)}`);
  return lines;
}

/** The live state of an emulated host: Xen's LIST, every page, through the host's own agent. */
function liveStateOf(fleet: FleetClient): ReadLiveState {
  return async (hostId) => {
    const state = hostStateFromList(hostId, await fleet.host(hostId).listAll());
    return { hypervisorBuildId: state.hypervisorBuildId, appliedStack: state.applied, loaded: state.loaded, ...(state.boot ? { boot: state.boot } : {}) };
  };
}

function printStack(io: CliIO, state: HostStackState): void {
  if (state.applied.length === 0) io.out('Applied stack: empty');
  else {
    io.out('Applied stack (bottom first):');
    table(io, ['#', 'NAME', 'BUILD-ID'], state.applied.map((p, i) => [String(i + 1) + (i === state.applied.length - 1 ? ' top' : ''), p.name, p.buildId]));
  }
  if (state.loaded.length === 0) io.out('Loaded: none');
  else {
    io.out('Loaded (upload order):');
    table(io, ['NAME', 'BUILD-ID', 'STATE'], state.loaded.map((p) => [p.name, p.buildId, p.state]));
  }
  if (state.anomalies.length > 0) {
    io.out('Facts Xen could not have produced:');
    for (const a of state.anomalies) io.out(`  #${a.streamPosition} ${a.type}: ${a.description}`);
  }
}

function required(value: string | undefined, flag: string, sub: string): string {
  if (value === undefined || value === '') throw new FleetpatchError('USAGE', `audit ${sub}: ${flag} is required`);
  return value;
}

function json(io: CliIO, value: unknown): number {
  io.out(JSON.stringify(value, null, 2));
  return 0;
}

function when(iso: string): string {
  return iso.replace('T', ' ');
}

function table(io: CliIO, headers: string[], rows: string[][]): void {
  for (const line of renderTable(headers, rows)) io.out(line);
}
