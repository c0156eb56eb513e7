/**
 * `fleetpatch demo`: a staged rollout over an emulated fleet, on the embedded defaults (a local
 * Temporal dev server and embedded PostgreSQL, started and stopped here), printed as it happens.
 *
 * The fleet has two hypervisor builds, so the fix is built twice; a few hosts already run an older
 * live patch, so no build fits them and the preflight says so; one host is set to fail its
 * verification, so a failure is handled within budget, reverted, and explained in words. The
 * canary needs an approval (given by the demo, recorded with who and why). Every step lands in
 * the event store, and the stacks replayed from it are compared with the live hosts at the end.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { boundedInteger, parseCommandArgs } from './args.ts';
import { withServices } from '../app/context.ts';
import type { Command } from './io.ts';
import { buildPayload, DEFAULT_IMAGE, generateSigningKey, parsePayload, publicKeyToFile, readSigningKey, signingKeyToFile, signPayload, type SigningKey } from '../payload/index.ts';
import { loadTrustedKeys } from '../control/trusted-keys.ts';
import { fileExists, readInputText } from '../runtime/files.ts';
import { XEN_4_21_IMAGE } from '../emulator/images.ts';
import { MAX_FLEET_HOSTS } from '../emulator/fleet.ts';
import { hostImage, startFleetServer } from '../emulator/index.ts';
import { openInventory } from '../app/inventory.ts';
import { readLiveStates } from '../agent/live-state.ts';
import { EventStore } from '../events/store.ts';
import { hostStream } from '../events/streams.ts';
import { foldHostStack } from '../events/projections/host-stack.ts';
import { startFleetpatchWorker } from '../app/worker.ts';
import { workerMetrics } from '../runtime/worker-metrics.ts';
import { createApiContext } from '../app/api-context.ts';
import { startApi } from '../api/server.ts';
import { DEFAULT_API_PORT } from './api.ts';
import { approveUpdate, progressQuery } from '../../workflows/messages.ts';
import { connectClient, describeProgress, isFinal, readPlanFile, resolvePlanPayloads, startRollout } from './rollouts.ts';
import { renderTable } from './table.ts';
import { dryRunPreflight } from '../control/dry-run.ts';

const PLAN = (hosts: number) => `# Written by \`fleetpatch demo\`: one fix, built once per hypervisor build in the fleet.
name: xsa-999-fix
payloads:
  - file: xsa999-for-4.19.livepatch
  - file: xsa999-for-4.21.livepatch
mode: apply
waves:
  - { name: canary, hosts: 1 }
  - { name: early, hosts: "25%", groupBy: region }
  - { name: rest, hosts: "100%", concurrency: ${Math.max(2, Math.ceil(hosts / 4))} }
concurrency: 4
budget:
  perWave: "10%"
  total: 2
bake: 2s
gates:
  - { after: canary, approval: true }
verify:
  call: xen_extra_version
  expect: "-xsa999"
onFailure: rollback
`;

export const demoCommand: Command = async (args, io) => {
  const { values } = parseCommandArgs(args, { help: { type: 'boolean', short: 'h' }, hosts: { type: 'string' }, keep: { type: 'boolean' }, 'api-port': { type: 'string' } }, 'demo');
  if (values.help) {
    io.out('Usage: fleetpatch demo [--hosts N] [--keep] [--api-port N]');
    io.out('Runs a staged rollout over an emulated fleet (default 24 hosts) on the embedded defaults and prints what happened.');
    return 0;
  }
  const hostCount = boundedInteger(values.hosts, '--hosts', 1, MAX_FLEET_HOSTS, 'demo') ?? 24;
  const apiPort = boundedInteger(values['api-port'], '--api-port', 0, 65535, 'demo') ?? DEFAULT_API_PORT;
  return withServices({ database: true, temporal: true }, async ({ config, services, logger, shutdown }) => {
    const dir = path.join(config.dataDir, 'demo');
    await mkdir(dir, { recursive: true });
    const say = (line = '') => io.out(line);

    // 1. The fleet: two hypervisor builds; every host labelled env=prod, region, rack.
    const fleet = await startFleetServer({ hosts: hostCount, images: [hostImage(DEFAULT_IMAGE), hostImage(XEN_4_21_IMAGE)], fleetFile: path.join(dir, 'fleet.json'), logger, seed: 7 });
    shutdown.add('emulated fleet', () => fleet.close());
    say(`Emulated fleet: ${hostCount} hosts at ${fleet.url} (fleet file ${fleet.fleetFile})`);
    say(`  hypervisor builds: 4.19 ${DEFAULT_IMAGE.buildIdHex} (even hosts), 4.21 ${XEN_4_21_IMAGE.buildIdHex} (odd hosts)`);
    // Every demo boots a fresh fleet whose host ids an earlier demo may have used: the preflight
    // sees their new boot ids and records that they rebooted and lost what they ran.
    const events = new EventStore(services.pool);

    // 2. The payloads, written where an operator would keep them, and the plan that names them.
    // Signed, as every rollout requires: by a demo key kept in the data dir, trusted by this demo only.
    const signer = await demoSigningKey(dir);
    const trustedKeys = [signer, ...(await loadTrustedKeys(config))];
    for (const [file, image] of [['xsa999-for-4.19.livepatch', DEFAULT_IMAGE], ['xsa999-for-4.21.livepatch', XEN_4_21_IMAGE]] as const) {
      const bytes = buildPayload({ name: 'xsa999', funcs: [{ target: 'xen_extra_version', returns: '-xsa999' }], modinfo: { XSA: '999' } }, { image });
      await writeFile(path.join(dir, file), bytes);
      await writeFile(path.join(dir, `${file}.sig`), JSON.stringify(signPayload(bytes, signer, parsePayload(bytes).buildIdHex), null, 2) + '\n');
    }
    const planFile = path.join(dir, 'plan.yaml');
    await writeFile(planFile, PLAN(hostCount));
    say(`Plan ${planFile} with payloads built for each hypervisor in ${dir}, signed by demo key ${signer.keyId}`);

    // 3. Two hosts already run an older live patch: no build of this fix sits on top of it.
    const client = await openInventory({ pool: services.pool, fleetFile: fleet.fleetFile, dataDir: config.dataDir });
    const older = buildPayload({ name: 'xsa990', funcs: [{ target: 'xen_changeset', returns: 'xsa990' }] }, { image: DEFAULT_IMAGE });
    for (const id of ['host-0002', 'host-0004'].filter((h) => fleet.fleet.hosts.some((x) => x.id === h))) {
      await client.host(id).upload('xsa990', older);
      await client.host(id).action('xsa990', 'apply');
      await client.host(id).waitForAction('xsa990');
    }
    say('host-0002 and host-0004 already run live patch xsa990 (applied outside this rollout)');

    // 4. A worker in this process, then the rollout.
    const metrics = workerMetrics();
    await startFleetpatchWorker({ services, fleetFile: fleet.fleetFile, dataDir: config.dataDir, logger, shutdown, trustedKeys });
    // The dashboard and the API, served by this process, with a token made for this demo.
    const apiCtx = await createApiContext({ config, logger, services, shutdown, workerMetrics: metrics, fleetFile: fleet.fleetFile, trustedKeys });
    const api = await startApi(apiCtx, { host: '127.0.0.1', port: apiPort }).catch((e: NodeJS.ErrnoException) => {
      if (e.code === 'EADDRINUSE') return startApi(apiCtx, { host: '127.0.0.1', port: 0 });
      throw e;
    });
    shutdown.add('HTTP API', api.close);
    const demoToken = await demoApiToken(apiCtx);
    const { plan, dir: planDir } = await readPlanFile(planFile);
    const by = { kind: 'user' as const, id: 'demo-operator' };
    const resolved = await resolvePlanPayloads(plan, planDir, { pool: services.pool, actor: by, store: true, planFile, trustedKeys });
    const rolloutId = `xsa-999-fix-demo-${new Date().toISOString().replace(/[-:]/g, '').replace(/\..*/, '')}`;

    // One host of the last wave will fail verification, to show a failure handled within budget.
    const planned = await dryRunPreflight(resolved, client, { rolloutId });
    const lastWave = planned.waves.at(-1)!.steps.flatMap((s) => s.hostIds);
    const faulty = lastWave[Math.floor(lastWave.length / 2)];
    if (faulty) {
      fleet.setFaults({ rules: [{ kind: 'verifyFailure', hosts: [faulty], result: '-unstable' }] });
      say(`${faulty} (in the last wave) is set to fail its verification after apply`);
    }

    const { client: temporal, close } = await connectClient(services.temporal);
    shutdown.add('temporal client', close);
    const started = await startRollout(temporal, services.taskQueue, resolved, { requestedBy: by, reason: 'demo: patch XSA-999 everywhere', rolloutId });
    say('');
    say(`Started rollout ${started.rolloutId} (workflow ${started.workflowId})`);
    if (services.temporalUiUrl) say(`  watch it in the Temporal Web UI: ${services.temporalUiUrl}/namespaces/${services.namespace}/workflows/${encodeURIComponent(started.workflowId)}`);
    say(`  watch the fleet in the dashboard:   ${api.url}/#token=${demoToken}&rollout=${encodeURIComponent(started.rolloutId)}`);
    say(`  (API ${api.url}/openapi.json, metrics ${api.url}/metrics; the link carries an admin token made for this demo, "demo-admin")`);

    // 5. Follow it: one line per change, approve the canary gate when it is reached.
    let last = '';
    let approved = false;
    for (;;) {
      const p = await started.handle.query(progressQuery);
      const line = `${p.status.padEnd(17)} ${p.waves.map((w) => `${w.name} ${w.done}/${w.planned}${w.failed ? ` (${w.failed} failed)` : ''}`).join(' | ')}`;
      if (line !== last) {
        say(`  ${new Date().toISOString().slice(11, 19)} ${line}`);
        last = line;
      }
      if (p.status === 'awaiting-approval' && !approved) {
        say(`  canary done: approving the next wave as demo-operator`);
        await started.handle.executeUpdate(approveUpdate, { args: [{ by, reason: 'canary verified: xen_extra_version returns -xsa999' }] });
        approved = true;
      }
      if (isFinal(p)) break;
      if (shutdown.signal.aborted) return 130;
      await new Promise((r) => setTimeout(r, 250));
    }

    const result = await started.handle.result();
    say('');
    describeProgress(result).forEach((l) => say(l));
    if (result.preflight?.incompatibleSamples.length) {
      say('incompatible hosts found by the preflight (left alone):');
      for (const s of result.preflight.incompatibleSamples) say(`  ${s.hostId}: ${s.reason}`);
    }

    // 6. What the event store says, and whether it matches the live fleet.
    const after = await readLiveStates(client, client.hostIds);
    const differ: string[] = [];
    const rows: string[][] = [];
    for (const id of client.hostIds) {
      const recorded = foldHostStack(id, await events.readStream(hostStream(id)));
      const state = after.get(id);
      const liveStack = state?.ok ? state.state.applied.map((a) => a.name).join(' > ') : '?';
      const recordedStack = recorded.applied.map((a) => a.name).join(' > ');
      if (recordedStack !== liveStack) differ.push(id);
      if (rows.length < 6) rows.push([id, liveStack || '(empty)', recordedStack || '(empty)', String((await client.host(id).call('xen_extra_version')).result)]);
    }
    say('');
    say('Live stacks and the stacks replayed from the event store (first hosts):');
    renderTable(['host', 'live stack', 'replayed from events', 'xen_extra_version'], rows).forEach((l) => say(`  ${l}`));
    say(`  ${client.hostIds.length - differ.length}/${client.hostIds.length} hosts: the stack replayed from events equals the live one`);
    if (differ.length) say(`  differ: ${differ.join(', ')} (xsa990 was applied outside fleetpatch, so no event records it: \`fleetpatch audit replay\` reports it as drift)`);
    if (faulty) {
      say('');
      say(`The timeline of ${faulty}, as recorded:`);
      for (const e of await events.readStream(hostStream(faulty))) {
        const ev = e.event as { type: string; reason?: string; outcome?: string; payload?: { name: string } };
        say(`  ${e.event.occurredAt.slice(11, 23)} ${ev.type.padEnd(18)} ${ev.payload?.name ?? ''} ${ev.outcome ?? ''} ${ev.reason ?? ''}`.trimEnd());
      }
    }
    say('');
    say('Try next (FLEETPATCH_FLEET_FILE is only needed while a fleet runs):');
    say(`  npx fleetpatch audit rollout ${started.rolloutId}`);
    say(`  npx fleetpatch audit timeline --host ${faulty ?? 'host-0000'}`);
    say(`  npx fleetpatch audit checks --rollout ${started.rolloutId} --outcome mismatch`);
    say('  npx fleetpatch audit verify');
    const code = result.status === 'succeeded' ? 0 : 1;
    if (values.keep) {
      if (io.isTTY && !process.env.CI) {
        say('');
        say('Keeping everything up until Ctrl-C:');
        say(`  dashboard    ${api.url}/#token=${demoToken}&rollout=${encodeURIComponent(started.rolloutId)}`);
        if (services.temporalUiUrl) say(`  Temporal UI  ${services.temporalUiUrl}/namespaces/${services.namespace}/workflows`);
        say(`  fleet        ${fleet.url} (FLEETPATCH_FLEET_FILE=${fleet.fleetFile})`);
        await new Promise<void>((resolve) => shutdown.signal.addEventListener('abort', () => resolve(), { once: true }));
      } else {
        say('--keep keeps the demo up only on a terminal (and not under CI); stopping now.');
      }
    }
    return code;
  });
};

/** A fresh admin token named demo-admin for this demo's dashboard link (an earlier demo's is revoked). */
async function demoApiToken(ctx: import('../app/api-context.ts').ApiContext): Promise<string> {
  const by = { kind: 'user' as const, id: 'fleetpatch demo' };
  if ((await ctx.tokens.list()).some((t) => t.name === 'demo-admin' && t.revokedAt === null)) await ctx.tokens.revoke('demo-admin', by, 'a new demo started');
  return (await ctx.tokens.create('demo-admin', 'admin', by)).token;
}

/** The demo's own signing key, made once and kept (0600) in the demo directory. */
async function demoSigningKey(dir: string): Promise<SigningKey> {
  const file = path.join(dir, 'demo-signing.key');
  if (await fileExists(file, 'key')) return readSigningKey(await readInputText(file, 'key'));
  const key = generateSigningKey();
  await writeFile(file, JSON.stringify(signingKeyToFile(key), null, 2) + '\n', { mode: 0o600 });
  await writeFile(path.join(dir, 'demo-signing.pub'), JSON.stringify(publicKeyToFile(key), null, 2) + '\n');
  return key;
}
