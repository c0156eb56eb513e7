/** The faults file (zod schema) and the seeded injector, without a server. */
import { mkdtemp, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { FleetpatchError } from '../../src/errors.ts';
import { FaultInjector, draw, loadFaultsFile, parseFaults, type FaultTarget, type FaultsInput } from '../../src/emulator/faults.ts';

const host = (i: number, region = 'eu-west'): FaultTarget => ({
  id: `host-${String(i).padStart(4, '0')}`,
  labels: { region, rack: 'rack-000' },
  image: { name: 'default', buildId: 'b48efad4098d4242ea8a36386ea1467ab59cffc9' },
});
const P = { name: 'xen_hello_world', buildId: 'aa'.repeat(20) };

function injector(f: FaultsInput, seed = 1): FaultInjector {
  return new FaultInjector(parseFaults(f), seed);
}

describe('the faults file', () => {
  it('has defaults for everything', () => {
    expect(parseFaults({})).toEqual({ latencyMs: 0, actionLatencyMs: 0, actionDurationMs: 0, rules: [] });
    expect(parseFaults({ rules: [{ kind: 'reboot' }] }).rules[0]).toEqual({ kind: 'reboot', downMs: 1000, probability: 1 });
  });

  it('names every problem with its path (FAULTS_INVALID)', () => {
    const bad = () =>
      parseFaults({ latencyMs: -1, rules: [{ kind: 'latency' }, { kind: 'explode' }, { kind: 'applyFailure', errno: 'EWHAT' }, { kind: 'reboot', probability: 2 }, { kind: 'unreachable', extra: 1 }] }, 'f.yaml');
    expect(bad).toThrow(FleetpatchError);
    try {
      bad();
    } catch (e) {
      const err = e as FleetpatchError;
      expect(err.code).toBe('FAULTS_INVALID');
      expect(err.message).toMatch(/^f\.yaml: /);
      for (const p of ['latencyMs', 'rules.0.ms', 'rules.1.kind', 'rules.2.errno', 'rules.3.probability', 'rules.4']) expect(err.message).toContain(p);
    }
  });

  it('reads YAML and JSON files', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'faults-'));
    const yaml = path.join(dir, 'f.yaml');
    await writeFile(yaml, 'seed: 7\nactionDurationMs: 100\nrules:\n  - kind: applyFailure\n    payload: xen_bye_world\n    probability: 0.5\n');
    expect(await loadFaultsFile(yaml)).toMatchObject({ seed: 7, actionDurationMs: 100, rules: [{ kind: 'applyFailure', payload: 'xen_bye_world', probability: 0.5, errno: 'EINVAL' }] });
    const json = path.join(dir, 'f.json');
    await writeFile(json, JSON.stringify({ latencyMs: 5 }));
    expect((await loadFaultsFile(json)).latencyMs).toBe(5);
    await expect(loadFaultsFile(path.join(dir, 'missing.yaml'))).rejects.toMatchObject({ code: 'FAULTS_INVALID' });
    await writeFile(json, '{ not: [json');
    await expect(loadFaultsFile(json)).rejects.toMatchObject({ code: 'FAULTS_INVALID' });
  });
});

describe('the injector', () => {
  it('adds fleet-wide latency, and action latency only to actions', () => {
    const f = injector({ latencyMs: 10, actionLatencyMs: 90 });
    expect(f.onRequest(host(0), 'list').latencyMs).toBe(10);
    expect(f.onRequest(host(0), 'action').latencyMs).toBe(100);
  });

  it('selects hosts by id, labels and image, and requests by window and count', () => {
    const f = injector({
      rules: [
        { kind: 'latency', ms: 5, hosts: ['host-0001'] },
        { kind: 'latency', ms: 50, labels: { region: 'us-east' } },
        { kind: 'latency', ms: 500, images: ['other'] },
        { kind: 'unreachable', hosts: ['host-0002'], afterRequests: 2, forRequests: 2 },
        { kind: 'reboot', hosts: ['host-0003'], times: 1, afterRequests: 1 },
      ],
    });
    expect(f.onRequest(host(1), 'get').latencyMs).toBe(5);
    expect(f.onRequest(host(4, 'us-east'), 'get').latencyMs).toBe(50);
    expect(f.onRequest(host(5), 'get').latencyMs).toBe(0);
    expect([0, 1, 2, 3, 4, 5].map(() => f.onRequest(host(2), 'get').unreachable)).toEqual([null, null, 'refuse', 'refuse', null, null]);
    expect([0, 1, 2, 3].map(() => f.onRequest(host(3), 'get').reboot)).toEqual([null, { downMs: 1000 }, null, null]);
  });

  it('decides action effects per payload and command', () => {
    const f = injector({
      actionDurationMs: 100,
      rules: [
        { kind: 'applyFailure', payload: 'xen_hello_world', errno: 'ENOMEM' },
        { kind: 'verifyFailure', payload: P.buildId, result: 'wrong' },
        { kind: 'revertFailure', payload: 'below' },
        { kind: 'actionTimeout', payload: 'slow' },
        { kind: 'crashDuringApply', payload: 'crashy', downMs: 5 },
        { kind: 'actionDuration', ms: 7, payload: 'quick' },
      ],
    });
    const n = f.onRequest(host(0), 'action').n;
    expect(f.actionEffects(host(0), n, { payload: P, cmd: 'apply', stack: [] })).toEqual({
      durationMs: 100,
      applyFailure: { errno: 'ENOMEM', reason: 'xen_hello_world: applying failed (injected ENOMEM)' },
      corruptResult: 'wrong',
    });
    // Reverting is not applying: neither fault concerns it.
    expect(f.actionEffects(host(0), n, { payload: P, cmd: 'revert', stack: [P] })).toEqual({ durationMs: 100 });
    const below = { name: 'below', buildId: 'bb'.repeat(20) };
    expect(f.actionEffects(host(0), n, { payload: { name: 'r', buildId: 'cc'.repeat(20) }, cmd: 'replace', stack: [below, P] }).revertFailures).toEqual({
      below: { errno: 'EINVAL', reason: 'below: reverting failed (injected EINVAL)' },
    });
    expect(f.actionEffects(host(0), n, { payload: { name: 'slow', buildId: '01' }, cmd: 'revert', stack: [] }).rendezvousMs).toBe(Number.POSITIVE_INFINITY);
    expect(f.actionEffects(host(0), n, { payload: { name: 'crashy', buildId: '02' }, cmd: 'apply', stack: [] }).crash).toEqual({ downMs: 5 });
    expect(f.actionEffects(host(0), n, { payload: { name: 'quick', buildId: '03' }, cmd: 'apply', stack: [] }).durationMs).toBe(7);
  });

  it('is reproducible: same seed and same requests per host give the same faults, whatever the interleaving', () => {
    const spec: FaultsInput = {
      rules: [
        { kind: 'latency', ms: 20, jitterMs: 10, probability: 0.5 },
        { kind: 'unreachable', probability: 0.1 },
        { kind: 'applyFailure', probability: 0.3 },
      ],
    };
    const record = (f: FaultInjector, order: number[]) => {
      const out = new Map<number, unknown[]>();
      for (const i of order) {
        const d = f.onRequest(host(i), 'action');
        const e = f.actionEffects(host(i), d.n, { payload: P, cmd: 'apply', stack: [] });
        out.set(i, [...(out.get(i) ?? []), [d.latencyMs, d.unreachable, e.applyFailure?.errno ?? null]]);
      }
      return out;
    };
    const order = Array.from({ length: 400 }, (_, k) => k % 8);
    const shuffled = [...order].sort((a, b) => draw(3, a, b) - 0.5 || a - b);
    const a = record(injector(spec, 42), order);
    const b = record(injector(spec, 42), shuffled);
    expect(b).toEqual(a);
    const c = record(injector(spec, 43), order);
    expect(c).not.toEqual(a);
    // The seed in the file wins over the fleet's.
    expect(record(injector({ ...spec, seed: 42 }, 7), order)).toEqual(a);
  });

  it('draws are uniform enough that probabilities mean what they say', () => {
    const f = injector({ rules: [{ kind: 'unreachable', probability: 0.25 }] });
    let hits = 0;
    for (let i = 0; i < 4000; i++) if (f.onRequest(host(i % 50), 'get').unreachable) hits++;
    expect(hits / 4000).toBeGreaterThan(0.22);
    expect(hits / 4000).toBeLessThan(0.28);
  });
});
