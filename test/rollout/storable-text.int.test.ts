/**
 * A property, for every text field a rollout is given (the plan's, the reason and the actor of a
 * start and of steering): whatever the edge accepts is recorded and read back equal from
 * PostgreSQL, and whatever it refuses is refused naming the field. Strings are generated with
 * emoji, combining marks, right-to-left marks, control characters, NUL and lone surrogates, empty,
 * and at and around each field's longest.
 *
 * "Recorded" is what a rollout records with the value, through the real pieces short of Temporal:
 * the plan validated (src/rollout/plan.ts), its payloads read, stored and verified
 * (resolvePlanPayloads: PayloadStored and the payloads table), the preflight planned over a
 * fleet that has those hosts and labels and its work list written (rollout_preflights,
 * rollout_targets), and the rollout's and the hosts' events appended through the EventStore.
 * test/rollout/storable-text.e2e.test.ts runs real rollouts with such text.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { boundedText, parseCommandArgs } from '../../src/cli/args.ts';
import { resolvePlanPayloads } from '../../src/control/rollouts.ts';
import { formatPath, unstorable } from '../../src/domain/text.ts';
import { parseEvent, type Actor, type DomainEventInput } from '../../src/events/catalogue.ts';
import { eventIdFromKey } from '../../src/events/event-id.ts';
import { insertPreflight, selectPreflight } from '../../src/events/sql/rollout-targets.ts';
import { EventStore } from '../../src/events/store.ts';
import { streamFor } from '../../src/events/streams.ts';
import { isFleetpatchError, type FleetpatchError } from '../../src/errors.ts';
import { buildPayload, DEFAULT_IMAGE } from '../../src/payload/index.ts';
import { PLAN_LIMITS, validatePlan, type PlanInput } from '../../src/rollout/plan.ts';
import { preflight, type FleetHost, type LiveState } from '../../src/rollout/preflight.ts';
import type { ResolvedPlan } from '../../src/rollout/types.ts';
import { createTestDatabase, type TestDatabase } from '../support/database.ts';
import { tempDir } from '../support/rollout.ts';

const XEN = DEFAULT_IMAGE.buildIdHex;
const OPERATOR: Actor = { kind: 'user', id: 'operator' };

// ---- the strings ----------------------------------------------------------------------------

/** One "character" of a generated string: what breaks storage, what breaks naive code, and what is merely unusual. */
const UNIT = fc.oneof(
  { weight: 3, arbitrary: fc.constantFrom(...'abcXYZ019-._ '.split('')) },
  { weight: 1, arbitrary: fc.constantFrom('\u0000', '\uD800', '\uDBFF', '\uDC00', '\uDFFF') },
  { weight: 2, arbitrary: fc.constantFrom('\u0001', '\u0008', '\t', '\n', '\r', '\u001b', '\u001f', '\u007f', '\u0085', '\u2028', '\u2029', '\uFEFF', '\uFFFD', '\uFFFF') },
  { weight: 2, arbitrary: fc.constantFrom('\u202e', '\u202c', '\u200f', '\u200e', '\u2067', 'ש', 'ל', 'م', 'ر', 'ح') },
  { weight: 2, arbitrary: fc.constantFrom('\u0301', '\u0308', '\u20dd', 'e\u0301', '\u200d', '🩹', '👩‍👩‍👧', '🏳️‍🌈', '中', '𝕏', '\u{10FFFF}') },
  { weight: 1, arbitrary: fc.constantFrom('"', "'", '\\', '$', '%', '{', '}', ':', '#', '&', '*', '|', '>', '-', '?', '!', '@', '`', '/', '..') },
  { weight: 2, arbitrary: fc.string({ unit: 'binary', minLength: 1, maxLength: 1 }) },
);

/** Exactly `n` UTF-16 units of `fill` (an emoji cut in half ends it with an ASCII letter instead). */
function ofLength(fill: string, n: number): string {
  let s = fill.repeat(Math.ceil(n / fill.length)).slice(0, n);
  if (/[\uD800-\uDBFF]$/.test(s)) s = `${s.slice(0, -1)}x`;
  return s;
}

/** Strings for a field whose longest is `max` UTF-16 units: short hostile ones, empty, and around the longest. */
function text(max: number, valid?: fc.Arbitrary<string>): fc.Arbitrary<string> {
  return fc.oneof(
    { weight: 6, arbitrary: fc.string({ unit: UNIT, minLength: 0, maxLength: 16 }) },
    { weight: 1, arbitrary: fc.constant('') },
    { weight: 2, arbitrary: fc.tuple(fc.constantFrom('x', 'é', 'ש', '🩹', 'e\u0301', '\u202e'), fc.integer({ min: max - 1, max: max + 1 })).map(([fill, n]) => ofLength(fill, Math.max(n, 0))) },
    { weight: 1, arbitrary: fc.tuple(fc.integer({ min: 0, max: max - 1 }), fc.constantFrom('\u0000', '\uD800', '\uDC00')).map(([n, bad]) => `${ofLength('🩹', n)}${bad}`) },
    ...(valid ? [{ weight: 4, arbitrary: valid }] : []),
  );
}

const escapeRegExp = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

const shortName = fc.stringMatching(/^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/);

// ---- the plan and where each field sits ------------------------------------------------------

interface Inputs {
  plan: PlanInput;
  /** The hosts the fleet registry lists: those the plan names, with its labels, plus one it does not. */
  fleet: FleetHost[];
  reason: string;
  by: string;
  steerReason: string;
  steerBy: string;
}

let runs = 0;

function baseInputs(): Inputs {
  const n = ++runs;
  const labels = { region: 'eu-west', rack: `r${n % 3}` };
  return {
    plan: {
      name: `fix-${n}`,
      description: 'the fix',
      // A payload named in the plan, and one named after its file.
      payloads: [{ file: `named-${n}.livepatch`, name: `fix_${n}` }, { file: `other-${n}/from_file_${n}.livepatch` }],
      allowUnsigned: true,
      hosts: { labels: { region: 'eu-west' }, ids: ['host-a', 'host-b'] },
      waves: [
        { name: 'canary', hosts: 1, groupBy: 'rack' },
        { name: 'all', hosts: '100%' },
      ],
      gates: [{ after: 'canary', approval: true }],
      verify: { call: 'xen_extra_version', expect: 'Hello' },
    },
    fleet: [
      { id: 'host-a', labels, buildId: XEN },
      { id: 'host-b', labels: { ...labels, rack: 'r9' }, buildId: XEN },
      { id: 'host-z', labels, buildId: XEN },
    ],
    reason: 'the fix for XSA-999',
    by: 'alice',
    steerReason: 'canary looks fine',
    steerBy: 'bob',
  };
}

interface Field {
  /** Where a refusal names it: the plan's path, or the command and option. */
  where: string;
  /** Another field a refusal may name instead, for the same value (a wave name given twice). */
  orNamed?: string;
  max: number;
  valid?: fc.Arbitrary<string>;
  set(inputs: Inputs, value: string): void;
}

const plan = (i: Inputs) => i.plan as Required<PlanInput> & { hosts: { labels: Record<string, string>; ids: string[] }; verify: { call: string; expect: string } };
const L = PLAN_LIMITS;

const FIELDS: Field[] = [
  { where: 'name', max: 63, valid: shortName, set: (i, v) => void (i.plan.name = v) },
  { where: 'description', max: L.descriptionLength, set: (i, v) => void (i.plan.description = v) },
  { where: 'payloads[0].name', max: L.payloadNameBytes, set: (i, v) => void ((plan(i).payloads[0] as { name: string }).name = v) },
  // The name of the second payload is taken from its file name.
  { where: 'payloads[1].file', max: 60, set: (i, v) => void ((plan(i).payloads[1] as { file: string }).file = `${v}.livepatch`) },
  {
    where: 'hosts.ids[0]',
    max: L.hostIdLength,
    set: (i, v) => {
      plan(i).hosts.ids[0] = v;
      i.fleet[0]!.id = v;
    },
  },
  // A host the fleet does not have: the preflight records it among its unknown ids.
  { where: 'hosts.ids[1]', max: L.hostIdLength, set: (i, v) => void (plan(i).hosts.ids[1] = v) },
  {
    where: 'hosts.labels.region',
    max: L.labelLength,
    set: (i, v) => {
      plan(i).hosts.labels.region = v;
      for (const h of i.fleet) h.labels.region = v;
    },
  },
  {
    // A label's name: `where` is completed with the name itself (the path a refusal prints).
    where: 'hosts.labels.<name>',
    max: L.labelLength,
    set: (i, v) => {
      plan(i).hosts.labels = { [v]: 'eu-west' };
      for (const h of i.fleet) h.labels = { ...h.labels, [v]: 'eu-west' };
    },
  },
  {
    where: 'waves[0].name',
    orNamed: 'waves[1].name',
    max: 63,
    valid: shortName,
    set: (i, v) => {
      plan(i).waves[0]!.name = v;
      plan(i).gates[0]!.after = v;
    },
  },
  {
    // The label a wave groups by, and the value each host has: recorded in the work list.
    where: 'waves[0].groupBy',
    max: L.labelLength,
    set: (i, v) => {
      plan(i).waves[0]!.groupBy = v;
      // defineProperty: a label named __proto__ is an own key, as JSON and YAML give it.
      i.fleet.forEach((h, n) => Object.defineProperty(h.labels, v, { value: `${[...v].slice(0, 32).join('')}${n}`, enumerable: true, writable: true, configurable: true }));
    },
  },
  { where: 'gates[0].after', max: 64, valid: fc.constantFrom('canary', 'all'), set: (i, v) => void (plan(i).gates[0]!.after = v) },
  { where: 'verify.call', max: L.verifyCallLength, set: (i, v) => void (plan(i).verify.call = v) },
  { where: 'verify.expect', max: L.verifyExpectLength, set: (i, v) => void (plan(i).verify.expect = v) },
  { where: 'rollout start: --reason', max: 1000, set: (i, v) => void (i.reason = v) },
  { where: 'rollout start: --by', max: 200, set: (i, v) => void (i.by = v) },
  { where: 'rollout approve: --reason', max: 1000, set: (i, v) => void (i.steerReason = v) },
  { where: 'rollout approve: --by', max: 200, set: (i, v) => void (i.steerBy = v) },
];

// ---- the edges: what a rollout is given passes through these first ---------------------------

class Refused extends Error {
  constructor(readonly error: FleetpatchError) {
    super(error.message);
  }
}

/** The command line's checks of a start's or a decision's reason and actor (src/cli/args.ts). */
function commandLine(i: Inputs): void {
  try {
    // `--reason=<text>`: a reason may start with a dash.
    const start = parseCommandArgs(['plan.yaml', `--reason=${i.reason}`, `--by=${i.by}`], { reason: { type: 'string' }, by: { type: 'string' } }, 'rollout start');
    boundedText(start.values.reason, '--reason', 1000, 'rollout start');
    boundedText(start.values.by, '--by', 200, 'rollout start');
    const steer = parseCommandArgs(['r1', `--reason=${i.steerReason}`, `--by=${i.steerBy}`], { reason: { type: 'string' }, by: { type: 'string' } }, 'rollout approve');
    boundedText(steer.values.reason, '--reason', 1000, 'rollout approve');
    boundedText(steer.values.by, '--by', 200, 'rollout approve');
  } catch (e) {
    if (isFleetpatchError(e)) throw new Refused(e);
    throw e;
  }
}

let db: TestDatabase;
let store: EventStore;
let dir: string;

/** The plan's payload files, each with bytes of its own (a build-id names one payload with one name). */
async function writePayloadFiles(p: PlanInput): Promise<void> {
  for (const ref of p.payloads) {
    if (!('file' in ref)) continue;
    const file = path.resolve(dir, ref.file);
    // Only files inside the test's directory (a generated name may climb out with "..").
    if (!file.startsWith(`${dir}/`)) continue;
    await mkdir(path.dirname(file), { recursive: true });
    await writeFile(file, buildPayload({ name: `p${++runs}`, funcs: [{ target: 'xen_extra_version', returns: `r${runs}` }] }, { image: DEFAULT_IMAGE }));
  }
}

async function resolve(i: Inputs): Promise<ResolvedPlan> {
  let validated;
  try {
    validated = validatePlan(i.plan);
  } catch (e) {
    if (isFleetpatchError(e)) throw new Refused(e);
    throw e;
  }
  await writePayloadFiles(i.plan);
  try {
    return await resolvePlanPayloads(validated, dir, { pool: db.pool, actor: { kind: 'user', id: i.by }, store: true, trustedKeys: [] });
  } catch (e) {
    if (isFleetpatchError(e) && e.code !== 'INTERNAL' && e.code !== 'EVENT_INVALID') throw new Refused(e);
    throw e;
  }
}

// ---- the recording: what a rollout with these inputs writes, read back ------------------------

function envelope(actor: Actor, rolloutId: string, body: Record<string, unknown>): DomainEventInput {
  return { schemaVersion: 1, occurredAt: new Date().toISOString(), actor, correlation: { rolloutId }, ...body } as DomainEventInput;
}

/** The events of the rollout (workflows/rollout.ts) and of its hosts (activities/host-engine.ts) that carry its texts. */
function story(rolloutId: string, i: Inputs, r: ResolvedPlan, targets: { hostId: string; wave: number }[]): DomainEventInput[] {
  const requestedBy: Actor = { kind: 'user', id: i.by };
  const approver: Actor = { kind: 'user', id: i.steerBy };
  const wf: Actor = { kind: 'workflow', id: `rollout-${rolloutId}` };
  const payloads = r.payloads.map((p) => ({ name: p.name, buildId: p.buildId }));
  const verify = r.verify!;
  return [
    envelope(requestedBy, rolloutId, { type: 'RolloutStarted', rolloutId, planName: r.name, mode: r.mode, payloads: r.payloads, waves: r.waves.map((w) => ({ name: w.name })), reason: i.reason }),
    ...r.waves.map((w, waveIndex) => envelope(wf, rolloutId, { type: 'WaveStarted', rolloutId, wave: w.name, waveIndex, plannedHosts: 1 })),
    ...targets.flatMap(({ hostId, wave }) => [
      envelope(wf, rolloutId, { type: 'HostPatchStarted', hostId, rollout: rolloutId, formerStack: [], formerLoaded: [], formerResult: { call: verify.call, kind: 'string', value: verify.expect } }),
      ...payloads.map((payload) => envelope(wf, rolloutId, { type: 'PayloadUploaded', hostId, payload })),
      envelope(wf, rolloutId, { type: 'HealthChecked', hostId, outcome: 'healthy', check: { call: verify.call, expect: verify.expect }, observed: verify.expect }),
      envelope(wf, rolloutId, { type: 'HostPatchFinished', rolloutId, hostId, wave: r.waves[wave]!.name, outcome: 'patched', applied: payloads }),
    ]),
    ...r.approvalAfter.map((wave) => envelope(wf, rolloutId, { type: 'ApprovalRequested', rolloutId, wave })),
    ...r.approvalAfter.map((wave) => envelope(approver, rolloutId, { type: 'ApprovalGiven', rolloutId, wave, reason: i.steerReason })),
    envelope(approver, rolloutId, { type: 'RolloutPaused', rolloutId, reason: `paused by ${i.steerBy}: ${i.steerReason}` }),
    envelope(wf, rolloutId, { type: 'RolloutFinished', rolloutId, status: 'succeeded' }),
  ];
}

async function record(i: Inputs, r: ResolvedPlan): Promise<void> {
  const rolloutId = `storable-${runs}`;
  const live = new Map<string, LiveState>(i.fleet.map((h) => [h.id, { ok: true, state: { hostId: h.id, hypervisorBuildId: XEN, applied: [], loaded: [] } }]));
  const planned = preflight(r, i.fleet, live, rolloutId);

  // The work list, as the preflight activity writes it, read back.
  const client = await db.pool.connect();
  try {
    await client.query('BEGIN');
    expect(await insertPreflight(client, rolloutId, planned.summary, planned.targets)).toBe(true);
    await client.query('COMMIT');
  } finally {
    client.release();
  }
  expect(await selectPreflight(db.pool, rolloutId)).toEqual(JSON.parse(JSON.stringify(planned.summary)));
  const rows = await db.pool.query<{ host_id: string; grp: string | null }>('SELECT host_id, grp FROM rollout_targets WHERE rollout_id = $1 ORDER BY wave, step, position', [rolloutId]);
  expect(rows.rows).toEqual(planned.targets.map((t) => ({ host_id: t.hostId, grp: t.group })));

  // The events, one stream at a time, read back equal to what was given.
  const events = story(rolloutId, i, r, planned.targets);
  const byStream = new Map<string, DomainEventInput[]>();
  for (const e of events) {
    const stream = streamFor(parseEvent(e));
    byStream.set(stream, [...(byStream.get(stream) ?? []), e]);
  }
  await store.appendMany([...byStream].map(([streamId, es]) => ({ streamId, events: es.map((event, n) => ({ eventId: eventIdFromKey(`${streamId}/${rolloutId}/${n}`), event })) })));
  for (const [streamId, es] of byStream) {
    const mine = (await store.readStream(streamId)).filter((e) => e.event.correlation.rolloutId === rolloutId).map((e) => e.event);
    expect(mine).toEqual(es.map((e) => parseEvent(e)));
  }
  // And the payloads as the payload store recorded them.
  const names = await db.pool.query<{ name: string }>('SELECT name FROM payloads WHERE build_id = ANY($1) ORDER BY array_position($1, build_id)', [r.payloads.map((p) => p.buildId)]);
  expect(names.rows.map((n) => n.name)).toEqual(r.payloads.map((p) => p.name));
}

/** The one check of the property: accepted and recorded equal, or refused naming the field. */
async function accepted(field: Field, value: string): Promise<boolean> {
  const inputs = baseInputs();
  field.set(inputs, value);
  let resolved: ResolvedPlan;
  try {
    commandLine(inputs);
    resolved = await resolve(inputs);
  } catch (e) {
    if (!(e instanceof Refused)) throw e;
    const where = field.where === 'hosts.labels.<name>' ? formatPath(['hosts', 'labels', value]) : field.where;
    const named = [where, ...(field.orNamed ? [field.orNamed] : [])].some((w) => new RegExp(`(^|: |; )${escapeRegExp(w)}(: | )`).test(e.message));
    expect(named, `${e.message} names ${where}`).toBe(true);
    const problem = unstorable(value);
    if (problem) expect(e.message).toContain(problem);
    // What names the problem is storable itself, and one line.
    expect(unstorable(e.message)).toBeUndefined();
    return false;
  }
  expect(unstorable(value), 'text that cannot be stored was accepted').toBeUndefined();
  await record(inputs, resolved);
  return true;
}

beforeAll(async () => {
  db = await createTestDatabase();
  store = new EventStore(db.pool);
  dir = await tempDir('storable');
});
afterAll(() => db?.drop());

describe('every text a rollout is given is recorded and read back equal, or refused naming the field', () => {
  it.each(FIELDS.map((f) => [f.where, f] as const))('%s', { timeout: 300_000 }, async (_where, field) => {
    const outcomes = { accepted: 0, refused: 0 };
    await fc.assert(
      fc.asyncProperty(text(field.max, field.valid), async (value) => {
        outcomes[(await accepted(field, value)) ? 'accepted' : 'refused']++;
      }),
      { numRuns: 30 },
    );
    // Both sides of the edge were tried.
    expect(outcomes.accepted).toBeGreaterThan(0);
    expect(outcomes.refused).toBeGreaterThan(0);
  });

  it('the longest accepted and the unusual are recorded whole: emoji, combining marks, right-to-left, control characters', { timeout: 120_000 }, async () => {
    for (const [field, value] of [
      ['description', ofLength('🩹', L.descriptionLength)],
      ['payloads[0].name', '🩹'.repeat(31) + 'abc'],
      ['hosts.ids[0]', ofLength('e\u0301', L.hostIdLength)],
      ['hosts.labels.region', '\u202eevil\u202c'.padEnd(L.labelLength, 'ש')],
      ['waves[0].groupBy', '\u0001\u001f\u007f\t\n'],
      ['verify.expect', ofLength('中', L.verifyExpectLength)],
      ['rollout start: --reason', ofLength('👩‍👩‍👧', 1000)],
      ['rollout approve: --by', ofLength('م', 200)],
    ] as const) {
      expect(await accepted(FIELDS.find((f) => f.where === field)!, value), field).toBe(true);
    }
  });
});

describe('the store, the last line of defence', () => {
  it('refuses an event changed after it was validated to hold a NUL, naming its type and field, and records nothing', async () => {
    const event = parseEvent(envelope(OPERATOR, 'defence', { type: 'RolloutPaused', rolloutId: 'defence', reason: 'fine' }));
    // A bug elsewhere: the validated event is changed before it is appended.
    (event as { reason: string }).reason = 'bad\u0000reason';
    const e = await store.append('rollout-defence', [{ eventId: eventIdFromKey('defence/1'), event }]).catch((x: unknown) => x);
    expect(e).toMatchObject({ code: 'EVENT_INVALID', retryable: false, message: 'a RolloutPaused event cannot be stored: reason contains a NUL character (\\u0000) at position 3, which cannot be stored', details: { type: 'RolloutPaused', field: 'reason' } });
    expect(await store.streamVersion('rollout-defence')).toBe(0);
  });

  it('refuses an unstorable event it is handed unvalidated through the catalogue, naming its type and field', async () => {
    const e = await store.append('rollout-defence', [{ eventId: eventIdFromKey('defence/2'), event: envelope({ kind: 'user', id: 'o\uD800ps' }, 'defence', { type: 'RolloutAborted', rolloutId: 'defence', reason: 'why' }) }]).catch((x: unknown) => x);
    expect(e).toMatchObject({ code: 'EVENT_INVALID', retryable: false });
    expect((e as Error).message).toBe('event RolloutAborted does not match the catalogue: actor.id: contains a lone UTF-16 surrogate (\\ud800) at position 1, which is not text and cannot be stored');
    expect(await store.streamVersion('rollout-defence')).toBe(0);
  });
});
