/**
 * Hostile numbers and paths against the fleet server: every number the HTTP API takes is finite and
 * bounded (JSON's 1e400 is Infinity once parsed), and a fleet file that cannot be written stops
 * the server instead of leaving it listening for nobody.
 */
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FleetpatchError } from '../../src/errors.ts';
import { emulateCommand } from '../../src/cli/emulate.ts';
import { memoryIO } from '../../src/cli/io.ts';
import { MAX_DOWN_MS, startFleetServer } from '../../src/emulator/server.ts';
import type { FleetFileHost } from '../../src/agent/fleet-file.ts';
import { HELLO, startTestFleet, type TestFleet } from './fleet-helpers.ts';

let t: TestFleet;
let host: FleetFileHost;

beforeAll(async () => {
  t = await startTestFleet({ hosts: 2 });
  host = t.fleet.fleet.hosts[0]!;
  await t.client.host(host.id).upload('hello', HELLO);
});
afterAll(() => t.close());

async function post(path: string, body: string, token = host.token) {
  const res = await fetch(`${t.fleet.url}${path}`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body });
  return { status: res.status, body: (await res.json()) as { error: string; message: string } };
}

async function get(path: string) {
  const res = await fetch(`${t.fleet.url}${path}`, { headers: { authorization: `Bearer ${host.token}` } });
  return { status: res.status, body: (await res.json()) as { error: string; message: string } };
}

describe('numbers in the HTTP API are finite and bounded', () => {
  it.each(['1e400', '-1e400', '1e12', String(MAX_DOWN_MS + 1), '-1', '"5"'])('POST /reboot {"downMs": %s}: 400, and the host stays up', async (downMs) => {
    const r = await post(`/hosts/${host.id}/reboot`, `{"downMs": ${downMs}}`);
    expect(r.status).toBe(400);
    expect(r.body.error).toBe('REQUEST_INVALID');
    expect(t.fleet.host(host.id)!.boots).toBe(0);
    expect((await t.client.host(host.id).list()).entries.map((e) => e.name)).toEqual(['hello']);
  });

  it('a reboot within the bound works', async () => {
    const other = t.fleet.fleet.hosts[1]!;
    const r = await post(`/hosts/${other.id}/reboot`, '{"downMs": 1}', other.token);
    expect(r.status).toBe(200);
  });

  it('ACTION {"timeoutNs": 1e400}: 400, nothing scheduled', async () => {
    const r = await post(`/hosts/${host.id}/livepatch/hello/action`, '{"cmd": "apply", "timeoutNs": 1e400}');
    expect(r.status).toBe(400);
    expect((await t.client.host(host.id).get('hello')).state).toBe('CHECKED');
  });

  it.each(['99999999999999999999', '4294967296', '1e3', '-1'])('LIST idx or nr = %s: EINVAL', async (n) => {
    expect((await get(`/hosts/${host.id}/livepatch?idx=${n}`)).body.error).toBe('EINVAL');
    expect((await get(`/hosts/${host.id}/livepatch?nr=${n}`)).body.error).toBe('EINVAL');
  });

  it.each([
    ['{"latencyMs": 1e400}'],
    ['{"actionDurationMs": 1e300}'],
    ['{"rules": [{"kind": "reboot", "downMs": 1e400}]}'],
    ['{"rules": [{"kind": "latency", "ms": 86400001}]}'],
  ])('POST /admin/faults %s: 400 FAULTS_INVALID, the fault set unchanged', async (doc) => {
    const before = await t.admin.faults();
    const r = await post('/admin/faults', doc, t.fleet.adminToken);
    expect(r).toMatchObject({ status: 400, body: { error: 'FAULTS_INVALID' } });
    expect(await t.admin.faults()).toEqual(before);
  });
});

describe('a fleet file that cannot be written', () => {
  async function freePort(): Promise<number> {
    const s = net.createServer();
    await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
    const port = (s.address() as net.AddressInfo).port;
    await new Promise((r) => s.close(r));
    return port;
  }

  it('stops the server with FLEET_FILE_INVALID: nothing is left listening', async () => {
    const port = await freePort();
    const e = await startFleetServer({ hosts: 1, port, fleetFile: '/etc/passwd/x.json' }).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(FleetpatchError);
    expect(e).toMatchObject({ code: 'FLEET_FILE_INVALID', message: expect.stringContaining('/etc/passwd/x.json') });
    const refused = await new Promise<boolean>((resolve) => {
      const c = net.connect(port, '127.0.0.1');
      c.once('connect', () => (c.destroy(), resolve(false)));
      c.once('error', () => resolve(true));
    });
    expect(refused).toBe(true);
  });

  it('`fleetpatch emulate --fleet-file /etc/passwd/x.json` ends with that error instead of listening forever', { timeout: 15_000 }, async () => {
    const io = memoryIO();
    await expect(emulateCommand(['--hosts', '1', '--port', '0', '--fleet-file', '/etc/passwd/x.json'], io)).rejects.toMatchObject({ code: 'FLEET_FILE_INVALID' });
  });
});
