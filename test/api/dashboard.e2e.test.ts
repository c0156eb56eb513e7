/**
 * The dashboard in a real browser (headless Chromium driven by playwright-core): a rollout started
 * through the API shows up on the grid as it runs, its canary gate is approved from the page by a
 * second operator (the plan requires someone other than who started it), a failed host shows its
 * reason, a rollback asked for from the page turns the hosts back, and a host's view shows its
 * live stack, its replayed stack and every dependency check. Screenshots are kept under
 * test-results/ (CI keeps them as artifacts).
 */
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { chromium, type Browser, type Page } from 'playwright-core';
import { apiContextFrom } from '../../src/app/api-context.ts';
import { startApi } from '../../src/api/server.ts';
import { hostImage, startFleetServer, type RunningFleet } from '../../src/emulator/index.ts';
import { createLogger } from '../../src/runtime/logger.ts';
import { workerMetrics } from '../../src/runtime/worker-metrics.ts';
import { createTestDatabase, type TestDatabase } from '../support/database.ts';
import { startTestWorker, type TestTemporal } from '../support/temporal.ts';
import { TEST_SIGNING_KEY } from '../support/signing.ts';
import { IMAGE_A, tempDir, writePayload } from '../support/rollout.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const SHOTS = path.join(ROOT, 'test-results');

/** Debian's chromium (installed by .ci/run when missing), or the one FLEETPATCH_CHROMIUM names. */
function chromiumPath(): string {
  for (const candidate of [process.env.FLEETPATCH_CHROMIUM, '/usr/bin/chromium', '/usr/bin/chromium-browser']) if (candidate && existsSync(candidate)) return candidate;
  try {
    return execFileSync('sh', ['-c', 'command -v chromium || command -v chromium-browser'], { encoding: 'utf8' }).trim();
  } catch {
    throw new Error('no Chromium: install Debian\'s chromium package (apt-get install chromium; .ci/run does) or set FLEETPATCH_CHROMIUM');
  }
}

describe('the dashboard in a browser', () => {
  let db: TestDatabase;
  let fleet: RunningFleet;
  let temporal: TestTemporal;
  let api: Awaited<ReturnType<typeof startApi>>;
  let browser: Browser;
  const tokens: Record<string, string> = {};

  beforeAll(async () => {
    await mkdir(SHOTS, { recursive: true });
    db = await createTestDatabase();
    // Slow enough actions that the grid can be seen changing host by host.
    fleet = await startFleetServer({ hosts: 8, images: [hostImage(IMAGE_A)], seed: 5, actionDurationMs: 300 });
    temporal = await startTestWorker({ pool: db.pool, fleetFile: fleet.fleetFile });
    const ctx = apiContextFrom({
      pool: db.pool,
      logger: createLogger('error'),
      client: temporal.client,
      taskQueue: temporal.taskQueue,
      namespace: 'default',
      fleetFile: fleet.fleetFile,
      trustedKeys: async () => [TEST_SIGNING_KEY],
      // The worker runs in this process, as in the demo: its metrics are served by the API too.
      workerMetrics: workerMetrics(),
    });
    api = await startApi(ctx, { host: '127.0.0.1', port: 0 }, { pollMs: 200 });
    const by = { kind: 'user' as const, id: 'test' };
    tokens.alice = (await ctx.tokens.create('alice', 'operator', by)).token;
    tokens.bob = (await ctx.tokens.create('bob', 'operator', by)).token;
    tokens.vic = (await ctx.tokens.create('vic', 'viewer', by)).token;
    tokens.admin = (await ctx.tokens.create('root', 'admin', by)).token;
    browser = await chromium.launch({ executablePath: chromiumPath(), args: ['--no-sandbox', '--disable-dev-shm-usage'] });
  });

  afterAll(async () => {
    await browser?.close();
    await api?.close();
    await temporal?.close();
    await fleet?.close();
    await db?.drop();
  });

  const call = async (method: string, url: string, token: string, body?: unknown) => {
    const r = await fetch(`${api.url}${url}`, { method, headers: { authorization: `Bearer ${token}`, ...(body ? { 'content-type': 'application/json' } : {}) }, ...(body ? { body: JSON.stringify(body) } : {}) });
    const json = (await r.json()) as Record<string, unknown>;
    if (!r.ok) throw new Error(`${method} ${url}: ${r.status} ${JSON.stringify(json)}`);
    return json;
  };

  const pages: Page[] = [];
  afterEach(async (t) => {
    // A failed test leaves what each page showed.
    if (t.task.result?.state === 'fail') for (const [i, p] of pages.entries()) if (!p.isClosed()) await p.screenshot({ path: path.join(SHOTS, `dashboard-failure-${i}.png`), fullPage: true }).catch(() => undefined);
  });

  const open = async (token: string, rolloutId: string): Promise<Page> => {
    const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
    pages.push(page);
    page.on('pageerror', (e) => console.error(`page error: ${e.message}`));
    await page.goto(`${api.url}/#token=${token}&rollout=${rolloutId}`);
    await page.waitForSelector('#main:not([hidden])');
    return page;
  };

  const cells = (page: Page, state: string) => page.locator(`#grid button.cell[data-state="${state}"]`).count();

  it('shows a rollout started through the API live, takes the gate\'s approval from the page, shows failures and a rollback', { timeout: 240_000 }, async () => {
    // The payload goes in through the API (admin), signed by the trusted test key.
    const dir = await tempDir('dashboard');
    const fix = await writePayload(dir, 'fix', { funcs: [{ target: 'xen_extra_version', returns: '-fix' }] }, IMAGE_A);
    const bytes = await readFile(fix.file);
    const signature = JSON.parse(await readFile(`${fix.file}.sig`, 'utf8')) as Record<string, string>;
    await call('POST', '/api/payloads', tokens.admin!, { name: 'fix', bytes: bytes.toString('base64'), signature: { algorithm: signature.algorithm, keyId: signature.keyId, signature: signature.signature, ...(signature.sha256 ? { sha256: signature.sha256 } : {}) } });

    const started = await call('POST', '/api/rollouts', tokens.alice!, {
      reason: 'patch the fleet',
      id: 'browser-1',
      plan: {
        name: 'browser',
        payloads: [{ buildId: fix.buildId }],
        waves: [{ name: 'canary', hosts: 1 }, { name: 'rest', hosts: '100%', groupBy: 'region' }],
        concurrency: 2,
        budget: { perWave: '30%', total: 2 },
        gates: [{ after: 'canary', approval: true, requireDifferentApprover: true }],
        verify: { call: 'xen_extra_version', expect: '-fix' },
      },
    });
    expect(started).toMatchObject({ rolloutId: 'browser-1', started: true });

    const bob = await open(tokens.bob!, 'browser-1');
    // The page shows itself, then fills the grid from the live view's first answer.
    await expect.poll(() => bob.locator('#grid button.cell').count(), { timeout: 10_000 }).toBe(8);
    await bob.waitForSelector('[data-testid="gate"]', { timeout: 60_000 });
    // The gate comes with the workflow's progress, the grid with the events (polled every 200 ms):
    // the canary host may turn green a poll after the gate shows.
    await bob.waitForSelector('#grid button.cell[data-state="patched"]', { timeout: 10_000 });
    expect(await cells(bob, 'patched')).toBe(1);
    expect(await bob.locator('[data-testid="rollout-status"]').textContent()).toBe('awaiting-approval');
    await bob.screenshot({ path: path.join(SHOTS, 'dashboard-1-gate.png'), fullPage: true });
    // One host of the next wave will fail its verification (within the wave's budget).
    const faulty = (await bob.locator('#grid button.cell[data-state="idle"]').first().getAttribute('data-host'))!;
    fleet.setFaults({ rules: [{ kind: 'verifyFailure', hosts: [faulty], result: '-unstable' }] });

    // A viewer sees the gate but gets no approve button.
    const vic = await open(tokens.vic!, 'browser-1');
    await vic.waitForSelector('[data-testid="gate"]');
    expect(await vic.locator('#approve').count()).toBe(0);
    await vic.close();

    // alice started it, so alice's approval is refused by the workflow; the page says why.
    const alice = await open(tokens.alice!, 'browser-1');
    await alice.waitForSelector('#approve');
    await alice.fill('#approve-reason', 'my own canary looks fine');
    await alice.click('#approve');
    await alice.waitForSelector('[data-testid="gate"] .error:text-matches("someone other than alice")');
    await alice.close();

    // bob approves from the page; the grid fills as hosts are patched.
    await bob.fill('#approve-reason', 'canary healthy');
    await bob.click('#approve');
    await expect.poll(() => bob.locator('#grid button.cell[data-state="patching"], #grid button.cell[data-state="patched"]').count(), { timeout: 60_000, interval: 100 }).toBeGreaterThan(1);
    await bob.screenshot({ path: path.join(SHOTS, 'dashboard-2-running.png'), fullPage: true });
    await bob.waitForSelector('[data-testid="rollout-status"]:text-is("succeeded")', { timeout: 120_000 });
    await expect.poll(() => cells(bob, 'patched'), { timeout: 10_000 }).toBe(7);
    expect(await cells(bob, 'failed')).toBe(1);
    const failure = bob.locator('[data-testid="failures"] tbody tr');
    expect(await failure.count()).toBe(1);
    expect(await failure.first().textContent()).toMatch(new RegExp(`${faulty}.*verify.*-unstable`, 's'));
    expect(await bob.locator('#rollouts li:text-matches("approved.*by bob")').count()).toBe(1);
    await bob.screenshot({ path: path.join(SHOTS, 'dashboard-3-succeeded.png'), fullPage: true });

    // A host's view: live stack, replayed stack, every dependency check with against whom.
    const patchedHost = (await bob.locator('#grid button.cell[data-state="patched"]').first().getAttribute('data-host'))!;
    await bob.click(`#grid button.cell[data-host="${patchedHost}"]`);
    await bob.waitForSelector('#host:not([hidden]) [data-testid="checks"] tbody tr');
    const host = await bob.locator('#host-body').textContent();
    expect(host).toContain('Live stack');
    expect(host).toContain('Replayed stack');
    expect(host).toContain('the hypervisor');
    expect(host).toContain('The live host runs exactly what its events say.');
    await bob.screenshot({ path: path.join(SHOTS, 'dashboard-4-host.png'), fullPage: true });
    await bob.click('#host-close');

    // Roll it back from the page: the grid shows the hosts going back.
    await bob.fill('#rollback-reason', 'customer reports');
    await bob.click('#rollouts form.actions button.danger');
    // Every host: the seven it patched restored, the failed one (restored at once) with nothing to undo.
    await expect.poll(() => cells(bob, 'rolled-back'), { timeout: 120_000, interval: 200 }).toBe(8);
    await bob.waitForSelector('[data-testid="rollback"]:has-text("every host is back")', { timeout: 30_000 });
    await bob.screenshot({ path: path.join(SHOTS, 'dashboard-5-rolled-back.png'), fullPage: true });

    // Audit search from the page.
    await bob.selectOption('#audit-kind', 'checks-rollout');
    await bob.fill('#audit-subject', 'browser-1');
    await bob.click('#audit-form button[type="submit"]');
    await bob.waitForSelector('#audit-results table tbody tr');
    expect(await bob.locator('#audit-results tbody tr').count()).toBeGreaterThanOrEqual(8);
    await bob.close();

    // Who decided: the tokens' names.
    const report = (await call('GET', '/api/audit/rollouts/browser-1', tokens.vic!)) as { summary: { startedBy: { id: string }; decisions: { action: string; by: { id: string } }[] } };
    expect(report.summary.startedBy.id).toBe('alice');
    expect(report.summary.decisions).toEqual([expect.objectContaining({ action: 'approved', by: expect.objectContaining({ id: 'bob' }) })]);

    // Metrics derived from the events.
    const metrics = await (await fetch(`${api.url}/metrics`, { headers: { authorization: `Bearer ${tokens.vic}` } })).text();
    expect(metrics).toMatch(/fleetpatch_rollout_hosts\{rollout="browser-1",outcome="patched"\} 7/);
    expect(metrics).toMatch(/fleetpatch_rollout_hosts\{rollout="browser-1",outcome="rolled_back"\} 7/);
    expect(metrics).toMatch(/fleetpatch_dependency_checks_total\{phase="preflight",outcome="match"\} 8/);
    // The worker's own: hypervisor action and event-store append latencies.
    expect(Number(/fleetpatch_hypervisor_action_seconds_count\{action="apply",outcome="ok"\} (\d+)/.exec(metrics)?.[1])).toBeGreaterThanOrEqual(8);
    expect(Number(/fleetpatch_hypervisor_action_seconds_count\{action="revert",outcome="ok"\} (\d+)/.exec(metrics)?.[1])).toBeGreaterThanOrEqual(7);
    expect(Number(/fleetpatch_event_append_seconds_count\{outcome="ok"\} (\d+)/.exec(metrics)?.[1])).toBeGreaterThan(0);
  });
});
