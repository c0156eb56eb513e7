/**
 * `fleetpatch tokens create|list|revoke`: the bearer tokens of the HTTP API. A token is printed
 * once, when it is made; only its sha256 is stored. Creating and revoking are recorded as events
 * (access-<name> streams), with who did it.
 */
import os from 'node:os';
import { FleetpatchError } from '../errors.ts';
import { EventStore } from '../events/store.ts';
import { ROLES, TOKEN_NAME, TokenStore } from '../access/tokens.ts';
import { boundedText, parseCommandArgs } from './args.ts';
import { withServices } from '../app/context.ts';
import type { Command } from './io.ts';
import { renderTable } from './table.ts';

const USAGE = [
  'Usage: fleetpatch tokens <command> [options]',
  '',
  '  create --name NAME --role viewer|operator|admin [--by WHO] [--json]   print a new API token (shown once)',
  '  list [--json]                                                         every token: name, role, who made it, live, revoked or unusable (and why)',
  '  revoke --name NAME [--reason WHY] [--by WHO]                          the token stops working at once',
  '',
  'Roles: viewer reads and audits; operator also starts and steers rollouts and approves gates;',
  'admin also uploads payloads and manages tokens. Every decision made through the API names the token.',
];

const OPTIONS = {
  help: { type: 'boolean', short: 'h' },
  json: { type: 'boolean' },
  name: { type: 'string' },
  role: { type: 'string' },
  by: { type: 'string' },
  reason: { type: 'string' },
} as const;

function who(by: string | undefined) {
  const id = by ?? process.env.USER ?? os.userInfo().username;
  if (!id.trim() || id.length > 200) throw new FleetpatchError('USAGE', 'tokens: --by must name who acts in 1 to 200 characters');
  return { kind: 'user' as const, id };
}

export const tokensCommand: Command = async (args, io) => {
  const [sub, ...rest] = args;
  if (!sub || sub === '--help' || sub === '-h') {
    USAGE.forEach((l) => io.out(l));
    if (!sub) throw new FleetpatchError('USAGE', 'tokens: missing command (create, list, revoke)');
    return 0;
  }
  const { values } = parseCommandArgs(rest, OPTIONS, `tokens ${sub}`);
  if (values.help) {
    USAGE.forEach((l) => io.out(l));
    return 0;
  }
  const by = who(values.by);
  switch (sub) {
    case 'create': {
      const name = required(values.name, '--name', sub);
      const role = required(values.role, '--role', sub);
      if (!(ROLES as readonly string[]).includes(role)) throw new FleetpatchError('USAGE', `tokens create: --role must be one of ${ROLES.join(', ')}, not "${role.slice(0, 40)}"`);
      return withStore(async (tokens) => {
        const { token, info } = await tokens.create(name, role, by);
        if (values.json) io.out(JSON.stringify({ token, ...info }));
        else {
          io.out(token);
          io.err(`API token "${info.name}" (${info.role}, fingerprint ${info.fingerprint}) created; it is shown only now: keep it in a secret store`);
        }
        return 0;
      });
    }
    case 'list':
      return withStore(async (tokens) => {
        const list = await tokens.list();
        const unusable = list.filter((t) => t.status === 'unusable');
        if (values.json) return (io.out(JSON.stringify(list, null, 2)), unusable.length > 0 ? 1 : 0);
        if (list.length === 0) return (io.out('No API tokens. Make one with: fleetpatch tokens create --name NAME --role viewer|operator|admin'), 0);
        renderTable(
          ['NAME', 'ROLE', 'FINGERPRINT', 'CREATED', 'BY', 'STATUS'],
          list.map((t) => [t.name, t.role, t.fingerprint, t.createdAt, t.createdBy, t.status === 'revoked' ? `revoked ${t.revokedAt} by ${t.revokedBy}` : t.status === 'unusable' ? `UNUSABLE: ${t.problem}` : 'live']),
        ).forEach((l) => io.out(l));
        // Someone changed the tokens behind the event store's back: the command says so in its exit code.
        if (unusable.length > 0) io.err(`${unusable.length} API token(s) are not honoured: their rows are not what their access-<name> streams record (fleetpatch audit verify tells more)`);
        return unusable.length > 0 ? 1 : 0;
      });
    case 'revoke': {
      const name = required(values.name, '--name', sub);
      const reason = boundedText(values.reason, '--reason', 1000, 'tokens revoke');
      return withStore(async (tokens) => {
        const t = await tokens.revoke(name, by, reason);
        io.out(`API token "${t.name}" (${t.role}, fingerprint ${t.fingerprint}) revoked`);
        return 0;
      });
    }
    default:
      throw new FleetpatchError('USAGE', `tokens: unknown command "${sub}" (create, list, revoke)`);
  }
};

function required(value: string | undefined, flag: string, sub: string): string {
  if (value === undefined || value === '') throw new FleetpatchError('USAGE', `tokens ${sub}: ${flag} is required`);
  if (flag === '--name' && !TOKEN_NAME.test(value)) throw new FleetpatchError('USAGE', `tokens ${sub}: --name must be 1 to 63 letters, digits, ".", "_", "@" or "-", starting with a letter or digit, not "${value.slice(0, 40)}"`);
  return value;
}

function withStore(fn: (tokens: TokenStore) => Promise<number>): Promise<number> {
  return withServices({ database: true, temporal: false }, ({ services }) => fn(new TokenStore(new EventStore(services.pool))));
}

