/**
 * An emulated fleet where every host sits behind a real dom0 agent, enrolled the way an operator
 * enrols one: `fleetpatch ca init`, `ca issue --worker`, `hosts enroll <id>` (a join token),
 * `agent enroll` on the "host" (its key pair, `xl info build_id` through the double, a CSR posted
 * to the API's POST /api/enroll), then the agent serving mutual TLS from its directory, its
 * xen-livepatch and xl the doubles (src/double) over its own emulated host. The worker gets no
 * fleet file (a path that does not exist): it knows the hosts only from the event store and
 * reaches each over mutual TLS with its worker certificate, so every host request goes
 * worker -> mTLS -> agent -> tool double -> emulator. What the hosts run is read from the
 * emulator itself (its LIST and admin journal), not from fleetpatch's records.
 *
 * Agents run in this process (startAgent, cheap) or as `fleetpatch agent` child processes (the
 * real command; needed to SIGKILL one), chosen per host.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { inject } from 'vitest';
import { FleetClient } from '../../src/agent/client.ts';
import { apiContextFrom } from '../../src/app/api-context.ts';
import { startApi } from '../../src/api/server.ts';
import { memoryIO } from '../../src/cli/io.ts';
import { main } from '../../src/cli/main.ts';
import { writeToolDoubles, type InstalledDoubles } from '../../src/double/install.ts';
import { hostImage, startFleetServer, type RunningFleet } from '../../src/emulator/index.ts';
import type { JournalEntry } from '../../src/emulator/journal.ts';
import { startAgent, type RunningAgent } from '../../src/host/agent-server.ts';
import { loadAgentTls } from '../../src/host/agent-tls.ts';
import { publicKeyToFile, type SigningKey } from '../../src/payload/index.ts';
import type { HypervisorImage } from '../../src/payload/image.ts';
import { createLogger } from '../../src/runtime/logger.ts';
import type { TestDatabase } from './database.ts';
import { IMAGE_A, liveStacks, tempDir } from './rollout.ts';
import { TEST_SIGNING_KEY } from './signing.ts';
import { startTestWorker, type TestTemporal } from './temporal.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const CLI = path.join(ROOT, 'bin', 'fleetpatch.js');

export interface FleetAgent {
  readonly hostId: string;
  readonly dir: string;
  readonly port: number;
  readonly tools: InstalledDoubles;
  readonly process: boolean;
  /** The running agent's OS process (process agents only). */
  child?: ChildProcess;
  inProcess?: RunningAgent;
}

export interface AgentFleet {
  fleet: RunningFleet;
  temporal: TestTemporal;
  dataDir: string;
  apiUrl: string;
  agents: Map<string, FleetAgent>;
  hostIds: string[];
  /** Runs the fleetpatch CLI in this process with this fleet's data dir and database. */
  cli(args: string[]): Promise<{ code: number; out: string[]; err: string[] }>;
  /** Each host's applied stack (names, bottom first) as the emulated hypervisor lists it. */
  hypervisorStacks(): Promise<Map<string, string[]>>;
  /** Each host's full LIST as the emulated hypervisor has it: name and state. */
  hypervisorLists(): Promise<Map<string, { name: string; state: string }[]>>;
  /** The emulator's own journal of a host (its admin API). */
  hypervisorJournal(hostId: string): Promise<JournalEntry[]>;
  /** Starts (again) a host's agent as a `fleetpatch agent` process. */
  startProcessAgent(hostId: string): Promise<void>;
  /** Starts (again) a host's agent in this process, on its directory and address (milliseconds, not seconds). */
  startInProcessAgent(hostId: string): Promise<void>;
  close(): Promise<void>;
}

export interface AgentFleetOptions {
  db: TestDatabase;
  hosts: number;
  seed?: number;
  image?: HypervisorImage;
  /** Hosts whose agent is a `fleetpatch agent` child process (default: none, in process). */
  processHosts?: (hostId: string, index: number) => boolean;
  /** The keys a host's agent trusts (default: the test signing key). */
  trustedKeys?: (hostId: string) => SigningKey[];
  /** Labels given at `hosts enroll`. */
  labels?: (hostId: string, index: number) => Record<string, string>;
}

/** A free TCP port on loopback: the agent's address is enrolled before the agent listens. */
async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

/** Sets environment variables for the duration of `fn` (the CLI reads its settings from there). */
async function withEnv<T>(env: Record<string, string>, fn: () => Promise<T>): Promise<T> {
  const saved = Object.fromEntries(Object.keys(env).map((k) => [k, process.env[k]]));
  Object.assign(process.env, env);
  try {
    return await fn();
  } finally {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  }
}

export async function startAgentFleet(opts: AgentFleetOptions): Promise<AgentFleet> {
  const image = opts.image ?? IMAGE_A;
  const dataDir = await tempDir('agent-fleet');
  const fleet = await startFleetServer({ hosts: opts.hosts, port: 0, images: [hostImage(image)], seed: opts.seed ?? 1 });
  const env = { FLEETPATCH_DATA_DIR: dataDir, DATABASE_URL: opts.db.url, LOG_LEVEL: 'error' };
  const cli = (args: string[]) =>
    withEnv(env, async () => {
      const io = memoryIO();
      const code = await main(args, io);
      return { code, out: io.stdout, err: io.stderr };
    });
  const must = async (args: string[]) => {
    const r = await cli(args);
    if (r.code !== 0) throw new Error(`fleetpatch ${args.join(' ')} exited ${r.code}: ${r.err.join('\n')}`);
    return r;
  };

  await must(['ca', 'init']);
  await must(['ca', 'issue', '--worker', 'e2e']);
  // No fleet file for the worker: the hosts exist for it only as enrolled ones, behind agents.
  const noFleetFile = path.join(dataDir, 'no-fleet-file.json');
  const temporal = await startTestWorker({ pool: opts.db.pool, fleetFile: noFleetFile, dataDir, hostTimeoutMs: 120_000 });
  const api = await startApi(
    apiContextFrom({ pool: opts.db.pool, logger: createLogger('silent'), client: temporal.client, taskQueue: temporal.taskQueue, namespace: inject('temporalNamespace'), fleetFile: noFleetFile, trustedKeys: async () => [], dataDir }),
    { host: '127.0.0.1', port: 0 },
  );

  const agents = new Map<string, FleetAgent>();
  const hostIds = fleet.fleet.hosts.map((h) => h.id);

  const startProcessAgent = async (hostId: string): Promise<void> => {
    const a = agents.get(hostId)!;
    const child = spawn(process.execPath, [CLI, 'agent', '--dir', a.dir, '--listen', `127.0.0.1:${a.port}`, '--xen-livepatch', a.tools.xenLivepatch, '--xl', a.tools.xl, '--tool-timeout', '120000'], {
      cwd: ROOT,
      env: { ...process.env, LOG_LEVEL: 'info' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    a.child = child;
    let out = '';
    let err = '';
    child.stderr!.on('data', (d: Buffer) => (err = (err + d.toString()).slice(-4000)));
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`the agent of ${hostId} did not start in 120 s: ${err}`)), 120_000);
      child.stdout!.on('data', (d: Buffer) => {
        out += d.toString();
        if (out.includes(`fleetpatch agent: host ${hostId} at`)) {
          clearTimeout(timer);
          resolve();
        }
      });
      child.once('exit', (code, signal) => {
        clearTimeout(timer);
        reject(new Error(`the agent of ${hostId} exited (${code ?? signal}) before listening: ${err}`));
      });
    });
  };

  // Enrolment, one host at a time (each `agent enroll` runs the xl double once).
  for (const [i, member] of fleet.fleet.hosts.entries()) {
    const hostId = member.id;
    const dir = path.join(dataDir, 'hosts', hostId);
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const tools = await writeToolDoubles(path.join(dir, 'bin'), { url: fleet.url, hostId, token: member.token, timeoutMs: 120_000 });
    const labelArgs = Object.entries(opts.labels?.(hostId, i) ?? {}).flatMap(([k, v]) => ['--label', `${k}=${v}`]);
    const issued = await must(['hosts', 'enroll', hostId, '--json', '--control', api.url, ...labelArgs]);
    const joinToken = (JSON.parse(issued.out[0]!) as { joinToken: string }).joinToken;
    const port = await freePort();
    await must(['agent', 'enroll', '--join-token', joinToken, '--control', api.url, '--dir', dir, '--address', `https://127.0.0.1:${port}`, '--xl', tools.xl, '--json']);
    const keys = opts.trustedKeys?.(hostId) ?? [TEST_SIGNING_KEY];
    await writeFile(path.join(dir, 'trusted-keys.json'), JSON.stringify(keys.map((k) => publicKeyToFile(k))));
    const asProcess = opts.processHosts?.(hostId, i) ?? false;
    agents.set(hostId, { hostId, dir, port, tools, process: asProcess });
  }

  const startInProcessAgent = async (hostId: string): Promise<void> => {
    const a = agents.get(hostId)!;
    const tls = await loadAgentTls(a.dir);
    a.inProcess = await startAgent({ dir: a.dir, hostId: tls.hostId, host: '127.0.0.1', port: a.port, tls: { key: tls.key, cert: tls.cert, ca: tls.ca }, tools: { xenLivepatch: a.tools.xenLivepatch, xl: a.tools.xl, timeoutMs: 120_000, uploadDir: a.dir } });
  };

  // The agents, started together (a process agent's start is seconds of loading on a busy machine).
  await Promise.all([...agents.values()].map((a) => (a.process ? startProcessAgent(a.hostId) : startInProcessAgent(a.hostId))));

  const adminGet = async (route: string): Promise<unknown> => {
    const res = await fetch(`${fleet.url}/admin/${route}`, { headers: { authorization: `Bearer ${fleet.adminToken}` } });
    if (!res.ok) throw new Error(`GET /admin/${route}: HTTP ${res.status}`);
    return res.json();
  };

  return {
    fleet,
    temporal,
    dataDir,
    apiUrl: api.url,
    agents,
    hostIds,
    cli,
    startProcessAgent,
    startInProcessAgent,
    hypervisorStacks: () => liveStacks(fleet.fleetFile),
    hypervisorLists: async () => {
      const out = new Map<string, { name: string; state: string }[]>();
      // The emulator's own LIST, asked directly with each host's token (not through an agent).
      const direct = await FleetClient.open(fleet.fleetFile);
      for (const id of hostIds) out.set(id, (await direct.host(id).listAll()).entries.map((e) => ({ name: e.name, state: e.state })));
      await direct.close();
      return out;
    },
    hypervisorJournal: async (hostId) => ((await adminGet(`journal?host=${encodeURIComponent(hostId)}`)) as { hosts: Record<string, JournalEntry[]> }).hosts[hostId] ?? [],
    close: async () => {
      for (const a of agents.values()) {
        await a.inProcess?.close();
        if (a.child && a.child.exitCode === null && a.child.signalCode === null) {
          const exited = new Promise((r) => a.child!.once('exit', r));
          a.child.kill('SIGTERM');
          await exited;
        }
      }
      await api.close();
      await temporal.close();
      await fleet.close();
      await rm(dataDir, { recursive: true, force: true });
    },
  };
}

/** The agent's own journal of a host, as `fleetpatch agent journal --dir` prints it. */
export async function agentJournalLines(fleet: AgentFleet, hostId: string): Promise<string[]> {
  const r = await fleet.cli(['agent', 'journal', '--dir', fleet.agents.get(hostId)!.dir]);
  if (r.code !== 0) throw new Error(`agent journal: ${r.err.join('\n')}`);
  return r.out;
}

/** Raw journal text of a host's agent (to watch for a request arriving). */
export async function agentJournalText(fleet: AgentFleet, hostId: string): Promise<string> {
  return readFile(path.join(fleet.agents.get(hostId)!.dir, 'journal.jsonl'), 'utf8').catch(() => '');
}
