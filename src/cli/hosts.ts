/**
 * `fleetpatch hosts enroll|list|label|retire`: the fleet of enrolled hosts, kept as facts in
 * their host streams (src/fleet/registry.ts). `enroll` prints a one-time join token and the
 * command to run on the host; `list` shows the enrolled hosts (the emulator's fleet file has its
 * own: `fleetpatch emulate`; rollouts read both, each host once).
 */
import os from 'node:os';
import { FleetpatchError } from '../errors.ts';
import { EventStore } from '../events/store.ts';
import { FleetRegistry } from '../fleet/registry.ts';
import { DEFAULT_JOIN_TOKEN_TTL_MS } from '../fleet/join-token.ts';
import { loadCa } from '../pki/ca.ts';
import { parseDuration } from '../rollout/duration.ts';
import { withServices } from '../app/context.ts';
import { DEFAULT_API_PORT } from '../runtime/config.ts';
import { boundedText, parseCommandArgs, requirePositional } from './args.ts';
import type { CliIO, Command } from './io.ts';
import { renderTable } from './table.ts';

function usage(io: CliIO): void {
  io.out('Usage: fleetpatch hosts <command>');
  io.out('');
  io.out('  enroll <id> [--label k=v]... [--ttl 1h] [--control URL]   a one-time join token for the host, and the command to run on it');
  io.out('  list [--json] [--all]                                      enrolled hosts (--all: retired ones too)');
  io.out('  label <id> k=v... (k= removes a label)                      change a host\'s labels');
  io.out('  retire <id> --reason WHY                                    rollouts stop selecting the host; its facts stay');
}

/** `k=v` pairs; `k=` (with `allowRemove`) removes. */
export function parseLabels(pairs: readonly string[], command: string, allowRemove = false): Record<string, string | null> {
  const out: Record<string, string | null> = {};
  for (const p of pairs) {
    const eq = p.indexOf('=');
    if (eq <= 0) throw new FleetpatchError('USAGE', `${command}: a label is k=v, not ${JSON.stringify(p.slice(0, 60))}`);
    const v = p.slice(eq + 1);
    if (v === '' && !allowRemove) throw new FleetpatchError('USAGE', `${command}: the label ${JSON.stringify(p.slice(0, eq))} needs a value`);
    out[p.slice(0, eq)] = v === '' ? null : v;
  }
  return out;
}

function actor() {
  return { kind: 'user' as const, id: process.env.USER || os.userInfo().username };
}

export const hostsCommand: Command = async (args, io) => {
  const [sub, ...rest] = args;
  const { values, positionals } = parseCommandArgs(
    rest,
    { label: { type: 'string', multiple: true }, ttl: { type: 'string' }, control: { type: 'string' }, json: { type: 'boolean' }, all: { type: 'boolean' }, reason: { type: 'string' }, help: { type: 'boolean', short: 'h' } },
    `hosts ${sub ?? ''}`.trim(),
  );
  if (!sub || sub === '--help' || sub === '-h' || values.help) {
    usage(io);
    if (!sub) throw new FleetpatchError('USAGE', 'hosts: missing command (enroll, list, label, retire)');
    return 0;
  }
  const withRegistry = <T>(fn: (r: FleetRegistry, dataDir: string) => Promise<T>) => withServices({ database: true, temporal: false }, ({ services, config }) => fn(new FleetRegistry(new EventStore(services.pool)), config.dataDir));
  switch (sub) {
    case 'enroll': {
      const id = requirePositional(positionals, 0, 'the host id', 'hosts enroll');
      const labels = parseLabels(values.label ?? [], 'hosts enroll') as Record<string, string>;
      const ttlMs = values.ttl === undefined ? DEFAULT_JOIN_TOKEN_TTL_MS : parseDuration(values.ttl);
      if (ttlMs === undefined || ttlMs <= 0) throw new FleetpatchError('USAGE', `hosts enroll: --ttl must be a duration such as 1h or 30m, not ${JSON.stringify(String(values.ttl).slice(0, 40))}`);
      const control = values.control ?? `https://${os.hostname()}:${DEFAULT_API_PORT}`;
      return withRegistry(async (registry, dataDir) => {
        const ca = await loadCa(dataDir);
        const t = await registry.issueJoinToken(ca, id, { labels, ttlMs, actor: actor() });
        const command = `fleetpatch agent enroll --join-token ${t.token} --control ${control}`;
        if (values.json) io.out(JSON.stringify({ hostId: t.hostId, joinToken: t.token, expiresAt: t.expiresAt, command }));
        else {
          io.out(t.token);
          io.err(`Join token for host ${t.hostId}, good once until ${t.expiresAt} (it is shown only now). On the host, run:`);
          io.err(`  ${command} [--dir /var/lib/fleetpatch-agent] [--address https://<this host>:9443]`);
        }
        return 0;
      });
    }
    case 'list':
      return withRegistry(async (registry) => {
        const all = [...(await registry.enrolments()).values()].flatMap((e) => (e.host && (values.all || !e.host.retired) ? [e.host] : [])).sort((a, b) => (a.id < b.id ? -1 : 1));
        if (values.json) return (io.out(JSON.stringify(all, null, 2)), 0);
        if (all.length === 0) return (io.out('No enrolled hosts. Enrol one with: fleetpatch hosts enroll <id>'), 0);
        renderTable(
          ['HOST', 'ADDRESS', 'LABELS', 'HYPERVISOR', 'CERTIFICATE UNTIL', 'STATUS'],
          all.map((h) => [h.id, h.address, Object.entries(h.labels).map(([k, v]) => `${k}=${v}`).join(',') || '-', h.hypervisorBuildId.slice(0, 12), h.certificate.notAfter, h.retired ? `retired ${h.retired.at}: ${h.retired.reason}` : new Date(h.certificate.notAfter) < new Date() ? 'CERTIFICATE EXPIRED' : 'enrolled']),
        ).forEach((l) => io.out(l));
        return 0;
      });
    case 'label': {
      const id = requirePositional(positionals, 0, 'the host id', 'hosts label');
      if (positionals.length < 2) throw new FleetpatchError('USAGE', 'hosts label: give at least one k=v (k= removes)');
      const changes = parseLabels(positionals.slice(1), 'hosts label', true);
      return withRegistry(async (registry) => {
        const h = await registry.label(id, changes, actor());
        io.out(`Host ${h.id}: labels ${Object.entries(h.labels).map(([k, v]) => `${k}=${v}`).join(',') || '(none)'}`);
        return 0;
      });
    }
    case 'retire': {
      const id = requirePositional(positionals, 0, 'the host id', 'hosts retire');
      const reason = boundedText(values.reason, '--reason', 2000, 'hosts retire');
      if (!reason || !reason.trim()) throw new FleetpatchError('USAGE', 'hosts retire: --reason WHY is required (it is recorded)');
      return withRegistry(async (registry) => {
        await registry.retire(id, reason, actor());
        io.out(`Host ${id} retired: rollouts no longer select it (its facts stay; enrol it again to bring it back)`);
        return 0;
      });
    }
    default:
      throw new FleetpatchError('USAGE', `hosts: unknown command "${sub.slice(0, 40)}" (enroll, list, label, retire)`);
  }
};
