/**
 * API tokens: bearer tokens with a role (viewer: read and audit; operator: rollouts and
 * approvals; admin: payloads and tokens). A token is 256 random bits shown once when it is made;
 * only its sha256 is stored, and a presented token is compared with the stored digest in constant
 * time. Creating and revoking a token are facts recorded (TokenCreated, TokenRevoked in the
 * stream access-<name>) in the same transaction as the api_tokens row, so who may act through the
 * API is itself audited. And the events decide: a row is honoured only while its access stream is
 * there, its hash chain holds, and its last event is the TokenCreated of this very token (digest,
 * role, maker). A row whose stream is gone or broken, or edited behind the store's back, is
 * unusable: authentication refuses it, naming why, and `tokens list` says so (fail closed).
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type pg from 'pg';
import { FleetpatchError } from '../errors.ts';
import { TokenRoleSchema, type Actor } from '../events/catalogue.ts';
import { randomEventId } from '../events/event-id.ts';
import { StreamChainChecker } from '../events/hash-chain.ts';
import { toChainRecord, toRecordedEvent, type EventRow } from '../events/sql/event-row.ts';
import type { EventStore } from '../events/store.ts';
import { accessStream } from '../events/streams.ts';

export type Role = 'viewer' | 'operator' | 'admin';
export const ROLES: readonly Role[] = TokenRoleSchema.options;

/** What each role may do, cumulative: an operator may do what a viewer may, an admin everything. */
const RANK: Record<Role, number> = { viewer: 0, operator: 1, admin: 2 };
export function allows(role: Role, needed: Role): boolean {
  return RANK[role] >= RANK[needed];
}

export const TOKEN_NAME = /^[A-Za-z0-9][A-Za-z0-9._@-]{0,62}$/;
/** fp_ and 43 base64url characters (32 random bytes). */
const TOKEN_SHAPE = /^fp_[A-Za-z0-9_-]{43}$/;

export interface TokenInfo {
  name: string;
  role: Role;
  createdAt: string;
  createdBy: string;
  revokedAt: string | null;
  revokedBy: string | null;
  /** The first 12 hex digits of the token's sha256: tells tokens apart without revealing them. */
  fingerprint: string;
  /** live: it authenticates; revoked; unusable: its row is not what its access stream records (`problem` says why). */
  status: 'live' | 'revoked' | 'unusable';
  problem: string | null;
}

export function tokenDigest(token: string): Buffer {
  return createHash('sha256').update(token, 'utf8').digest();
}

function checkName(name: string): string {
  if (!TOKEN_NAME.test(name)) throw new FleetpatchError('ARGUMENT', `"${name.slice(0, 40)}" is not a token name: 1 to 63 letters, digits, ".", "_", "@" or "-", starting with a letter or digit`);
  return name;
}

function checkRole(role: string): Role {
  if (!(ROLES as readonly string[]).includes(role)) throw new FleetpatchError('ARGUMENT', `"${role.slice(0, 40)}" is not a role (${ROLES.join(', ')})`);
  return role as Role;
}

interface TokenRow {
  name: string;
  role: Role;
  token_sha256: Buffer;
  created_at: Date;
  created_by: string;
  revoked_at: Date | null;
  revoked_by: string | null;
}

const info = (r: TokenRow, standing: Standing = { status: r.revoked_at ? 'revoked' : 'live', problem: null }): TokenInfo => ({
  name: r.name,
  role: r.role,
  createdAt: r.created_at.toISOString(),
  createdBy: r.created_by,
  revokedAt: r.revoked_at?.toISOString() ?? null,
  revokedBy: r.revoked_by,
  fingerprint: r.token_sha256.toString('hex').slice(0, 12),
  ...standing,
});

type Standing = Pick<TokenInfo, 'status' | 'problem'>;

/** A token row with its access stream's head and events (one row per event; none: no event columns). */
type JoinedRow = TokenRow & { head_position: string | null; head_hash: Buffer | null } & { [K in keyof EventRow]: EventRow[K] | null };

/** Token rows with their access streams, in one query: name order, each stream in position order. */
const TOKENS_WITH_STREAMS = `
  SELECT t.name, t.role, t.token_sha256, t.created_at, t.created_by, t.revoked_at, t.revoked_by,
         s.stream_position AS head_position, s.last_hash AS head_hash,
         e.global_position, e.transaction_id, e.event_id, e.stream_id, e.stream_position, e.type, e.schema_version,
         e.occurred_at, e.recorded_at, e.actor, e.correlation, e.data, e.hash
    FROM api_tokens t
    LEFT JOIN streams s ON s.stream_id = 'access-' || t.name
    LEFT JOIN events e ON e.stream_id = 'access-' || t.name`;

/** The joined rows grouped by token: the row, its stream's head and its events. */
function grouped(rows: readonly JoinedRow[]): { token: TokenRow; head: { position: number; lastHash: string } | null; events: EventRow[] }[] {
  const out = new Map<string, { token: TokenRow; head: { position: number; lastHash: string } | null; events: EventRow[] }>();
  for (const r of rows) {
    let g = out.get(r.name);
    if (!g) {
      g = { token: r, head: r.head_position !== null && r.head_hash ? { position: Number(r.head_position), lastHash: r.head_hash.toString('hex') } : null, events: [] };
      out.set(r.name, g);
    }
    if (r.event_id !== null) g.events.push(r as EventRow);
  }
  return [...out.values()];
}

/**
 * Whether the row is what the token's access stream records: the stream is there, its chain
 * holds to its head, and its last event is this token's TokenCreated (its digest's fingerprint,
 * its role, who made it). Otherwise the row was made or edited behind the event store's back, or
 * the stream was deleted or altered: the token is unusable, whatever the row says.
 */
export function standingOf(token: TokenRow, head: { position: number; lastHash: string } | null, events: readonly EventRow[]): Standing {
  if (token.revoked_at) return { status: 'revoked', problem: null };
  const stream = accessStream(token.name);
  const unusable = (why: string): Standing => ({ status: 'unusable', problem: `${why}; revoke it and make a new one (fleetpatch tokens revoke --name ${token.name})` });
  if (events.length === 0) return unusable(`its access stream ${stream} is gone: no TokenCreated records this token (the stream was deleted, or the row made behind the event store's back)`);
  const checker = new StreamChainChecker(stream);
  for (const e of events) checker.push(toChainRecord(e), e.hash.toString('hex'));
  const broken = checker.finish(head);
  if (broken) return unusable(`the hash chain of ${stream} is broken: ${broken.description}`);
  let last;
  try {
    last = toRecordedEvent(events[events.length - 1]!).event;
  } catch (e) {
    return unusable(`the last event of ${stream} cannot be read: ${(e as Error).message}`);
  }
  if (last.type === 'TokenRevoked') return unusable(`${stream} records it revoked (TokenRevoked), its row says live: the row was edited`);
  if (last.type !== 'TokenCreated') return unusable(`the last event of ${stream} is ${last.type}, not TokenCreated`);
  const fingerprint = token.token_sha256.toString('hex').slice(0, 12);
  if (last.fingerprint !== fingerprint) return unusable(`its digest (fingerprint ${fingerprint}) is not the one TokenCreated recorded (${last.fingerprint}): the row was edited`);
  if (last.role !== token.role) return unusable(`its role (${token.role}) is not the one TokenCreated recorded (${last.role}): the row was edited`);
  if (last.actor.id !== token.created_by) return unusable(`its maker (${token.created_by}) is not the one TokenCreated recorded (${last.actor.id}): the row was edited`);
  return { status: 'live', problem: null };
}

export class TokenStore {
  constructor(private readonly events: EventStore) {}

  private get pool(): pg.Pool {
    return this.events.pool;
  }

  /** Makes a token; returns it (the only time it is ever shown) and what is stored about it. */
  async create(name: string, role: string, by: Actor): Promise<{ token: string; info: TokenInfo }> {
    checkName(name);
    const r = checkRole(role);
    const token = `fp_${randomBytes(32).toString('base64url')}`;
    const digest = tokenDigest(token);
    const fingerprint = digest.toString('hex').slice(0, 12);
    const now = new Date();
    let row: TokenRow | undefined;
    await this.events.append(
      accessStream(name),
      [{ eventId: randomEventId(), event: { type: 'TokenCreated', schemaVersion: 1, occurredAt: now.toISOString(), actor: by, tokenName: name, role: r, fingerprint } }],
      {
        withinTransaction: async (client) => {
          // A name whose token was revoked may be given a new one; a live one may not.
          const result = await client.query<TokenRow>(
            `INSERT INTO api_tokens (name, role, token_sha256, created_at, created_by) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (name) DO UPDATE SET role = EXCLUDED.role, token_sha256 = EXCLUDED.token_sha256, created_at = EXCLUDED.created_at,
               created_by = EXCLUDED.created_by, revoked_at = NULL, revoked_by = NULL
             WHERE api_tokens.revoked_at IS NOT NULL
             RETURNING *`,
            [name, r, digest, now, by.id],
          );
          row = result.rows[0];
          if (!row) throw new FleetpatchError('TOKEN_EXISTS', `an API token named "${name}" exists; revoke it first (fleetpatch tokens revoke --name ${name}) or choose another name`, { name });
        },
      },
    );
    return { token, info: info(row!) };
  }

  /** Every token, each with its standing against its access stream. */
  async list(): Promise<TokenInfo[]> {
    const { rows } = await this.pool.query<JoinedRow>(`${TOKENS_WITH_STREAMS} ORDER BY t.name, e.stream_position`);
    return grouped(rows).map((g) => info(g.token, standingOf(g.token, g.head, g.events)));
  }

  /** Revokes a live token; TOKEN_NOT_FOUND when there is no live token of that name. */
  async revoke(name: string, by: Actor, reason?: string): Promise<TokenInfo> {
    checkName(name);
    let row: TokenRow | undefined;
    await this.events.append(
      accessStream(name),
      [{ eventId: randomEventId(), event: { type: 'TokenRevoked', schemaVersion: 1, occurredAt: new Date().toISOString(), actor: by, tokenName: name, ...(reason ? { reason } : {}) } }],
      {
        withinTransaction: async (client) => {
          row = (await client.query<TokenRow>('UPDATE api_tokens SET revoked_at = now(), revoked_by = $2 WHERE name = $1 AND revoked_at IS NULL RETURNING *', [name, by.id])).rows[0];
          if (!row) throw new FleetpatchError('TOKEN_NOT_FOUND', `no live API token is named "${name}" (fleetpatch tokens list shows them)`, { name });
        },
      },
    );
    return info(row!);
  }

  /**
   * The live token a request presents, or null. Looked up by its digest (the index sees a hash of
   * 256 random bits, which tells an attacker nothing), then compared with the stored digest in
   * constant time, then held against its access stream (standingOf): an unusable one is refused
   * with AUTH_REQUIRED naming why, so whoever holds it learns what to ask an admin for.
   */
  async authenticate(presented: string): Promise<{ name: string; role: Role } | null> {
    if (!TOKEN_SHAPE.test(presented)) return null;
    const digest = tokenDigest(presented);
    const { rows } = await this.pool.query<JoinedRow>(`${TOKENS_WITH_STREAMS} WHERE t.token_sha256 = $1 AND t.revoked_at IS NULL ORDER BY e.stream_position`, [digest]);
    const [found] = grouped(rows);
    if (!found || found.token.token_sha256.length !== digest.length || !timingSafeEqual(found.token.token_sha256, digest)) return null;
    const standing = standingOf(found.token, found.head, found.events);
    if (standing.status !== 'live') throw new FleetpatchError('AUTH_REQUIRED', `API token "${found.token.name}" is not honoured: ${standing.problem}`, { name: found.token.name });
    return { name: found.token.name, role: found.token.role };
  }
}
