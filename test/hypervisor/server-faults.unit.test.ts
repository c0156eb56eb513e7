/** Faults injected into a running fleet over HTTP (POST /admin/faults), seen through the HostAgent. */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { XenError } from '../../src/errors.ts';
import type { FaultsInput } from '../../src/emulator/faults.ts';
import { HELLO, delay, payload, startTestFleet, type TestFleet } from './fleet-helpers.ts';

let t: TestFleet;
let next = 0;
/** A fresh host for each test, so tests do not see each other's payloads. */
const fresh = () => {
  const h = t.fleet.fleet.hosts[next++]!;
  return { id: h.id, agent: t.client.host(h.id) };
};

beforeAll(async () => {
  t = await startTestFleet({ hosts: 40, seed: 5 });
});
afterEach(() => t.admin.setFaults({}));
afterAll(() => t.close());

async function applied(agent: ReturnType<typeof fresh>['agent'], name = 'hello', bytes = HELLO) {
  await agent.upload(name, bytes);
  await agent.action(name, 'apply');
  return agent.waitForAction(name);
}

describe('faults over HTTP', () => {
  it('latency: every request of the selected hosts answers that much later', async () => {
    const { id, agent } = fresh();
    const quiet = fresh();
    await t.admin.setFaults({ rules: [{ kind: 'latency', ms: 80, hosts: [id] }] });
    const started = performance.now();
    await agent.list();
    expect(performance.now() - started).toBeGreaterThanOrEqual(78);
    // A host the rule does not name answers first, however loaded the machine: no stopwatch.
    await t.admin.setFaults({ rules: [{ kind: 'latency', ms: 5_000, hosts: [id] }] });
    const order: string[] = [];
    await Promise.all([agent.list().then(() => order.push('slow')), quiet.agent.list().then(() => order.push('quiet'))]);
    expect(order).toEqual(['quiet', 'slow']);
  });

  it('actionTimeout: the CPUs never rendezvous; rc -EBUSY after the 30 ms timeout, state unchanged', async () => {
    const { id, agent } = fresh();
    await t.admin.setFaults({ rules: [{ kind: 'actionTimeout', hosts: [id] }] });
    await agent.upload('hello', HELLO);
    const started = performance.now();
    await agent.action('hello', 'apply');
    const s = await agent.waitForAction('hello', { pollMs: 5 });
    expect(performance.now() - started).toBeGreaterThanOrEqual(29);
    expect(s).toMatchObject({ state: 'CHECKED', rc: -16, reason: expect.stringMatching(/quiesce/) });
    // A longer timeout does not help a rendezvous that never happens; a shorter rendezvous fits one.
    await t.admin.setFaults({ rules: [{ kind: 'actionTimeout', hosts: [id], rendezvousMs: 40 }] });
    await agent.action('hello', 'apply', { timeoutNs: 100_000_000 });
    expect(await agent.waitForAction('hello', { pollMs: 5 })).toMatchObject({ state: 'APPLIED', rc: 0 });
  });

  it('applyFailure for one payload: CHECKED with the errno; another payload applies', async () => {
    const { id, agent } = fresh();
    await t.admin.setFaults({ rules: [{ kind: 'applyFailure', hosts: [id], payload: 'hello', errno: 'ENOMEM' }] });
    expect(await applied(agent)).toEqual({ name: 'hello', state: 'CHECKED', rc: -12, reason: 'hello: applying failed (injected ENOMEM)' });
    expect(await applied(agent, 'other', payload('other', 'Other'))).toMatchObject({ state: 'APPLIED', rc: 0 });
  });

  it('verifyFailure: the apply succeeds, the patched function returns something else', async () => {
    const { id, agent } = fresh();
    await t.admin.setFaults({ rules: [{ kind: 'verifyFailure', hosts: [id], result: 'Goodbye, cruel world' }] });
    expect(await applied(agent)).toMatchObject({ state: 'APPLIED', rc: 0 });
    expect(await agent.call('xen_extra_version')).toMatchObject({ result: 'Goodbye, cruel world', providedBy: { name: 'hello' } });
  });

  it('crashDuringApply: the host is unreachable while it reboots, then has no payloads', async () => {
    const { id, agent } = fresh();
    await t.admin.setFaults({ rules: [{ kind: 'crashDuringApply', hosts: [id], downMs: 150 }] });
    await agent.upload('hello', HELLO);
    await agent.action('hello', 'apply');
    await expect(agent.get('hello')).rejects.toMatchObject({ code: 'HOST_UNREACHABLE' });
    await delay(160);
    const list = await agent.list();
    expect(list).toMatchObject({ entries: [], appliedStack: [], boots: 1, version: 1 });
    expect((await agent.call('xen_extra_version')).result).toBe('-unstable');
  });

  it('reboot on the n-th request: dropped, down for downMs, payloads gone', async () => {
    const { id, agent } = fresh();
    await applied(agent);
    await t.admin.setFaults({ rules: [{ kind: 'reboot', hosts: [id], afterRequests: 1, times: 1, downMs: 100 }] });
    await agent.list();
    await expect(agent.list()).rejects.toMatchObject({ code: 'HOST_UNREACHABLE' });
    await expect(agent.list()).rejects.toMatchObject({ code: 'HOST_UNREACHABLE' });
    await delay(110);
    expect(await agent.list()).toMatchObject({ entries: [], boots: 1 });
  });

  it('POST /hosts/:id/reboot: the image stays, the payloads vanish', async () => {
    const { agent } = fresh();
    await applied(agent);
    const before = await agent.list();
    expect(await agent.reboot()).toEqual({ rebooted: true, boots: 1 });
    const after = await agent.list();
    expect(after).toMatchObject({ entries: [], appliedStack: [], version: 1, boots: 1, hypervisor: before.hypervisor });
  });

  it('unreachable: refused (HOST_UNREACHABLE) or hanging (HOST_TIMEOUT), for the selected hosts only', async () => {
    const a = fresh();
    const b = fresh();
    await t.admin.setFaults({ rules: [{ kind: 'unreachable', mode: 'refuse', hosts: [a.id] }] });
    await expect(a.agent.list()).rejects.toMatchObject({ code: 'HOST_UNREACHABLE', retryable: true });
    await expect(b.agent.list()).resolves.toMatchObject({ host: b.id });
    await t.admin.setFaults({ rules: [{ kind: 'unreachable', mode: 'hang', hosts: [b.id] }] });
    const { HostAgent } = await import('../../src/agent/client.ts');
    const impatient = new HostAgent({ url: t.fleet.url, hostId: b.id, token: t.fleet.fleet.hosts.find((h) => h.id === b.id)!.token, timeoutMs: 100 });
    await expect(impatient.list()).rejects.toMatchObject({ code: 'HOST_TIMEOUT' });
  });

  it('actionDuration from startFleetServer options (the rollout bench\'s "100 ms per action")', async () => {
    const slow = await startTestFleet({ hosts: 1, actionDurationMs: 100 });
    try {
      const agent = slow.client.host('host-0000');
      await agent.upload('hello', HELLO);
      const started = performance.now();
      await agent.action('hello', 'apply');
      expect((await agent.get('hello')).rc).toBe(-11);
      await agent.waitForAction('hello', { pollMs: 10 });
      expect(performance.now() - started).toBeGreaterThanOrEqual(99);
      expect(await slow.admin.faults()).toMatchObject({ actionDurationMs: 100 });
    } finally {
      await slow.close();
    }
  });

  it('refuses an invalid fault set with FAULTS_INVALID and keeps the old one', async () => {
    await t.admin.setFaults({ latencyMs: 1 });
    await expect(t.admin.setFaults({ rules: [{ kind: 'nope' }] } as unknown as FaultsInput)).rejects.toMatchObject({ code: 'FAULTS_INVALID' });
    expect((await t.admin.faults()).latencyMs).toBe(1);
  });

  it('is reproducible across fleets: same seed, same requests, same failures', async () => {
    const spec: FaultsInput = { seed: 99, rules: [{ kind: 'applyFailure', probability: 0.5 }, { kind: 'latency', ms: 3, jitterMs: 3, probability: 0.5 }] };
    const outcomes = async (s: FaultsInput) => {
      const f = await startTestFleet({ hosts: 4, faults: s });
      try {
        return await Promise.all(
          f.fleet.fleet.hosts.map(async (h) => {
            const agent = f.client.host(h.id);
            await agent.upload('p', payload('p', 'p'));
            const rcs: number[] = [];
            for (let i = 0; i < 6; i++) {
              await agent.action('p', 'apply');
              const st = await agent.waitForAction('p', { pollMs: 1 });
              rcs.push(st.rc);
              if (st.state === 'APPLIED') {
                await agent.action('p', 'revert');
                await agent.waitForAction('p', { pollMs: 1 });
              }
            }
            return rcs;
          }),
        );
      } finally {
        await f.close();
      }
    };
    const first = await outcomes(spec);
    expect(first.flat()).toContain(-22);
    expect(first.flat()).toContain(0);
    expect(await outcomes(spec)).toEqual(first);
    expect(await outcomes({ ...spec, seed: 100 })).not.toEqual(first);
  });

  it('a synchronous refusal over HTTP has the JSON error shape of the contract', async () => {
    const { id } = fresh();
    const h = t.fleet.fleet.hosts.find((x) => x.id === id)!;
    const res = await fetch(`${t.fleet.url}/hosts/${id}/livepatch/none/action`, {
      method: 'POST',
      headers: { authorization: `Bearer ${h.token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ cmd: 'apply' }),
    });
    expect(res.status).toBe(404);
    expect(await res.json()).toEqual({ rc: -2, errno: 'ENOENT', code: 2, error: 'ENOENT', message: 'none: no payload of that name is loaded', details: { hostId: id, payload: 'none' } });
    const bad = await fetch(`${t.fleet.url}/hosts/${id}/livepatch/none/action`, { method: 'POST', headers: { authorization: `Bearer ${h.token}` }, body: 'not json' });
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as XenError & { error: string }).error).toBe('REQUEST_INVALID');
  });
});
