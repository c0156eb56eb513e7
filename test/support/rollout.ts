/**
 * Building blocks for rollout tests: payload builds for the two built-in hypervisor images, a plan
 * file on disk, and checks that compare the event store with the live fleet.
 */
import { mkdtemp, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { stringify } from 'yaml';
import { buildPayload, DEFAULT_IMAGE, parsePayload, type HypervisorImage, type PayloadSpec } from '../../src/payload/index.ts';
import { XEN_4_21_IMAGE } from '../../src/emulator/images.ts';
import { FleetClient } from '../../src/agent/client.ts';
import { readLiveStates } from '../../src/agent/live-state.ts';
import { EventStore, type RecordedEvent } from '../../src/events/store.ts';
import { hostStream } from '../../src/events/streams.ts';
import { foldHostStack } from '../../src/events/projections/host-stack.ts';
import type { PlanInput } from '../../src/rollout/plan.ts';
import type { Pool } from '../../src/runtime/database.ts';
import type { Client } from '@temporalio/client';
import { readPlanFile, resolvePlanPayloads, startRollout, type Started } from '../../src/control/rollouts.ts';
import type { Actor } from '../../src/rollout/types.ts';
import { signFile } from './signing.ts';
import type { RolloutProgress } from '../../src/rollout/progress.ts';
import { progressQuery } from '../../workflows/messages.ts';

export const IMAGE_A = DEFAULT_IMAGE;
export const IMAGE_B = XEN_4_21_IMAGE;

export interface BuiltPayload {
  file: string;
  name: string;
  buildId: string;
  depends: string;
}

/**
 * Builds a payload into `dir/<name>.livepatch` (the name Xen tools would derive from the file),
 * signed by the test key (`<file>.sig`) unless `signed: false`: rollouts refuse unsigned payloads.
 */
export async function writePayload(dir: string, name: string, spec: Omit<PayloadSpec, 'name'>, image: HypervisorImage, opts: { signed?: boolean } = {}): Promise<BuiltPayload> {
  const bytes = buildPayload({ name: name.replace(/[^A-Za-z0-9_]/g, '_'), ...spec }, { image });
  const file = path.join(dir, `${name}.livepatch`);
  await writeFile(file, bytes);
  if (opts.signed !== false) await signFile(file, bytes);
  const p = parsePayload(bytes);
  return { file, name, buildId: p.buildIdHex, depends: p.dependsHex };
}

export async function tempDir(prefix: string): Promise<string> {
  return mkdtemp(path.join(os.tmpdir(), `fleetpatch-${prefix}-`));
}

/**
 * Writes the plan into `dir`, stores its payloads and starts the rollout under `rolloutId`,
 * the way `fleetpatch rollout start` does.
 */
export async function startPlan(
  ctx: { client: Client; taskQueue: string; pool: Pool; dir: string; actor: Actor },
  plan: PlanInput,
  rolloutId: string,
): Promise<Started> {
  const { plan: p, dir, file } = await readPlanFile(await writePlan(ctx.dir, plan));
  const resolved = await resolvePlanPayloads(p, dir, { pool: ctx.pool, actor: ctx.actor, store: true, planFile: file });
  return startRollout(ctx.client, ctx.taskQueue, resolved, { requestedBy: ctx.actor, rolloutId });
}

export async function writePlan(dir: string, plan: PlanInput): Promise<string> {
  const file = path.join(dir, `${plan.name}.yaml`);
  await writeFile(file, stringify(plan));
  return file;
}

/** The events of a host's stream. */
export async function hostEvents(pool: Pool, hostId: string): Promise<RecordedEvent[]> {
  return new EventStore(pool).readStream(hostStream(hostId));
}

/** Hosts whose stack replayed from the event store differs from the live one (empty: none). */
export async function replayDifferences(pool: Pool, fleetFile: string): Promise<{ hostId: string; replayed: string[]; live: string[] }[]> {
  const fleet = await FleetClient.open(fleetFile);
  const live = await readLiveStates(fleet, fleet.hostIds);
  const out: { hostId: string; replayed: string[]; live: string[] }[] = [];
  for (const id of fleet.hostIds) {
    const replayed = foldHostStack(id, await hostEvents(pool, id)).applied.map((a) => a.buildId);
    const state = live.get(id);
    const liveStack = state?.ok ? state.state.applied.map((a) => a.buildId) : ['<unreachable>'];
    if (replayed.join() !== liveStack.join()) out.push({ hostId: id, replayed, live: liveStack });
  }
  return out;
}

export async function liveStacks(fleetFile: string): Promise<Map<string, string[]>> {
  const fleet = await FleetClient.open(fleetFile);
  const live = await readLiveStates(fleet, fleet.hostIds);
  return new Map([...live].map(([id, s]) => [id, s.ok ? s.state.applied.map((a) => a.name) : ['<unreachable>']]));
}

/**
 * The rollout's progress once `predicate` holds, asked every `pollMs`. A query that fails (a
 * loaded machine: the server may briefly report no poller) is asked again; the deadline decides,
 * and its error says the last progress and the last query error.
 */
export async function untilProgress(started: Started, predicate: (p: RolloutProgress) => boolean, opts: { timeoutMs?: number; pollMs?: number } = {}): Promise<RolloutProgress> {
  const deadline = Date.now() + (opts.timeoutMs ?? 60_000);
  let last: RolloutProgress | undefined;
  let lastError: unknown;
  for (;;) {
    try {
      last = await started.handle.query(progressQuery);
      if (predicate(last)) return last;
    } catch (e) {
      lastError = e;
    }
    if (Date.now() > deadline) throw new Error(`timed out; last progress: ${last ? `${last.status} ${JSON.stringify(last.waves)}` : 'none'}${lastError ? `; last query error: ${String(lastError)}` : ''}`);
    await new Promise((r) => setTimeout(r, opts.pollMs ?? 200));
  }
}
