/**
 * API tokens fail closed: a token is honoured only while its access-<name> stream records it. Its
 * stream deleted whole (with the append-only triggers disabled), its chain altered, its row edited
 * or made behind the event store's back: authentication refuses it naming why, and `tokens list`
 * (the command, in-process) says UNUSABLE and exits 1.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TokenStore, tokenDigest } from '../../src/access/tokens.ts';
import { memoryIO } from '../../src/cli/io.ts';
import { reportError } from '../../src/cli/main.ts';
import { tokensCommand } from '../../src/cli/tokens.ts';
import { FleetpatchError } from '../../src/errors.ts';
import { EventStore } from '../../src/events/store.ts';
import { createTestDatabase, type TestDatabase } from '../support/database.ts';

let db: TestDatabase;
let tokens: TokenStore;
let dataDir: string;
const by = { kind: 'user' as const, id: 'ops' };
const made: Record<string, string> = {};
const saved = { DATABASE_URL: process.env.DATABASE_URL, FLEETPATCH_DATA_DIR: process.env.FLEETPATCH_DATA_DIR, LOG_LEVEL: process.env.LOG_LEVEL };

beforeAll(async () => {
  db = await createTestDatabase();
  tokens = new TokenStore(new EventStore(db.pool));
  for (const [name, role] of [['intact', 'viewer'], ['gone', 'operator'], ['altered', 'viewer'], ['promoted', 'viewer'], ['unrevoked', 'admin']] as const) {
    made[name] = (await tokens.create(name, role, by)).token;
  }
  await tokens.revoke('unrevoked', by, 'rotated');
  dataDir = await mkdtemp(path.join(os.tmpdir(), 'fleetpatch-tokens-'));
  Object.assign(process.env, { DATABASE_URL: db.url, FLEETPATCH_DATA_DIR: dataDir, LOG_LEVEL: 'silent' });
});
afterAll(async () => {
  for (const [k, v] of Object.entries(saved)) {
    if (v === undefined) delete process.env[k];
    else process.env[k] = v;
  }
  await rm(dataDir, { recursive: true, force: true });
  await db?.drop();
});

const tamper = (sql: string, params: unknown[] = []) => db.pool.query(sql, params);

async function refusal(token: string): Promise<FleetpatchError> {
  const e = await tokens.authenticate(token).then(
    () => null,
    (err: unknown) => err,
  );
  if (e instanceof FleetpatchError) return e;
  throw new Error(`expected the token to be refused, got ${String(e)}`);
}

async function list(): Promise<{ code: number; out: string; err: string }> {
  const io = memoryIO();
  let code: number;
  try {
    code = await tokensCommand(['list'], io);
  } catch (e) {
    code = reportError(e, io);
  }
  return { code, out: io.stdout.join('\n'), err: io.stderr.join('\n') };
}

describe('API tokens against their access streams', () => {
  it('honours tokens their streams record', async () => {
    expect(await tokens.authenticate(made.intact!)).toEqual({ name: 'intact', role: 'viewer' });
    expect(await tokens.authenticate(made.unrevoked!)).toBeNull();
    expect((await tokens.list()).map((t) => [t.name, t.status])).toEqual([
      ['altered', 'live'],
      ['gone', 'live'],
      ['intact', 'live'],
      ['promoted', 'live'],
      ['unrevoked', 'revoked'],
    ]);
    expect((await list()).code).toBe(0);
  });

  it('refuses every token whose stream is gone, broken, or does not match its row, and tokens list says why', async () => {
    await tamper('ALTER TABLE events DISABLE TRIGGER USER');
    // The whole access stream deleted, events and head.
    await tamper(`DELETE FROM events WHERE stream_id = 'access-gone'`);
    await tamper(`DELETE FROM streams WHERE stream_id = 'access-gone'`);
    // Promoted in both places: the row and the recorded event, which then no longer hashes.
    await tamper(`UPDATE events SET data = jsonb_set(data, '{role}', '"admin"') WHERE stream_id = 'access-altered'`);
    await tamper(`UPDATE api_tokens SET role = 'admin' WHERE name = 'altered'`);
    // Promoted in the row only.
    await tamper(`UPDATE api_tokens SET role = 'admin' WHERE name = 'promoted'`);
    // A revoked token's row made live again.
    await tamper(`UPDATE api_tokens SET revoked_at = NULL, revoked_by = NULL WHERE name = 'unrevoked'`);
    // A token row that no event records.
    const forged = `fp_${'A'.repeat(43)}`;
    await tamper(`INSERT INTO api_tokens (name, role, token_sha256, created_at, created_by) VALUES ('forged', 'admin', $1, now(), 'nobody')`, [tokenDigest(forged)]);

    const why: Record<string, RegExp> = {
      gone: /its access stream access-gone is gone: no TokenCreated records this token/,
      altered: /the hash chain of access-altered is broken: the event at position 1 \(TokenCreated\) does not hash to its stored hash/,
      promoted: /its role \(admin\) is not the one TokenCreated recorded \(viewer\): the row was edited/,
      unrevoked: /access-unrevoked records it revoked \(TokenRevoked\), its row says live/,
      forged: /its access stream access-forged is gone/,
    };
    for (const [name, token] of Object.entries({ ...made, forged })) {
      if (name === 'intact') continue;
      const e = await refusal(token);
      expect(e.code).toBe('AUTH_REQUIRED');
      expect(e.message).toMatch(new RegExp(`^API token "${name}" is not honoured: `));
      expect(e.message).toMatch(why[name]!);
    }
    expect(await tokens.authenticate(made.intact!)).toEqual({ name: 'intact', role: 'viewer' });

    const listed = await tokens.list();
    expect(listed.filter((t) => t.status === 'unusable').map((t) => t.name)).toEqual(['altered', 'forged', 'gone', 'promoted', 'unrevoked']);
    expect(listed.find((t) => t.name === 'intact')).toMatchObject({ status: 'live', problem: null });
    const r = await list();
    expect(r.code).toBe(1);
    expect(r.out).toMatch(/^gone .*UNUSABLE: its access stream access-gone is gone/m);
    expect(r.out).toMatch(/^intact .* live$/m);
    expect(r.err).toContain('5 API token(s) are not honoured');
  });

  it('an admin gets out of it by revoking the token and making a new one under the name', async () => {
    await tokens.revoke('gone', by, 'its access stream was deleted');
    const fresh = (await tokens.create('gone', 'operator', by)).token;
    expect(await tokens.authenticate(fresh)).toEqual({ name: 'gone', role: 'operator' });
    expect((await tokens.list()).find((t) => t.name === 'gone')).toMatchObject({ status: 'live' });
  });
});
