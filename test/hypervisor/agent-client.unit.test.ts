/**
 * The HostAgent: typed errors for every way a host can fail, waiting for asynchronous actions,
 * keep-alive sockets, and a token that never leaks into logs, errors or JSON.
 */
import http from 'node:http';
import { Agent as UndiciAgent, buildConnector } from 'undici';
import type { AddressInfo } from 'node:net';
import { Writable } from 'node:stream';
import { inspect } from 'node:util';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FleetpatchError, XenError } from '../../src/errors.ts';
import { FleetClient, HostAgent } from '../../src/agent/client.ts';
import { freePort } from '../../src/runtime/process-utils.ts';
import { HELLO, delay, payload, startTestFleet, type TestFleet } from './fleet-helpers.ts';

let t: TestFleet;

beforeAll(async () => {
  t = await startTestFleet({ hosts: 100 });
});
afterAll(() => t.close());

function agentFor(id: string, extra: Partial<ConstructorParameters<typeof HostAgent>[0]> = {}): HostAgent {
  const h = t.fleet.fleet.hosts.find((x) => x.id === id)!;
  return new HostAgent({ url: t.fleet.url, hostId: id, token: h.token, ...extra });
}

async function caught(p: Promise<unknown>): Promise<FleetpatchError> {
  const e = await p.then(
    () => {
      throw new Error('expected a rejection');
    },
    (x: unknown) => x,
  );
  expect(e).toBeInstanceOf(FleetpatchError);
  return e as FleetpatchError;
}

describe('refusals are XenErrors', () => {
  it('ENOENT with the errno, its number and the reason in words', async () => {
    const e = await caught(agentFor('host-0001').get('nothing'));
    expect(e).toBeInstanceOf(XenError);
    expect(e).toMatchObject({ errnoName: 'ENOENT', errno: 2, code: 'ENOENT', message: 'nothing: no payload of that name is loaded' });
    expect(e.details).toMatchObject({ hostId: 'host-0001' });
  });

  it('a failed dependency check carries the structured check in details.dependencyCheck', async () => {
    const a = agentFor('host-0002');
    const bye = payload('bye', 'Bye World!', { depends: 'ab'.repeat(20) });
    const up = await a.upload('bye', bye);
    expect(up.dependencyCheck).toMatchObject({ kind: 'xen_depends', outcome: 'satisfied' });
    const e = (await caught(a.action('bye', 'apply'))) as XenError;
    expect(e.errnoName).toBe('EINVAL');
    expect(e.message).toMatch(/check against hypervisor build-id failed/);
    expect(e.details.dependencyCheck).toEqual({
      payload: 'bye',
      payloadBuildId: up.buildId,
      kind: 'depends',
      operation: 'apply',
      against: 'hypervisor',
      againstName: null,
      expected: 'ab'.repeat(20),
      found: t.fleet.fleet.hosts[2]!.buildId,
      outcome: 'mismatch',
    });
  });

  it('an upload refused by Xen\'s checks: EINVAL with the check\'s reason', async () => {
    const e = (await caught(agentFor('host-0003').upload('junk', new TextEncoder().encode('not an elf file at all, sorry')))) as XenError;
    expect(e.errnoName).toBe('EINVAL');
    expect(e.message).toMatch(/ELF/);
  });

  it('an upload built for another hypervisor reports the failed xen_depends check', async () => {
    const wrong = payload('wrong', 'x', { xenDepends: 'cd'.repeat(20) });
    const e = (await caught(agentFor('host-0003').upload('wrong', wrong))) as XenError;
    expect(e.errnoName).toBe('EINVAL');
    expect(e.details.dependencyCheck).toMatchObject({ kind: 'xen_depends', operation: 'upload', expected: 'cd'.repeat(20), found: t.fleet.fleet.hosts[3]!.buildId, outcome: 'mismatch' });
  });
});

describe('transport failures', () => {
  it('HOST_UNREACHABLE when nothing listens', async () => {
    const port = await freePort();
    const e = await caught(new HostAgent({ url: `http://127.0.0.1:${port}`, hostId: 'host-0000', token: 'x'.repeat(20) }).list());
    expect(e.code).toBe('HOST_UNREACHABLE');
    expect(e.retryable).toBe(true);
  });

  it('HOST_TIMEOUT when the host never answers', async () => {
    await t.admin.setFaults({ rules: [{ kind: 'unreachable', mode: 'hang', hosts: ['host-0010'] }] });
    try {
      const started = performance.now();
      const e = await caught(agentFor('host-0010', { timeoutMs: 150 }).list());
      expect(e.code).toBe('HOST_TIMEOUT');
      expect(performance.now() - started).toBeGreaterThanOrEqual(140);
    } finally {
      await t.admin.setFaults({});
    }
  });

  it('HOST_FORBIDDEN for a host the fleet does not have (the server does not tell ids apart without their token), HOST_PROTOCOL for answers we do not understand', async () => {
    expect((await caught(new HostAgent({ url: t.fleet.url, hostId: 'host-9999', token: 'x'.repeat(20) }).list())).code).toBe('HOST_FORBIDDEN');
    const odd = http.createServer((req, res) => {
      if (req.url?.includes('text')) res.writeHead(200, { 'content-type': 'text/html' }).end('<html>hello</html>');
      else res.writeHead(500).end('oops');
    });
    await new Promise<void>((r) => odd.listen(0, '127.0.0.1', r));
    try {
      const url = `http://127.0.0.1:${(odd.address() as AddressInfo).port}`;
      const a = new HostAgent({ url, hostId: 'text', token: 'x'.repeat(20) });
      expect((await caught(a.list())).code).toBe('HOST_PROTOCOL');
      const b = new HostAgent({ url, hostId: 'host-0000', token: 'x'.repeat(20) });
      const e = await caught(b.list());
      expect(e.code).toBe('HOST_PROTOCOL');
      expect(e.message).toMatch(/HTTP 500/);
    } finally {
      odd.closeAllConnections();
      await new Promise((r) => odd.close(r));
    }
  });
});

describe('asynchronous actions', () => {
  it('waitForAction polls until rc is no longer -EAGAIN, calling onPoll each time', async () => {
    await t.admin.setFaults({ rules: [{ kind: 'actionDuration', ms: 120, hosts: ['host-0020'] }] });
    try {
      const a = agentFor('host-0020');
      await a.upload('hello', HELLO);
      const started = performance.now();
      expect(await a.action('hello', 'apply')).toMatchObject({ rc: 0, scheduled: true });
      expect((await a.get('hello')).rc).toBe(-11);
      const polls: number[] = [];
      const status = await a.waitForAction('hello', { pollMs: 20, onPoll: (s, n) => void polls.push(s.rc, n) });
      expect(status).toEqual({ name: 'hello', state: 'APPLIED', rc: 0, reason: null });
      expect(performance.now() - started).toBeGreaterThanOrEqual(115);
      expect(polls.length).toBeGreaterThanOrEqual(4);
      expect(polls[0]).toBe(-11);
      expect((await a.call('xen_extra_version')).result).toBe('Hello World');
    } finally {
      await t.admin.setFaults({});
    }
  });

  it('ACTION_TIMEOUT when the deadline passes first; a second action meanwhile is EBUSY', async () => {
    await t.admin.setFaults({ actionDurationMs: 400 });
    try {
      const a = agentFor('host-0021');
      await a.upload('hello', HELLO);
      await a.upload('minor', payload('minor', 'm'));
      await a.action('hello', 'apply');
      const busy = (await caught(a.action('minor', 'apply', { nodeps: true }))) as XenError;
      expect(busy.errnoName).toBe('EBUSY');
      expect(busy.retryable).toBe(true);
      const e = await caught(a.waitForAction('hello', { pollMs: 10, deadlineMs: 60 }));
      expect(e.code).toBe('ACTION_TIMEOUT');
      expect(e.details).toMatchObject({ hostId: 'host-0021', payload: 'hello' });
    } finally {
      await t.admin.setFaults({});
    }
  });
});

describe('an action waited for on the host (waitMs)', () => {
  it('answers in one request: the scheduling result at once, the status when the work is done', async () => {
    await t.admin.setFaults({ rules: [{ kind: 'actionDuration', ms: 120, hosts: ['host-0040'] }] });
    try {
      const a = agentFor('host-0040');
      await a.upload('hello', HELLO);
      const before = (await t.admin.stats()).requests;
      const started = performance.now();
      let heard = -1;
      const r = await a.actAndWait('hello', 'apply', { waitMs: 5_000, onScheduled: () => void (heard = performance.now() - started) });
      const took = performance.now() - started;
      expect(took).toBeGreaterThanOrEqual(115);
      // The check was heard before the work ended, not with its status.
      expect(heard).toBeGreaterThanOrEqual(0);
      expect(heard).toBeLessThan(took - 60);
      expect(r.answer).toMatchObject({ rc: 0, scheduled: true, dependencyCheck: { outcome: 'satisfied' } });
      expect(r.status).toEqual({ name: 'hello', state: 'APPLIED', rc: 0, reason: null });
      // The ACTION was the only request (the stats request itself is the second).
      expect((await t.admin.stats()).requests - before).toBe(2);
      expect((await a.call('xen_extra_version')).result).toBe('Hello World');

      // A revert waited for the same way; an UNLOAD schedules nothing: one JSON answer, no status.
      expect((await a.actAndWait('hello', 'revert', { waitMs: 5_000 })).status).toMatchObject({ state: 'CHECKED', rc: 0 });
      expect(await a.actAndWait('hello', 'unload', { waitMs: 5_000 })).toEqual({ answer: { rc: 0, scheduled: false, dependencyCheck: null }, status: null });
    } finally {
      await t.admin.setFaults({});
    }
  });

  it('a wait shorter than the work ends with rc -EAGAIN on the host, and the client polls on to the end', async () => {
    await t.admin.setFaults({ rules: [{ kind: 'actionDuration', ms: 150, hosts: ['host-0041'] }] });
    try {
      const a = agentFor('host-0041');
      await a.upload('hello', HELLO);
      const polls: number[] = [];
      const r = await a.actAndWait('hello', 'apply', { waitMs: 30, pollMs: 10, onPoll: (s) => void polls.push(s.rc) });
      expect(r.status).toMatchObject({ state: 'APPLIED', rc: 0 });
      expect(polls.length).toBeGreaterThanOrEqual(1);
      expect(polls[0]).toBe(-11);
    } finally {
      await t.admin.setFaults({});
    }
  });

  it('reports a failed rendezvous as the final status; a host that crashes meanwhile has still told its check', async () => {
    await t.admin.setFaults({
      rules: [
        { kind: 'actionTimeout', rendezvousMs: 500, hosts: ['host-0042'] },
        { kind: 'crashDuringApply', downMs: 300, hosts: ['host-0043'] },
        { kind: 'actionDuration', ms: 100, hosts: ['host-0043'] },
      ],
    });
    try {
      const busy = agentFor('host-0042');
      await busy.upload('hello', HELLO);
      const r = await busy.actAndWait('hello', 'apply', { waitMs: 5_000, timeoutNs: 20_000_000 });
      expect(r.status).toMatchObject({ state: 'CHECKED', rc: -16 });
      expect(r.status!.reason).toContain('did not rendezvous');

      const crashing = agentFor('host-0043');
      await crashing.upload('hello', HELLO);
      const told: unknown[] = [];
      const e = await caught(crashing.actAndWait('hello', 'apply', { waitMs: 5_000, onScheduled: (a) => void told.push(a.dependencyCheck?.outcome) }));
      expect(e.code).toBe('HOST_UNREACHABLE');
      expect(told).toEqual(['satisfied']);
      await delay(350);
      // Back up, with nothing loaded: the crash took the payload with it.
      expect((await crashing.listAll()).entries).toEqual([]);
    } finally {
      await t.admin.setFaults({});
    }
  });

  it('reads the two parts however the bytes arrive, a character split between two chunks included', async () => {
    const reason = 'appliqué — done';
    const second = Buffer.from(`${JSON.stringify({ status: { name: 'x', state: 'APPLIED', rc: 0, reason } })}\n`);
    const cut = second.indexOf(Buffer.from('é')) + 1;
    const agentHost = http.createServer((_req, res) => {
      res.writeHead(202, { 'content-type': 'application/x-ndjson' });
      res.write(`${JSON.stringify({ rc: 0, scheduled: true, dependencyCheck: null })}\n${second.subarray(0, cut).toString('latin1')}`, 'latin1');
      setTimeout(() => res.end(second.subarray(cut)), 20);
    });
    await new Promise<void>((r) => agentHost.listen(0, '127.0.0.1', r));
    try {
      const a = new HostAgent({ url: `http://127.0.0.1:${(agentHost.address() as AddressInfo).port}`, hostId: 'host-0000', token: 'x'.repeat(20) });
      const heard: unknown[] = [];
      const r = await a.actAndWait('x', 'apply', { waitMs: 1_000, onScheduled: (s) => void heard.push(s.scheduled) });
      expect(heard).toEqual([true]);
      expect(r.status).toEqual({ name: 'x', state: 'APPLIED', rc: 0, reason });
    } finally {
      agentHost.closeAllConnections();
      await new Promise((r) => agentHost.close(r));
    }
  });

  it('refuses a waitMs that is not a whole number of milliseconds up to a minute, naming it', async () => {
    const a = agentFor('host-0044');
    await a.upload('hello', HELLO);
    for (const waitMs of [-1, 1.5, 60_001, '100']) {
      const res = await fetch(`${t.fleet.url}/hosts/host-0044/livepatch/hello/action`, {
        method: 'POST',
        headers: { authorization: `Bearer ${t.fleet.fleet.hosts.find((h) => h.id === 'host-0044')!.token}`, 'content-type': 'application/json' },
        body: JSON.stringify({ cmd: 'apply', waitMs }),
      });
      expect(res.status).toBe(400);
      expect(await res.json()).toMatchObject({ error: 'REQUEST_INVALID', message: expect.stringContaining('"waitMs" must be a whole number of milliseconds from 0 to 60000') });
    }
    // Nothing was scheduled by the refused requests; a refusal of Xen's comes back as a XenError.
    expect(await a.get('hello')).toMatchObject({ state: 'CHECKED', rc: 0 });
    expect(((await caught(a.actAndWait('missing', 'apply', { waitMs: 1_000 }))) as XenError).errnoName).toBe('ENOENT');
  });
});

describe('sockets and secrets', () => {
  it('shares keep-alive connections: 300 requests to 100 hosts over at most 8 connections', async () => {
    const connect = buildConnector({});
    let connections = 0;
    const dispatcher = new UndiciAgent({
      connections: 8,
      connect: (opts, cb) => {
        connections++;
        return connect(opts, cb);
      },
    });
    const client = new FleetClient(t.fleet.fleet, { dispatcher });
    await Promise.all(Array.from({ length: 300 }, (_, i) => client.host(t.fleet.fleet.hosts[i % 100]!.id).list()));
    expect(connections).toBeGreaterThan(0);
    expect(connections).toBeLessThanOrEqual(8);
    await dispatcher.close();
  });

  it('never writes the token to logs, errors, JSON or inspect output', async () => {
    const lines: string[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _enc, cb) {
        lines.push(chunk.toString());
        cb();
      },
    });
    const logger = pino({ level: 'trace' }, sink);
    const h = t.fleet.fleet.hosts[30]!;
    const a = new HostAgent({ url: t.fleet.url, hostId: h.id, token: h.token, logger });
    await a.list();
    await a.upload('hello', HELLO);
    const errors = await Promise.all([a.get('missing').catch((e: unknown) => e), a.action('missing', 'apply').catch((e: unknown) => e)]);
    const bad = new HostAgent({ url: t.fleet.url, hostId: h.id, token: `${h.token}x`, logger });
    errors.push(await bad.list().catch((e: unknown) => e));
    expect(lines.length).toBeGreaterThanOrEqual(5);
    const everything = [
      ...lines,
      JSON.stringify(a),
      inspect(a, { showHidden: true, depth: 5 }),
      inspect(bad, { showHidden: true, depth: 5 }),
      ...errors.map((e) => `${(e as Error).message} ${JSON.stringify((e as FleetpatchError).details)} ${inspect(e)}`),
    ].join('\n');
    expect(everything).not.toContain(h.token);
  });
});
