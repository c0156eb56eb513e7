/**
 * Where a plan's webhook may point: http(s) only, no credentials, none of fleetpatch's own
 * services unless FLEETPATCH_WEBHOOK_ALLOW names the endpoint. Refused at plan validation
 * (the schema, then the configuration where the plan is resolved), naming notify.webhook.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { checkPlanWebhook } from '../../activities/webhooks.ts';
import { resolvePlanPayloads } from '../../src/control/rollouts.ts';
import { FleetpatchError } from '../../src/errors.ts';
import { validatePlan, type PlanInput } from '../../src/rollout/plan.ts';
import { webhookTargetProblem } from '../../src/rollout/webhook-target.ts';
import { DEFAULT_API_PORT, DEFAULT_FLEET_PORT, loadConfig } from '../../src/runtime/config.ts';
import { DEFAULT_API_PORT as CLI_API_PORT } from '../../src/cli/api.ts';
import { DEFAULT_PORT as CLI_FLEET_PORT } from '../../src/cli/emulate.ts';
import { refusal } from '../support/refusal.ts';

const plan = (webhook: string): PlanInput => ({ name: 'hooked', payloads: [{ buildId: 'ab'.repeat(20) }], waves: [{ name: 'all', hosts: '100%' }], notify: { webhook } });

async function asyncRefusal(p: Promise<unknown>): Promise<FleetpatchError> {
  const e = await p.then(
    () => null,
    (err: unknown) => err,
  );
  if (e instanceof FleetpatchError) return e;
  throw new Error(`expected a FleetpatchError, got ${String(e)}`);
}

describe('the plan schema refuses webhooks no configuration allows', () => {
  it.each([
    ['file:///etc/passwd', /not file:/],
    ['javascript:alert(1)', /not javascript:/],
    ['data:application/json,{}', /not data:/],
    ['gopher://127.0.0.1:70/_GET', /not gopher:/],
    ['ftp://example.com/x', /not ftp:/],
    ['not a url', /must be an http:\/\/ or https:\/\/ URL/],
    ['http://u:hunter2@hooks.example.com/x', /must not carry a user name or password/],
    ['https://:hunter2@hooks.example.com/x', /must not carry a user name or password/],
    ['https://token@hooks.example.com/x', /must not carry a user name or password/],
  ])('%s', (webhook, why) => {
    const e = refusal(() => validatePlan(plan(webhook)));
    expect(e.code).toBe('PLAN_INVALID');
    expect(e.message).toMatch(/^plan: notify\.webhook: /);
    expect(e.message).toMatch(why);
    expect(e.message + JSON.stringify(e.details)).not.toContain('hunter2');
    expect(e.details).toMatchObject({ issues: [{ path: ['notify', 'webhook'] }] });
  });

  it('takes http and https URLs', () => {
    expect(validatePlan(plan('https://chat.example.com/hooks/fleetpatch')).notify?.webhook).toBe('https://chat.example.com/hooks/fleetpatch');
    expect(validatePlan(plan('http://127.0.0.1:8080/hook')).notify?.webhook).toBe('http://127.0.0.1:8080/hook');
  });
});

describe("the configuration's own services", () => {
  const policyOf = (env: Record<string, string>) => ({ ...loadConfig(env).webhooks });

  it('refuses the ports of PostgreSQL, Temporal, the API and the fleet server, whatever the host is called', () => {
    const policy = policyOf({ DATABASE_URL: 'postgres://fp@db.internal:6543/x', TEMPORAL_ADDRESS: 'temporal.internal:7234' });
    for (const [url, service] of [
      ['http://127.0.0.1:6543/', /port 6543, PostgreSQL's \(DATABASE_URL\)/],
      ['http://db.internal:6543/hook', /PostgreSQL's/],
      ['http://[::ffff:127.0.0.1]:7234/', /Temporal's \(TEMPORAL_ADDRESS\)/],
      ['http://localhost:8300/api/tokens', /the HTTP API's/],
      ['https://0.0.0.0:9400/admin/faults', /the emulated fleet server's/],
    ] as const) {
      expect(webhookTargetProblem(url, policy)).toMatch(service);
    }
    expect(webhookTargetProblem('http://127.0.0.1:8080/hook', policy)).toBeUndefined();
    expect(webhookTargetProblem('https://hooks.example.com/x', policy)).toBeUndefined();
  });

  it('knows the local services fleetpatch starts: embedded PostgreSQL, the dev server and its UI, the cluster', () => {
    const local = policyOf({});
    for (const port of [54329, 7233, 8233]) expect(webhookTargetProblem(`http://127.0.0.1:${port}/`, local)).toBeDefined();
    const cluster = policyOf({ FLEETPATCH_TEMPORAL: 'cluster', FLEETPATCH_CLUSTER_PORT: '7400' });
    for (const port of [7400, 7404, 7408]) expect(webhookTargetProblem(`http://127.0.0.1:${port}/`, cluster)).toMatch(/Temporal cluster's/);
    expect(webhookTargetProblem('http://127.0.0.1:7233/', cluster)).toBeUndefined();
  });

  it('FLEETPATCH_WEBHOOK_ALLOW allows exactly the endpoints it names', () => {
    const policy = policyOf({ DATABASE_URL: 'postgres://fp@db/x', FLEETPATCH_WEBHOOK_ALLOW: ' 127.0.0.1:5432 , Hooks.Internal:8300' });
    expect(policy.allow).toEqual(['127.0.0.1:5432', 'hooks.internal:8300']);
    expect(webhookTargetProblem('http://127.0.0.1:5432/hook', policy)).toBeUndefined();
    expect(webhookTargetProblem('http://hooks.internal:8300/x', policy)).toBeUndefined();
    expect(webhookTargetProblem('http://localhost:5432/hook', policy)).toMatch(/FLEETPATCH_WEBHOOK_ALLOW=localhost:5432/);
    // Never credentials or another scheme, whatever it allows.
    expect(webhookTargetProblem('http://u:p@127.0.0.1:5432/hook', policy)).toMatch(/must not carry/);
  });

  it('refuses a FLEETPATCH_WEBHOOK_ALLOW that is not host:port endpoints', () => {
    for (const value of ['127.0.0.1', 'http://h:80', 'h:99999']) {
      const e = refusal(() => loadConfig({ FLEETPATCH_WEBHOOK_ALLOW: value }));
      expect(e.code).toBe('CONFIG_INVALID');
      expect(e.message).toContain('FLEETPATCH_WEBHOOK_ALLOW');
    }
  });

  it("keeps the API's and the emulator's default ports those of the CLI", () => {
    expect(DEFAULT_API_PORT).toBe(CLI_API_PORT);
    expect(DEFAULT_FLEET_PORT).toBe(CLI_FLEET_PORT);
  });
});

describe('where the plan is resolved (the CLI, the API), this process configuration decides', () => {
  const saved = { ...process.env };
  let dir: string | undefined;
  afterEach(async () => {
    for (const k of ['DATABASE_URL', 'TEMPORAL_ADDRESS', 'FLEETPATCH_FLEET_FILE', 'FLEETPATCH_WEBHOOK_ALLOW']) {
      if (saved[k] === undefined) delete process.env[k];
      else process.env[k] = saved[k];
    }
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it("refuses PostgreSQL's port and the fleet file's server, naming notify.webhook, before any payload is read", async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'fleetpatch-hooks-'));
    const fleetFile = path.join(dir, 'fleet.json');
    await writeFile(
      fleetFile,
      JSON.stringify({ url: 'http://127.0.0.1:9555', adminToken: 'a'.repeat(32), createdAt: new Date().toISOString(), seed: 1, images: [{ name: 'x', buildId: 'ab' }], hosts: [{ id: 'h', token: 't'.repeat(32), labels: { region: 'r', rack: 'k' }, buildId: 'ab', image: 'x' }] }),
    );
    Object.assign(process.env, { DATABASE_URL: 'postgres://fp@127.0.0.1:5432/x', FLEETPATCH_FLEET_FILE: fleetFile });
    delete process.env.FLEETPATCH_WEBHOOK_ALLOW;
    const actor = { kind: 'user' as const, id: 'test' };
    // A payload file that does not exist: the refusal comes first.
    const filePlan = validatePlan({ ...plan('http://localhost:5432/'), payloads: [{ file: 'missing.livepatch' }] });
    const pg = await asyncRefusal(resolvePlanPayloads(filePlan, dir, { actor, store: false, planFile: 'plan.yaml' }));
    expect(pg.code).toBe('PLAN_INVALID');
    expect(pg.message).toBe("plan.yaml: notify.webhook: http://localhost:5432 is on port 5432, PostgreSQL's (DATABASE_URL): fleetpatch does not send webhooks to its own services (FLEETPATCH_WEBHOOK_ALLOW=localhost:5432 allows this one)");
    const admin = await asyncRefusal(checkPlanWebhook('http://127.0.0.1:9555/admin/faults', 'body.plan'));
    expect(admin.message).toMatch(/^body\.plan: notify\.webhook: .*the fleet server's, with its \/admin routes/);
    process.env.FLEETPATCH_WEBHOOK_ALLOW = 'localhost:5432';
    await expect(checkPlanWebhook('http://localhost:5432/', 'plan.yaml')).resolves.toBeUndefined();
  });
});
