/**
 * The host contract suite against the dom0 agent: every host of the suite is a `fleetpatch agent`
 * (in this process) serving over mutual TLS, driving the doubles of xen-livepatch and xl
 * (src/double) over an emulated host of its own, so the chain client -> mTLS -> agent -> tool ->
 * hypervisor is the one a real dom0 runs, with only the hypervisor emulated. The certificates are
 * made here with openssl (a fleet CA, a host certificate per agent, one worker certificate);
 * every upload is signed by a key in the agent's own trusted-keys.json. In the int tier: gcc,
 * openssl, sockets and the doubles' processes (about a second a run: the suite takes minutes).
 */
import { execFileSync } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Agent as UndiciAgent } from 'undici';
import { afterAll, vi } from 'vitest';
import { HostAgent } from '../../src/agent/client.ts';
import { writeToolDoubles } from '../../src/double/install.ts';
import { startFleetServer, type RunningFleet } from '../../src/emulator/server.ts';
import { startAgent, type RunningAgent } from '../../src/host/agent-server.ts';
import { loadAgentTls } from '../../src/host/agent-tls.ts';
import { generateSigningKey, publicKeyToFile, signPayload } from '../../src/payload/index.ts';
import { buildFixtures } from '../fixtures/toolchain.ts';
import { contractSuite, type ContractHost } from './contract-suite.ts';

// Each tool run of a double is a Node process (seconds on a loaded machine), and an agent's
// request runs one to three of them: the suite's rows need far more than the default minute.
vi.setConfig({ testTimeout: 600_000, hookTimeout: 600_000 });

const HOSTS = 16;
const SLOW_FROM = 12;
const KEY = generateSigningKey();
let fleet: RunningFleet | undefined;
let root: string | undefined;
const agents: RunningAgent[] = [];

afterAll(async () => {
  for (const a of agents) await a.close();
  await fleet?.close();
  if (root) await rm(root, { recursive: true, force: true });
});

const openssl = (args: string[]) => execFileSync('openssl', args, { stdio: 'pipe' });

function issue(dir: string, name: string, cn: string, ext: string): void {
  openssl(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', `${dir}/${name}.key`, '-out', `${dir}/${name}.csr`, '-subj', `/CN=${cn}`]);
  execFileSync('sh', ['-c', `printf '%s\\n' "$1" > "$2"`, 'sh', ext, `${dir}/${name}.ext`]);
  openssl(['x509', '-req', '-in', `${dir}/${name}.csr`, '-CA', `${root}/ca.pem`, '-CAkey', `${root}/ca.key`, '-CAcreateserial', '-out', `${dir}/${name}.pem`, '-days', '1', '-extfile', `${dir}/${name}.ext`]);
}

contractSuite('the dom0 agent over mutual TLS, on the doubles of xen-livepatch and xl', async () => {
  const fx = await buildFixtures();
  root = await mkdtemp(path.join(os.tmpdir(), 'fp-conformance-agent-'));
  openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', `${root}/ca.key`, '-out', `${root}/ca.pem`, '-days', '2', '-subj', '/CN=fleet CA',
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign']);
  issue(root, 'worker', 'worker:conformance', 'subjectAltName=URI:fleetpatch://worker/conformance\nextendedKeyUsage=clientAuth');
  const slow = Array.from({ length: HOSTS - SLOW_FROM }, (_, i) => `host-${String(SLOW_FROM + i).padStart(4, '0')}`);
  fleet = await startFleetServer({ hosts: HOSTS, port: 0, images: [fx.images.xen.path], faults: { rules: [{ kind: 'actionDuration', ms: 60_000, hosts: slow }] } });
  const dispatcher = new UndiciAgent({
    connect: {
      ca: await readFile(`${root}/ca.pem`),
      cert: await readFile(`${root}/worker.pem`),
      key: await readFile(`${root}/worker.key`),
      // The enrolment branch's client names the expected host by its SAN URI; here one CA, one fleet.
      checkServerIdentity: () => undefined,
    },
  });
  let next = 0;
  let nextSlow = SLOW_FROM;
  const bytes = (p: { path: string }) => readFile(p.path).then((b) => new Uint8Array(b));

  /** A dom0 agent for emulated host `id`: its directory, TLS files, trusted keys, doubles. */
  const agentFor = async (id: string): Promise<ContractHost> => {
    const member = fleet!.fleet.hosts.find((h) => h.id === id)!;
    const dir = path.join(root!, id);
    await mkdir(path.join(dir, 'tls'), { recursive: true });
    issue(dir, 'host', id, `subjectAltName=URI:fleetpatch://host/${id},IP:127.0.0.1\nextendedKeyUsage=serverAuth`);
    await writeFile(path.join(dir, 'tls', 'key.pem'), await readFile(`${dir}/host.key`), { mode: 0o600 });
    await writeFile(path.join(dir, 'tls', 'cert.pem'), await readFile(`${dir}/host.pem`));
    await writeFile(path.join(dir, 'tls', 'ca.pem'), await readFile(`${root}/ca.pem`));
    await writeFile(path.join(dir, 'trusted-keys.json'), JSON.stringify([publicKeyToFile(KEY)]));
    const tools = await writeToolDoubles(path.join(dir, 'bin'), { url: fleet!.url, hostId: id, token: member.token, timeoutMs: 60_000 });
    const tls = await loadAgentTls(dir);
    const agent = await startAgent({ dir, hostId: tls.hostId, host: '127.0.0.1', port: 0, tls, tools: { xenLivepatch: tools.xenLivepatch, xl: tools.xl, timeoutMs: 120_000, uploadDir: dir } });
    agents.push(agent);
    const client = new HostAgent({ url: agent.url, hostId: id, token: 'unused-over-mtls', dispatcher, timeoutMs: 300_000 });
    // The suite uploads as any caller would; the rollout's engine sends the stored signature.
    return {
      listAll: () => client.listAll(),
      get: (name) => client.get(name),
      upload: (name, b) => client.upload(name, b, { signature: signPayload(b, KEY) }),
      action: (name, cmd, o) => client.action(name, cmd, o),
      actAndWait: (name, cmd, o) => client.actAndWait(name, cmd, o),
      call: (fn) => client.call(fn),
    };
  };

  return {
    timeoutMs: 60_000,
    host: async (opts) => {
      const i = opts?.slowActions ? nextSlow++ : next++;
      if (i >= (opts?.slowActions ? HOSTS : SLOW_FROM)) throw new Error('the conformance fleet has no unused host left: raise HOSTS');
      return agentFor(`host-${String(i).padStart(4, '0')}`);
    },
    payloads: {
      hello: await bytes(fx.payloads.helloWorld),
      bye: await bytes(fx.payloads.byeWorld),
      replace: await bytes(fx.payloads.replaceWorld),
      nop: await bytes(fx.payloads.nop),
      noXenBuildId: await bytes(fx.payloads.noXenBuildId),
    },
  };
});
