/**
 * Join tokens: the one credential of an enrolment. `fpj.<fleet>.<secret>.<host id>`:
 * - <fleet>: the first 12 hex digits of the fleet CA's sha256, so a token of another fleet is
 *   told apart at once (JOIN_TOKEN_FOREIGN) instead of looking merely unknown;
 * - <secret>: 256 random bits, base64url;
 * - <host id>: the host it enrols, so the host can name itself in its CSR before it has talked to
 *   anyone. Changing it changes the token's sha256, which is all the control plane stores
 *   (JoinTokenIssued), so a token edited to enrol another host is simply not one it issued.
 * One use, an expiry (default 1 h): judged against the host's facts (projections/fleet-hosts.ts).
 */
import { createHash, randomBytes } from 'node:crypto';
import { FleetpatchError } from '../errors.ts';
import { quoted } from '../domain/text.ts';

const SHAPE = /^fpj\.([0-9a-f]{12})\.([A-Za-z0-9_-]{43})\.([A-Za-z0-9][A-Za-z0-9._-]{0,62})$/;
/** Longer than any token: what is longer is refused before a regex looks at it. */
const MAX_LENGTH = 4 + 13 + 44 + 64;

export const DEFAULT_JOIN_TOKEN_TTL_MS = 3_600_000;
/** A join token is for enrolling now, not a standing credential. */
export const MAX_JOIN_TOKEN_TTL_MS = 7 * 86_400_000;

export function joinTokenSha256(token: string): string {
  return createHash('sha256').update(token, 'utf8').digest('hex');
}

export function makeJoinToken(caFingerprint: string, hostId: string): { token: string; sha256: string } {
  const token = `fpj.${caFingerprint.slice(0, 12)}.${randomBytes(32).toString('base64url')}.${hostId}`;
  return { token, sha256: joinTokenSha256(token) };
}

export interface ParsedJoinToken {
  hostId: string;
  fleet: string;
  sha256: string;
}

/**
 * The token's host and digest. JOIN_TOKEN_MALFORMED when it is not of the shape
 * `hosts enroll` prints; JOIN_TOKEN_FOREIGN when it was issued for another fleet's CA.
 */
export function parseJoinToken(token: unknown, caFingerprint: string): ParsedJoinToken {
  if (typeof token !== 'string' || token.length === 0) throw new FleetpatchError('JOIN_TOKEN_MALFORMED', 'the join token is empty');
  const trimmed = token.trim();
  if (trimmed.length > MAX_LENGTH) throw new FleetpatchError('JOIN_TOKEN_MALFORMED', `the join token is ${trimmed.length} characters long, more than a join token has (${MAX_LENGTH})`);
  const m = SHAPE.exec(trimmed);
  if (!m) throw new FleetpatchError('JOIN_TOKEN_MALFORMED', `the join token ${quoted(trimmed, 24)} is not of the shape fpj.<12 hex>.<43 base64url>.<host id> that \`fleetpatch hosts enroll\` prints`);
  const [, fleet, , hostId] = m as unknown as [string, string, string, string];
  if (fleet !== caFingerprint.slice(0, 12)) {
    throw new FleetpatchError('JOIN_TOKEN_FOREIGN', `the join token was issued by another fleet (CA ${fleet}…), not this one (CA ${caFingerprint.slice(0, 12)}…)`, { tokenFleet: fleet, fleet: caFingerprint.slice(0, 12) });
  }
  return { hostId, fleet, sha256: joinTokenSha256(trimmed) };
}

/** The host id a token names, for the host's own CSR (no CA to compare with on the host). */
export function joinTokenHostId(token: string): string {
  const m = SHAPE.exec(token.trim());
  if (!m) throw new FleetpatchError('JOIN_TOKEN_MALFORMED', `the join token ${quoted(token.trim(), 24)} is not of the shape fpj.<12 hex>.<43 base64url>.<host id> that \`fleetpatch hosts enroll\` prints`);
  return m[3]!;
}
