import { describe, expect, it } from 'vitest';
import { compareStacks } from '../../src/events/audit/replay.ts';
import { BYE, HELLO, NOP, REPLACE, XEN, XEN_OTHER } from './support/events.ts';

const snap = (applied: (typeof HELLO)[], loaded: [typeof HELLO, 'CHECKED' | 'APPLIED'][], hypervisorBuildId?: string) => ({
  ...(hypervisorBuildId ? { hypervisorBuildId } : {}),
  appliedStack: applied,
  loaded: loaded.map(([p, state]) => ({ ...p, state })),
});

describe('compareStacks', () => {
  it('finds no difference between equal states', () => {
    const s = snap([HELLO, BYE], [[HELLO, 'APPLIED'], [BYE, 'APPLIED'], [NOP, 'CHECKED']], XEN);
    expect(compareStacks(s, structuredClone(s))).toEqual([]);
    // An unknown hypervisor build-id on one side is not a difference.
    expect(compareStacks(snap([], []), snap([], [], XEN))).toEqual([]);
  });

  it('reports every stack position, loaded payload and hypervisor that differ', () => {
    const replayed = snap([HELLO, BYE], [[HELLO, 'APPLIED'], [BYE, 'APPLIED'], [NOP, 'CHECKED']], XEN);
    const live = snap([REPLACE], [[HELLO, 'CHECKED'], [BYE, 'CHECKED'], [REPLACE, 'APPLIED']], XEN_OTHER);
    const d = compareStacks(replayed, live);
    expect(d.map((x) => [x.where, x.index ?? null, x.replayed, x.live])).toEqual([
      ['hypervisor', null, XEN, XEN_OTHER],
      ['applied', 0, `${HELLO.name} (${HELLO.buildId})`, `${REPLACE.name} (${REPLACE.buildId})`],
      ['applied', 1, `${BYE.name} (${BYE.buildId})`, null],
      ['loaded', null, `${HELLO.name} (${HELLO.buildId}) APPLIED`, `${HELLO.name} (${HELLO.buildId}) CHECKED`],
      ['loaded', null, `${BYE.name} (${BYE.buildId}) APPLIED`, `${BYE.name} (${BYE.buildId}) CHECKED`],
      ['loaded', null, `${NOP.name} (${NOP.buildId}) CHECKED`, null],
      ['loaded', null, null, `${REPLACE.name} (${REPLACE.buildId}) APPLIED`],
    ]);
    expect(d[2]!.description).toMatch(/position 1 .*the host has nothing/);
    expect(d[5]!.description).toMatch(/the host does not have it/);
  });
});
