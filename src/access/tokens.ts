/**
 * API tokens: bearer tokens with a role (viewer: read and audit; operator: rollouts and
 * approvals; admin: payloads and tokens). A token is 256 random bits shown once when it is made;
 * only its sha256 is stored, and a presented token is compared with the stored digest in constant
 * time. Creating and revoking a token are facts recorded (TokenCreated, TokenRevoked in the
 * stream access-<name>) in the same transaction as the api_tokens row, so who may act through the
 * API is itself audited.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type pg from 'pg';
import { FleetpatchError } from '../errors.ts';
import { TokenRoleSchema, type Actor } from '../events/catalogue.ts';
import { randomEventId } from '../events/event-id.ts';
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

const info = (r: TokenRow): TokenInfo => ({
  name: r.name,
  role: r.role,
  createdAt: r.created_at.toISOString(),
  createdBy: r.created_by,
  revokedAt: r.revoked_at?.toISOString() ?? null,
  revokedBy: r.revoked_by,
  fingerprint: r.token_sha256.toString('hex').slice(0, 12),
});

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

  async list(): Promise<TokenInfo[]> {
    const { rows } = await this.pool.query<TokenRow>('SELECT * FROM api_tokens ORDER BY name');
    return rows.map(info);
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
   * constant time.
   */
  async authenticate(presented: string): Promise<{ name: string; role: Role } | null> {
    if (!TOKEN_SHAPE.test(presented)) return null;
    const digest = tokenDigest(presented);
    const { rows } = await this.pool.query<Pick<TokenRow, 'name' | 'role' | 'token_sha256'>>('SELECT name, role, token_sha256 FROM api_tokens WHERE token_sha256 = $1 AND revoked_at IS NULL', [digest]);
    const row = rows[0];
    if (!row || row.token_sha256.length !== digest.length || !timingSafeEqual(row.token_sha256, digest)) return null;
    return { name: row.name, role: row.role };
  }
}
