/**
 * Every route of the fleet server refuses a request without the right bearer token (401 without
 * credentials, 403 with wrong ones) and changes nothing: not the host's state, not its fault
 * counters, not the fleet's faults.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FleetpatchError } from '../../src/errors.ts';
import type { FleetFileHost } from '../../src/agent/fleet-file.ts';
import { HELLO, payload, startTestFleet, type TestFleet } from './fleet-helpers.ts';

let t: TestFleet;
let host: FleetFileHost;
let other: FleetFileHost;
const BYE = payload('bye', 'Bye World!');

const HOST_ROUTES: { method: string; path: string; body?: Uint8Array | string }[] = [
  { method: 'GET', path: '/livepatch' },
  { method: 'GET', path: '/livepatch?idx=0&nr=10' },
  { method: 'POST', path: '/livepatch/intruder', body: BYE },
  { method: 'GET', path: '/livepatch/hello' },
  { method: 'POST', path: '/livepatch/hello/action', body: JSON.stringify({ cmd: 'revert' }) },
  { method: 'POST', path: '/livepatch/bye/action', body: JSON.stringify({ cmd: 'unload' }) },
  { method: 'GET', path: '/functions' },
  { method: 'GET', path: '/functions/xen_extra_version' },
  { method: 'GET', path: '/dump' },
  { method: 'POST', path: '/reboot', body: '{}' },
  { method: 'GET', path: '/no-such-route' },
];

const ADMIN_ROUTES: { method: string; path: string; body?: string }[] = [
  { method: 'GET', path: '/admin/faults' },
  { method: 'POST', path: '/admin/faults', body: JSON.stringify({ rules: [{ kind: 'unreachable' }] }) },
  { method: 'GET', path: '/admin/stats' },
];

const BAD_CREDENTIALS: { label: string; header: string | undefined; status: number }[] = [
  { label: 'no Authorization header', header: undefined, status: 401 },
  { label: 'not a bearer token', header: 'Basic dXNlcjpwYXNz', status: 401 },
  { label: 'an empty bearer token', header: 'Bearer ', status: 401 },
  { label: 'a wrong token', header: 'Bearer not-the-token-of-this-host', status: 403 },
];

async function raw(method: string, path: string, authorization: string | undefined, body?: Uint8Array | string) {
  const headers: Record<string, string> = {};
  if (authorization !== undefined) headers.authorization = authorization;
  if (body !== undefined) headers['content-type'] = typeof body === 'string' ? 'application/json' : 'application/octet-stream';
  const res = await fetch(`${t.fleet.url}${path}`, { method, headers, ...(body !== undefined ? { body } : {}) });
  return { status: res.status, auth: res.headers.get('www-authenticate'), body: (await res.json()) as { error: string; message: string } };
}

beforeAll(async () => {
  t = await startTestFleet({ hosts: 2 });
  host = t.fleet.fleet.hosts[0]!;
  other = t.fleet.fleet.hosts[1]!;
  const agent = t.client.host(host.id);
  await agent.upload('hello', HELLO);
  await agent.action('hello', 'apply');
  await agent.waitForAction('hello');
  await agent.upload('bye', BYE);
  // The host's 2nd authenticated request from now on is refused: if refused requests counted,
  // the fault would hit one of them instead and the check at the end would see it missing.
  await t.admin.setFaults({ rules: [{ kind: 'unreachable', hosts: [host.id], afterRequests: 1, forRequests: 1 }] });
});

afterAll(() => t.close());

describe('authentication of /hosts/:id/*', () => {
  it('the right token works (and is request 0 for the fault counter)', async () => {
    expect((await t.client.host(host.id).get('hello')).state).toBe('APPLIED');
  });

  for (const route of HOST_ROUTES) {
    for (const cred of BAD_CREDENTIALS) {
      it(`${route.method} ${route.path} with ${cred.label}: ${cred.status}`, async () => {
        const before = t.fleet.host(host.id);
        const r = await raw(route.method, `/hosts/${host.id}${route.path}`, cred.header, route.body);
        expect(r.status).toBe(cred.status);
        // The catalogue's codes: no credentials (401), or not this host's (403).
        expect(r.body.error).toBe(cred.status === 401 ? 'HOST_UNAUTHORIZED' : 'HOST_FORBIDDEN');
        if (cred.status === 401) expect(r.auth).toBe('Bearer');
        expect(t.fleet.host(host.id)).toEqual(before);
      });
    }
    it(`${route.method} ${route.path} with another host's token: 403`, async () => {
      const before = t.fleet.host(host.id);
      const r = await raw(route.method, `/hosts/${host.id}${route.path}`, `Bearer ${other.token}`, route.body);
      expect(r.status).toBe(403);
      expect(t.fleet.host(host.id)).toEqual(before);
    });
    it(`${route.method} ${route.path} with the admin token: 403`, async () => {
      const r = await raw(route.method, `/hosts/${host.id}${route.path}`, `Bearer ${t.fleet.adminToken}`, route.body);
      expect(r.status).toBe(403);
    });
  }

  it('changed nothing: same payloads, same stack, same function result, and the fault counter did not move', async () => {
    const agent = t.client.host(host.id);
    // Request 1 of this host: the one the fault rule refuses.
    await expect(agent.list()).rejects.toMatchObject({ code: 'HOST_UNREACHABLE' });
    const list = await agent.list();
    expect(list.entries.map((e) => [e.name, e.state, e.rc])).toEqual([
      ['hello', 'APPLIED', 0],
      ['bye', 'CHECKED', 0],
    ]);
    expect(list.appliedStack.map((e) => e.name)).toEqual(['hello']);
    expect(list.boots).toBe(0);
    expect((await agent.call('xen_extra_version')).result).toBe('Hello World');
  });

  it('the HostAgent gets the refusal back as the catalogue error the host raised, never echoing the token', async () => {
    const { HostAgent } = await import('../../src/agent/client.ts');
    const wrong = new HostAgent({ url: t.fleet.url, hostId: host.id, token: other.token });
    const e = await wrong.list().catch((x: unknown) => x);
    expect(e).toBeInstanceOf(FleetpatchError);
    expect(e).toMatchObject({ code: 'HOST_FORBIDDEN' });
    expect(JSON.stringify({ m: (e as Error).message, d: (e as FleetpatchError).details })).not.toContain(other.token);
  });
});

describe('authentication of /admin/*', () => {
  for (const route of ADMIN_ROUTES) {
    for (const cred of [...BAD_CREDENTIALS, { label: "a host's token", header: 'HOST', status: 403 }]) {
      it(`${route.method} ${route.path} with ${cred.label}: ${cred.status}`, async () => {
        const faults = await t.admin.faults();
        const r = await raw(route.method, route.path, cred.header === 'HOST' ? `Bearer ${host.token}` : cred.header, route.body);
        expect(r.status).toBe(cred.status);
        expect(await t.admin.faults()).toEqual(faults);
      });
    }
  }

  it('GET /healthz needs no token', async () => {
    const res = await fetch(`${t.fleet.url}/healthz`);
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ ok: true, hosts: 2 });
  });

  it('an unknown host is refused exactly like a wrong token: host ids cannot be enumerated without one', async () => {
    for (const path of ['/hosts/host-9999/livepatch', '/hosts/no-such-host/dump', '/hosts/host-9999/no-such-route']) {
      const none = await raw('GET', path, undefined);
      expect(none).toMatchObject({ status: 401, auth: 'Bearer', body: { error: 'HOST_UNAUTHORIZED' } });
      const wrong = await raw('GET', path, 'Bearer not-the-token-of-this-host');
      const known = await raw('GET', `/hosts/${host.id}/livepatch`, 'Bearer not-the-token-of-this-host');
      expect(wrong).toEqual(known);
      // Even a real host's token does not tell that the id is unknown.
      expect(await raw('GET', path, `Bearer ${host.token}`)).toMatchObject({ status: 403, body: { error: 'HOST_FORBIDDEN' } });
    }
  });
});
