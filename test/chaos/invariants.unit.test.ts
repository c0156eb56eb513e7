/**
 * The chaos run's invariants (chaos/invariants.ts) on accounts whose truth is known: a REPLACE on
 * an empty stack as the emulated hypervisor really journals it (an in-process fleet), and repairs
 * whose record agrees, or not, with what the hosts run.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { everyChangeRecorded, failedHosts, failuresAreHostFaults, nothingAppliedTwice, repairsRecorded } from '../../chaos/invariants.ts';
import { parseEvent, type DomainEvent, type DomainEventInput } from '../../src/events/catalogue.ts';
import { parsePayload } from '../../src/payload/index.ts';
import { payload, startTestFleet, type TestFleet } from '../hypervisor/fleet-helpers.ts';

const FIX = payload('fix', '-fix', { writableData: 8 });
const FIX2 = payload('fix2', '-fix2');
const ref = (name: string, bytes: Uint8Array) => ({ name, buildId: parsePayload(bytes).buildIdHex });
const fix = ref('fix', FIX);
const fix2 = ref('fix2', FIX2);
const envelope = { schemaVersion: 1 as const, occurredAt: '2026-01-01T00:00:00.000Z', actor: { kind: 'workflow' as const, id: 'w' }, correlation: { rolloutId: 'r1' } };
const ev = (e: Record<string, unknown>): DomainEvent => parseEvent({ ...envelope, ...e } as DomainEventInput);

describe('every change recorded, against a real journal', () => {
  let t: TestFleet;
  beforeAll(async () => {
    t = await startTestFleet({ hosts: 2, seed: 3 });
  });
  afterAll(() => t?.close());

  const act = async (host: string, name: string, cmd: 'apply' | 'replace') => {
    await t.client.host(host).action(name, cmd);
    return t.client.host(host).waitForAction(name, { pollMs: 2 });
  };

  it('a REPLACE on an empty stack, which the hypervisor journals as an APPLY, is the REPLACE recorded; one over a stack reverts it', async () => {
    const [empty, stacked] = t.fleet.fleet.hosts.map((h) => h.id) as [string, string];
    await t.client.host(empty).upload('fix2', FIX2);
    expect(await act(empty, 'fix2', 'replace')).toMatchObject({ state: 'APPLIED', rc: 0 });
    await t.client.host(stacked).upload('fix', FIX);
    await act(stacked, 'fix', 'apply');
    await t.client.host(stacked).upload('fix2', FIX2);
    await act(stacked, 'fix2', 'replace');
    const journal = await t.admin.journal();
    expect(journal[empty]!.filter((e) => e.kind !== 'checked').map((e) => `${e.kind} ${e.name}`)).toEqual(['uploaded fix2', 'applied fix2']);
    expect(journal[stacked]!.filter((e) => e.kind !== 'checked').map((e) => `${e.kind} ${e.name}`)).toEqual(['uploaded fix', 'applied fix', 'uploaded fix2', 'reverted fix', 'replaced fix2']);

    // What the batch engine records for each: the REPLACE, with the stack it reverted.
    const events = [
      ev({ type: 'PayloadUploaded', hostId: empty, payload: fix2 }),
      ev({ type: 'PayloadReplaced', hostId: empty, payload: fix2, replaced: [] }),
      ev({ type: 'PayloadUploaded', hostId: stacked, payload: fix }),
      ev({ type: 'PayloadApplied', hostId: stacked, payload: fix }),
      ev({ type: 'PayloadUploaded', hostId: stacked, payload: fix2 }),
      ev({ type: 'PayloadReplaced', hostId: stacked, payload: fix2, replaced: [fix] }),
    ];
    const v = everyChangeRecorded(journal, events);
    expect(v.problems).toEqual([]);
    expect(v.ok).toBe(true);
    // ... and it still catches an event that claims what never happened, or a change left unrecorded.
    expect(everyChangeRecorded(journal, [...events, ev({ type: 'PayloadReplaced', hostId: empty, payload: fix2, replaced: [] })]).problems).toEqual([`${empty}/applied/${fix2.buildId}: 2 recorded, only 1 on the host`]);
    expect(everyChangeRecorded(journal, events.slice(0, 5)).ok).toBe(false);

    // The restore after a REPLACE applies the replaced payload again: not a second patch.
    await t.client.host(stacked).action('fix2', 'revert');
    await t.client.host(stacked).waitForAction('fix2', { pollMs: 2 });
    await t.client.host(stacked).action('fix', 'unload');
    await t.client.host(stacked).upload('fix', FIX);
    await act(stacked, 'fix', 'apply');
    const ours = new Set([fix.buildId, fix2.buildId]);
    expect(nothingAppliedTwice(await t.admin.journal(), ours).problems).toEqual([]);
    // Reverted and applied again with no REPLACE in between: that is a second patch.
    await t.client.host(empty).action('fix2', 'revert');
    await t.client.host(empty).waitForAction('fix2', { pollMs: 2 });
    expect(await act(empty, 'fix2', 'apply')).toMatchObject({ state: 'APPLIED', rc: 0 });
    expect(nothingAppliedTwice(await t.admin.journal(), ours).problems).toEqual([expect.stringMatching(new RegExp(`^${empty}: fix2 applied twice in boot`))]);
  });
});

describe('every repair outcome recorded per host', () => {
  const r = (e: Record<string, unknown>) => ev({ rolloutId: 'r1', ...e });
  const finished = (hostId: string, wave: string, outcome: 'patched' | 'failed') =>
    r({ type: 'HostPatchFinished', hostId, wave, outcome, applied: outcome === 'patched' ? [fix] : [], ...(outcome === 'failed' ? { failure: { stage: 'apply', code: 'EINVAL', reason: 'no', unreachable: false } } : {}) });
  const started = (repair: string, lost: number) => r({ type: 'RepairStarted', repair, reason: 'reboots', checked: 3, lost });
  const done = (repair: string, patched: number, failed: number) => r({ type: 'RepairFinished', repair, patched, failed });
  const ours = new Set([fix.buildId]);
  const rollout = [finished('h1', 'all', 'patched'), finished('h2', 'all', 'patched'), finished('h3', 'all', 'patched')];

  it('holds when each host the repair took has its outcome, the totals agree and the hosts run what the record says', () => {
    const events = [...rollout, started('repair-1', 2), finished('h2', 'repair-1', 'patched'), finished('h3', 'repair-1', 'failed'), done('repair-1', 1, 1)];
    const live = new Map([['h1', [fix.buildId]], ['h2', [fix.buildId]], ['h3', []]]);
    const v = repairsRecorded(events, live, ours, 'r1');
    expect(v).toMatchObject({ ok: true, problems: [] });
    expect(v.detail).toBe('1 repair(s), 2 host outcome(s) recorded (1 failed); 2 compared with the live hosts, 0 rebooted since');
  });

  it('fails the defect it was written for: the failure only in the totals, the host still counted patched and running nothing', () => {
    const events = [...rollout, started('repair-1', 2), finished('h2', 'repair-1', 'patched'), done('repair-1', 1, 1)];
    const v = repairsRecorded(events, new Map([['h1', [fix.buildId]], ['h2', [fix.buildId]], ['h3', []]]), ours, 'r1');
    expect(v.ok).toBe(false);
    expect(v.problems).toEqual([
      'repair-1: its totals say 1 patched and 1 failed, its hosts\' records 1 patched and 0 failed',
      'repair-1: 2 host(s) had lost the payload, 1 have an outcome recorded',
    ]);
  });

  it('fails an outcome the host contradicts, and one recorded twice; a host rebooted after its outcome is counted apart', () => {
    const events = [
      ...rollout,
      started('repair-1', 2),
      finished('h2', 'repair-1', 'patched'),
      finished('h3', 'repair-1', 'failed'),
      finished('h3', 'repair-1', 'failed'),
      done('repair-1', 1, 1),
      started('repair-2', 1),
      finished('h1', 'repair-2', 'patched'),
      done('repair-2', 1, 0),
      ev({ type: 'HostRebooted', hostId: 'h1', bootId: 'b2' }),
    ];
    const v = repairsRecorded(events, new Map([['h1', []], ['h2', []], ['h3', [fix.buildId]]]), ours, 'r1');
    expect(v.problems).toEqual([
      'repair-1: h3 has 2 outcomes recorded (failed, failed)',
      'h2: recorded patched by repair-1, runs []',
      `h3: recorded failed by repair-1, runs the payload (${fix.buildId.slice(0, 12)})`,
    ]);
    expect(v.detail).toMatch(/2 compared with the live hosts, 1 rebooted since$/);
  });

  it('takes a host\'s latest outcome, in the repair or the rollout, as what it ended with', () => {
    const events = [...rollout, started('repair-1', 1), finished('h3', 'repair-1', 'failed'), done('repair-1', 0, 1), r({ rolloutId: 'r2', type: 'HostPatchFinished', hostId: 'h9', wave: 'all', outcome: 'failed', applied: [], failure: { stage: 'read', code: 'HOST_TIMEOUT', reason: 'hung', unreachable: true } })];
    const failed = failedHosts(events);
    expect(failed.map((f) => `${f.rolloutId}/${f.hostId}`)).toEqual(['r1/h3', 'r2/h9']);
    expect(failuresAreHostFaults(failed, new Set(['h3'])).problems).toEqual(['h9 failed in r2 without a host fault: all: read HOST_TIMEOUT: hung']);
    expect(failedHosts([...events, started('repair-2', 1), finished('h3', 'repair-2', 'patched')]).map((f) => f.hostId)).toEqual(['h9']);
  });
});
