/**
 * Every text field of every schema events are built from (the catalogue, src/domain) refuses what
 * PostgreSQL cannot store, found by walking the schemas themselves: a field added later as a plain
 * z.string() fails here. And the store's append, the last line of defence, refuses an unstorable
 * event naming its type and field, even one changed after it was validated.
 */
import { z } from 'zod';
import { describe, expect, it } from 'vitest';
import { ActorSchema } from '../../src/domain/actor.ts';
import { DecisionSchema } from '../../src/domain/decision.ts';
import { DependencyCheckSchema } from '../../src/domain/dependency-check.ts';
import { FleetHostSchema } from '../../src/domain/fleet-host.ts';
import { LoadedPayloadSchema, PayloadMetaSchema, PayloadRefSchema } from '../../src/domain/payload-ref.ts';
import { RollbackCountsSchema, RollbackProblemSchema } from '../../src/domain/rollback-counts.ts';
import { EventSchema, parseEvent } from '../../src/events/catalogue.ts';
import { isFleetpatchError } from '../../src/errors.ts';
import { PlanSchema } from '../../src/rollout/plan.ts';
import { HELLO, rolloutStory } from '../events/support/events.ts';

type Node = z.core.$ZodType;

/** Every string schema reachable from `schema`, with where it sits. Kinds it does not know fail the test, so none is skipped unseen. */
function textFields(schema: Node, path: string, out: { path: string; schema: Node }[] = []): { path: string; schema: Node }[] {
  const def = schema._zod.def as unknown as Record<string, unknown> & { type: string };
  const walk = (s: unknown, p: string) => textFields(s as Node, p, out);
  switch (def.type) {
    case 'string':
      out.push({ path, schema });
      break;
    case 'object':
      for (const [k, v] of Object.entries(def.shape as Record<string, unknown>)) walk(v, path ? `${path}.${k}` : k);
      break;
    case 'array':
      walk(def.element, `${path}[]`);
      break;
    case 'optional':
    case 'nullable':
    case 'default':
    case 'prefault':
    case 'readonly':
    case 'catch':
    case 'nonoptional':
      walk(def.innerType, path);
      break;
    case 'union':
      (def.options as Node[]).forEach((o) => {
        const literal = (o._zod.def as { shape?: { type?: { _zod: { def: { values?: unknown[] } } } } }).shape?.type?._zod.def.values?.[0];
        walk(o, typeof literal === 'string' ? literal : path);
      });
      break;
    case 'record':
      walk(def.keyType, `${path}{key}`);
      walk(def.valueType, `${path}{value}`);
      break;
    case 'pipe':
      walk(def.in, path);
      walk(def.out, path);
      break;
    case 'enum':
    case 'literal':
    case 'number':
    case 'boolean':
    case 'transform':
    case 'null':
      break;
    default:
      throw new Error(`${path}: a ${def.type} schema; teach textFields to look inside it`);
  }
  return out;
}

const SCHEMAS: [string, Node][] = [
  ['EventSchema', EventSchema],
  ['ActorSchema', ActorSchema],
  ['DecisionSchema', DecisionSchema],
  ['DependencyCheckSchema', DependencyCheckSchema],
  ['FleetHostSchema', FleetHostSchema],
  ['PayloadRefSchema', PayloadRefSchema],
  ['LoadedPayloadSchema', LoadedPayloadSchema],
  ['PayloadMetaSchema', PayloadMetaSchema],
  ['RollbackCountsSchema', RollbackCountsSchema],
  ['RollbackProblemSchema', RollbackProblemSchema],
  // notify.webhook is a URL (another engineer's field); validatePlan holds it to the rule too (test/rollout/plan-text.unit.test.ts).
  ['PlanSchema', PlanSchema.omit({ notify: true })],
];

describe('text fields of the schemas events are built from', () => {
  const fields = SCHEMAS.flatMap(([name, schema]) => textFields(schema, '').map((f) => ({ ...f, path: `${name} ${f.path}` })));

  it('are found (the walk reaches into every event type)', () => {
    expect(fields.length).toBeGreaterThan(100);
    expect(fields.map((f) => f.path)).toEqual(expect.arrayContaining(['EventSchema RolloutPaused.reason', 'EventSchema HealthChecked.check.expect', 'FleetHostSchema labels{key}', 'PlanSchema hosts.ids[]']));
  });

  it.each(fields.map((f) => [f.path, f.schema] as const))('%s refuses a NUL and a lone surrogate', (_path, schema) => {
    for (const [text, why] of [['x\u0000', /NUL character/], ['x\uD800', /lone UTF-16 surrogate/]] as const) {
      const r = z.safeParse(schema, text);
      expect(r.success).toBe(false);
      // A format (an ISO instant) refuses such text as not of its format; every other text says why.
      if (!(schema._zod.def as { format?: string }).format) expect(r.error!.issues.map((i) => i.message)).toEqual([expect.stringMatching(why)]);
    }
  });
});

describe('an unstorable event', () => {
  const [started] = rolloutStory('r1');

  it('is refused by the catalogue, naming its type and field, in a message that is itself storable', () => {
    let error: unknown;
    try {
      parseEvent({ ...started, reason: 'bad\u0000reason', actor: { kind: 'user', id: 'o\uD800ps' } });
    } catch (e) {
      error = e;
    }
    expect(isFleetpatchError(error) && error.code).toBe('EVENT_INVALID');
    const e = error as Error & { retryable: boolean };
    expect(e.retryable).toBe(false);
    expect(e.message).toBe(
      'event RolloutStarted does not match the catalogue: actor.id: contains a lone UTF-16 surrogate (\\ud800) at position 1, which is not text and cannot be stored; reason: contains a NUL character (\\u0000) at position 3, which cannot be stored',
    );
  });

  it('accepts emoji, combining marks, right-to-left text and other control characters', () => {
    const text = 'שלום 🩹 e\u0301 \u202eevil\u202c \u0001\t\n\u007f';
    expect(parseEvent({ ...started, reason: text, payloads: [{ ...HELLO, depends: HELLO.buildId, xenDepends: null }] })).toMatchObject({ reason: text });
  });
});
