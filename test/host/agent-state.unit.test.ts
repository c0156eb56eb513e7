/**
 * The agent's pure parts: learned facts reconciled with xen-livepatch's list (and Xen's debug
 * dump), LIST pages with Xen's bounds, the dependency check from what the agent knows, the
 * upload gate's refusals in order, the journal's line format, and the fleet's certificate names.
 */
import { describe, expect, it } from 'vitest';
import { FleetpatchError, XenError } from '../../src/errors.ts';
import { SIGNATURE_HEADER } from '../../src/agent/contract.ts';
import {
  afterAction, dependencyCheckFor, dependencyMismatchReason, emptyState, forBoot, listPage, listVersion, parseDump, pendingOf, reconcile, xenDependsCheck,
  type AgentState, type LearnedPayload,
} from '../../src/host/agent-state.ts';
import { JournalEntrySchema, boundedOutput, describeEntry, journalLine, JOURNAL_OUTPUT_BYTES } from '../../src/host/host-journal.ts';
import { decodeSignatureHeader, gateUpload, readTrustedKeys } from '../../src/host/upload-gate.ts';
import type { ListedPayload } from '../../src/host/xen-livepatch-output.ts';
import { DEFAULT_IMAGE, buildPayload, generateSigningKey, parsePayload, publicKeyToFile, signPayload, type PublicKey } from '../../src/payload/index.ts';
import { hostUri, peerRole, workerUri } from '../../src/pki/names.ts';

const HV = 'aa'.repeat(20);
const row = (name: string, state: 'CHECKED' | 'APPLIED', rc = 0, metadata = ''): ListedPayload => ({
  name, state, rc, errno: rc ? -rc : null, errnoName: null, strerror: null, reason: rc ? 'failed' : null, metadata,
});
const learned = (name: string, buildId: string, depends: string, extra: Partial<LearnedPayload> = {}): LearnedPayload => ({
  name, buildId, depends, xenDepends: HV, metadata: ['K=v'], functions: ['xen_extra_version'], safeToReapply: false, sha256: '0'.repeat(64), size: 100,
  signedBy: 'k', uploadedAt: '2026-01-01T00:00:00.000Z', reverted: false, lastCmd: null, ...extra,
});
const state = (payloads: LearnedPayload[], stack: string[]): AgentState => ({ ...emptyState('boot-1'), payloads, stack });

describe('reconcile: what the agent learned, with what the list shows', () => {
  it('gives learned payloads their facts and the stack in the order they were applied', () => {
    const s = state([learned('a', 'a1'.repeat(20), HV), learned('b', 'b1'.repeat(20), 'a1'.repeat(20))], ['a', 'b']);
    const r = reconcile(s, [row('a', 'APPLIED'), row('b', 'APPLIED')]);
    expect(r.appliedStack).toEqual([{ name: 'a', buildId: 'a1'.repeat(20) }, { name: 'b', buildId: 'b1'.repeat(20) }]);
    expect(r.entries[1]).toMatchObject({ name: 'b', depends: 'a1'.repeat(20), facts: 'uploaded', metadata: ['K=v'] });
  });

  it('forgets what the list no longer shows, and drops from the stack what is no longer applied', () => {
    const s = state([learned('a', 'a1'.repeat(20), HV), learned('b', 'b1'.repeat(20), 'a1'.repeat(20))], ['a', 'b']);
    const r = reconcile(s, [row('a', 'APPLIED')]);
    expect(r.state.payloads.map((p) => p.name)).toEqual(['a']);
    expect(r.state.stack).toEqual(['a']);
    expect(reconcile(s, [row('a', 'CHECKED'), row('b', 'CHECKED')]).appliedStack).toEqual([]);
  });

  it('reports a payload uploaded by hand with unknown build-ids, or the dump\'s', () => {
    const r = reconcile(state([], []), [row('vendor', 'APPLIED', 0, 'a=1;b=2')]);
    expect(r.entries[0]).toMatchObject({ name: 'vendor', facts: 'unknown', buildId: '', depends: '', metadata: ['a=1', 'b=2'], safeToReapply: false });
    expect(r.appliedStack).toEqual([{ name: 'vendor', buildId: '' }]);
    const d = reconcile(state([], []), [row('vendor', 'APPLIED')], new Map([['vendor', { buildId: 'cc'.repeat(20), depends: HV, xenDepends: HV, functions: ['f'] }]]));
    expect(d.entries[0]).toMatchObject({ facts: 'dump', buildId: 'cc'.repeat(20), depends: HV, functions: ['f'] });
  });

  it('puts a payload applied by hand on top, and trusts the dump over a learned name with other bytes', () => {
    const s = state([learned('a', 'a1'.repeat(20), HV)], ['a']);
    expect(reconcile(s, [row('x', 'APPLIED'), row('a', 'APPLIED')]).appliedStack.map((e) => e.name)).toEqual(['a', 'x']);
    const swapped = reconcile(s, [row('a', 'APPLIED')], new Map([['a', { buildId: 'dd'.repeat(20), depends: HV, xenDepends: null, functions: [] }]]));
    expect(swapped.entries[0]).toMatchObject({ facts: 'dump', buildId: 'dd'.repeat(20) });
    expect(swapped.state.payloads).toEqual([]);
  });

  it('drops everything learned on a new boot, and counts the boot', () => {
    const s = state([learned('a', 'a1'.repeat(20), HV)], ['a']);
    expect(forBoot(s, 'boot-1')).toBe(s);
    expect(forBoot(s, 'boot-2')).toEqual({ version: 1, bootId: 'boot-2', boots: 2, payloads: [], stack: [] });
  });

  it('follows the actions the tool reported done', () => {
    const s = state([learned('a', 'a1'.repeat(20), HV), learned('b', 'b1'.repeat(20), 'a1'.repeat(20)), learned('r', 'e1'.repeat(20), HV)], ['a', 'b']);
    const replaced = afterAction(s, 'replace', 'r');
    expect(replaced.stack).toEqual(['r']);
    expect(replaced.payloads.filter((p) => p.reverted).map((p) => p.name)).toEqual(['a', 'b']);
    expect(afterAction(s, 'revert', 'b').stack).toEqual(['a']);
    expect(afterAction(s, 'unload', 'r').payloads.map((p) => p.name)).toEqual(['a', 'b']);
  });
});

describe('LIST pages and the list version', () => {
  it('pages as Xen does: E2BIG beyond 1024, EINVAL past the end', () => {
    const all = ['a', 'b', 'c'];
    expect(listPage(all, 1, 1)).toEqual({ entries: ['b'], remaining: 1, total: 3 });
    expect(listPage([], 0, 1024)).toEqual({ entries: [], remaining: 0, total: 0 });
    expect(() => listPage(all, 0, 1025)).toThrow(expect.objectContaining({ code: 'E2BIG' }));
    expect(() => listPage(all, 3, 1)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
  });

  it('moves the version with the set of names, and only then', () => {
    expect(listVersion(['a', 'b'])).toBe(listVersion(['a', 'b']));
    expect(listVersion(['a', 'b'])).not.toBe(listVersion(['a']));
    expect(listVersion([])).toBeGreaterThan(0);
  });

  it('reports the pending action: its own, else a row at rc -EAGAIN whose last action it knows', () => {
    const s = state([learned('a', 'a1'.repeat(20), HV, { lastCmd: 'apply' })], []);
    expect(pendingOf({ name: 'a', cmd: 'revert' }, [], s)).toEqual({ name: 'a', cmd: 'revert' });
    expect(pendingOf(null, [row('a', 'CHECKED', -11)], s)).toEqual({ name: 'a', cmd: 'apply' });
    expect(pendingOf(null, [row('x', 'CHECKED', -11)], s)).toBeNull();
  });
});

describe('the dependency check from what the agent knows', () => {
  const top = { name: 'hello', buildId: 'a1'.repeat(20) };
  const entry = (depends: string, facts: 'uploaded' | 'unknown' = 'uploaded') => ({
    name: 'bye', state: 'CHECKED' as const, rc: 0, reason: null, buildId: 'b1'.repeat(20), depends, xenDepends: HV, metadata: [], reverted: false, safeToReapply: true, functions: [], facts,
  });

  it('checks APPLY against the top of the stack, or the hypervisor, and REPLACE against the hypervisor', () => {
    expect(dependencyCheckFor(entry('a1'.repeat(20)), 'apply', [top], HV, false)).toMatchObject({ against: 'payload', againstName: 'hello', outcome: 'satisfied' });
    expect(dependencyCheckFor(entry('a1'.repeat(20)), 'apply', [], HV, false)).toMatchObject({ against: 'hypervisor', outcome: 'mismatch', found: HV });
    expect(dependencyCheckFor(entry('a1'.repeat(20)), 'apply', [], HV, true)).toMatchObject({ outcome: 'skipped' });
    expect(dependencyCheckFor(entry(HV), 'replace', [top], HV, false)).toMatchObject({ against: 'hypervisor', outcome: 'satisfied', operation: 'replace' });
  });

  it('tells nothing about what it cannot know', () => {
    expect(dependencyCheckFor(entry('', 'unknown'), 'apply', [top], HV, false)).toBeNull();
    expect(dependencyCheckFor(entry('a1'.repeat(20)), 'apply', [{ name: 'vendor', buildId: '' }], HV, false)).toBeNull();
  });

  it('says the check in Xen\'s console words, and checks xen_depends at upload', () => {
    const c = dependencyCheckFor(entry('cc'.repeat(20)), 'apply', [top], HV, false)!;
    expect(dependencyMismatchReason(c)).toBe(`bye: check against hello build-id failed: it depends on build-id ${'cc'.repeat(20)}, but the top of the stack is hello (${'a1'.repeat(20)})`);
    expect(xenDependsCheck({ name: 'p', buildId: 'b1'.repeat(20), xenDepends: 'ee'.repeat(20) }, HV)).toMatchObject({ kind: 'xen_depends', outcome: 'mismatch' });
    expect(xenDependsCheck({ name: 'p', buildId: 'b1'.repeat(20), xenDepends: null }, HV)).toBeNull();
  });
});

describe("Xen's debug dump", () => {
  it('reads the last dump of the console, with its prefixes and everything else around it', () => {
    const console = [
      "(XEN) 'x' pressed - Dumping all livepatch patches",
      '(XEN)  name=old state=CHECKED(1) ffff82d040400000 (.data=…) using 3 pages.',
      '(XEN) build-id=' + '11'.repeat(20),
      '(XEN) [   12.345] some other line',
      "(XEN) [   99.000] 'x' pressed - Dumping all livepatch patches",
      '(XEN) [   99.001] build-id: ' + HV,
      '(XEN) [   99.002]  name=xen hello state=APPLIED(2) ffff82d040400000 (.data=ffff82d040401000, .rodata=ffff82d040402000) using 3 pages.',
      '(XEN) [   99.003] livepatch: module metadata:',
      '(XEN) [   99.004]     xen_extra_version patch ffff82d040200020(8) with ffff82d040400000 (8)',
      '(XEN) [   99.005] build-id=' + '22'.repeat(20),
      '(XEN) [   99.006] depend-on=' + HV,
      '(XEN) [   99.007] depend-on-xen=' + HV,
    ].join('\n');
    const d = parseDump(console);
    expect([...d.keys()]).toEqual(['xen hello']);
    expect(d.get('xen hello')).toEqual({ buildId: '22'.repeat(20), depends: HV, xenDepends: HV, functions: ['xen_extra_version'] });
    expect(parseDump('nothing of the sort')).toEqual(new Map());
  });
});

describe('the upload gate: every refusal before any tool, in order', () => {
  const key = generateSigningKey();
  const other = generateSigningKey();
  const trusted: PublicKey[] = [{ keyId: key.keyId, publicKey: key.publicKey }];
  const bytes = buildPayload({ name: 'p', funcs: [{ target: 'xen_extra_version', returns: 'x' }], modinfo: ['A=1'] }, { image: DEFAULT_IMAGE });
  const header = (sig: object) => Buffer.from(JSON.stringify(sig)).toString('base64');
  const gate = (over: Partial<Parameters<typeof gateUpload>[0]>) =>
    gateUpload({ name: 'p', bytes, size: bytes.length, signature: header(signPayload(bytes, key)), trusted, now: new Date('2026-01-01T00:00:00Z'), ...over });
  const code = (f: () => unknown) => {
    try {
      f();
    } catch (e) {
      expect(e).toBeInstanceOf(FleetpatchError);
      return (e as FleetpatchError).code;
    }
    return 'passed';
  };

  it('learns the facts of a signed payload', () => {
    const p = gate({});
    const model = parsePayload(bytes);
    expect(p).toMatchObject({ name: 'p', buildId: model.buildIdHex, depends: model.dependsHex, xenDepends: model.xenDependsHex, metadata: ['A=1'], functions: ['xen_extra_version'], signedBy: key.keyId });
  });

  it('refuses an empty or too large payload (Xen: EINVAL), a name the list could not give back, before the signature', () => {
    expect(code(() => gate({ size: 0, bytes: new Uint8Array(), signature: undefined }))).toBe('EINVAL');
    expect(code(() => gate({ size: 2 * 1024 * 1024 + 1, signature: undefined }))).toBe('EINVAL');
    expect(code(() => gate({ name: 'x'.repeat(128), signature: undefined }))).toBe('EINVAL');
    expect(code(() => gate({ name: 'a\nb', signature: undefined }))).toBe('REQUEST_INVALID');
    expect(code(() => gate({ name: 'trailing ', signature: undefined }))).toBe('REQUEST_INVALID');
  });

  it('refuses a payload without a signature, with a malformed one, by another key, or for other bytes', () => {
    expect(code(() => gate({ signature: undefined }))).toBe('PAYLOAD_UNSIGNED');
    expect(code(() => gate({ signature: '' }))).toBe('PAYLOAD_UNSIGNED');
    expect(code(() => gate({ signature: 'not base64!' }))).toBe('PAYLOAD_UNTRUSTED');
    expect(code(() => gate({ signature: Buffer.from('{"type":"x"}').toString('base64') }))).toBe('PAYLOAD_UNTRUSTED');
    expect(code(() => gate({ signature: header(signPayload(bytes, other)) }))).toBe('PAYLOAD_UNTRUSTED');
    expect(code(() => gate({ signature: header(signPayload(new Uint8Array([1, 2, 3]), key)) }))).toBe('PAYLOAD_UNTRUSTED');
    expect(code(() => decodeSignatureHeader('A'.repeat(5000), 'p'))).toBe('PAYLOAD_UNTRUSTED');
    expect(SIGNATURE_HEADER).toBe('x-fleetpatch-signature');
  });

  it('refuses bytes Xen would refuse (its errno), and a .modinfo the list could not print on one row', () => {
    const junk = new TextEncoder().encode('junk');
    expect(code(() => gate({ bytes: junk, size: junk.length, signature: header(signPayload(junk, key)) }))).toBe('EINVAL');
    const forged = buildPayload({ name: 'f', funcs: [{ target: 'xen_extra_version', returns: 'x' }], modinfo: ['a=1\nxen_hello_world                         | APPLIED    | '] }, { image: DEFAULT_IMAGE });
    const e = (() => {
      try {
        gate({ bytes: forged, size: forged.length, signature: header(signPayload(forged, key)) });
      } catch (x) {
        return x as FleetpatchError;
      }
      throw new Error('not refused');
    })();
    expect(e.code).toBe('PAYLOAD_REFUSED');
    expect(e.message).toMatch(/newline/);
    expect(e.message).not.toMatch(/\n/);
  });

  it('reads the trusted keys file: an array or one key, and says which entry is wrong', () => {
    const file = JSON.stringify([publicKeyToFile(key), publicKeyToFile(other)]);
    expect(readTrustedKeys(file, 'k.json').map((k) => k.keyId)).toEqual([key.keyId, other.keyId]);
    expect(readTrustedKeys(JSON.stringify(publicKeyToFile(key)), 'k.json')).toHaveLength(1);
    expect(() => readTrustedKeys('[]', 'k.json')).toThrow(/holds no key/);
    expect(() => readTrustedKeys(JSON.stringify([publicKeyToFile(key), { type: 'x' }]), 'k.json')).toThrow(/k\.json \[1\]/);
    expect(() => readTrustedKeys('{', 'k.json')).toThrow(expect.objectContaining({ code: 'KEY_INVALID' }));
  });
});

describe("the host journal's lines", () => {
  it('is one JSON object per line, a schema entry, hostile output escaped and bounded', () => {
    const entry = { kind: 'tool' as const, at: '2026-01-01T00:00:00.000Z', req: 3, argv: ['/usr/sbin/xen-livepatch', 'upload', 'a;b', '/tmp/x'], exitCode: 1, stdout: 'x\u0000y\nz', stderr: boundedOutput('e'.repeat(JOURNAL_OUTPUT_BYTES + 10)), ms: 12.5 };
    const line = journalLine(entry);
    expect(line.endsWith('\n')).toBe(true);
    expect(line.slice(0, -1)).not.toMatch(/\n/);
    expect(JournalEntrySchema.parse(JSON.parse(line))).toEqual(entry);
    expect(entry.stderr).toMatch(/… \(10 more bytes\)$/);
    expect(describeEntry({ line: 1, ...entry })).toMatch(/#3 {3}\/usr\/sbin\/xen-livepatch upload a;b \/tmp\/x -> exit 1/);
    expect(describeEntry({ line: 9, kind: 'unreadable', text: '{"torn' })).toMatch(/line 9: not a journal entry/);
  });
});

describe("the fleet's certificate names", () => {
  it('names hosts and workers by URI, and reads exactly one role from a certificate', () => {
    expect(hostUri('host-0001')).toBe('fleetpatch://host/host-0001');
    expect(workerUri('w1')).toBe('fleetpatch://worker/w1');
    expect(peerRole({ subjectAltName: 'URI:fleetpatch://host/h1, DNS:h1.example, IP Address:10.0.0.1' })).toEqual({ kind: 'host', id: 'h1' });
    expect(peerRole({ subjectAltName: 'URI:fleetpatch://worker/w1' })).toEqual({ kind: 'worker', name: 'w1' });
    expect(peerRole({ subjectAltName: 'URI:fleetpatch://worker/w1, URI:fleetpatch://host/h1' })).toBeNull();
    expect(peerRole({ subjectAltName: 'URI:fleetpatch://worker/' })).toBeNull();
    expect(peerRole({ subjectAltName: 'DNS:fleetpatch://worker/w1' })).toBeNull();
    // A quoted entry is one entry: a crafted name cannot pass for a second identity.
    expect(peerRole({ subjectAltName: 'URI:"fleetpatch://worker/a, URI:fleetpatch://host/b"' })).toBeNull();
    expect(peerRole({ subjectAltName: `URI:${workerUri('a b')}` })).toEqual({ kind: 'worker', name: 'a b' });
    expect(peerRole({})).toBeNull();
    expect(new XenError('EINVAL', 'x').code).toBe('EINVAL');
  });
});

describe('the contract refuses text a hostile host cannot have stored', () => {
  it('is HOST_PROTOCOL naming the field, for a NUL, a lone surrogate, in any string of an answer', async () => {
    const { parseAnswer, WireStatusSchema, WireListSchema, WireErrorSchema } = await import('../../src/agent/contract.ts');
    const status = { name: 'x\u0000y', state: 'CHECKED', rc: 0, reason: null };
    const e = (() => {
      try {
        parseAnswer(WireStatusSchema, status, 'host-a', 'GET /x');
      } catch (x) {
        return x as FleetpatchError;
      }
      throw new Error('accepted');
    })();
    expect(e.code).toBe('HOST_PROTOCOL');
    expect(e.message).toMatch(/name: contains a NUL character/);
    const list = { host: 'h', hypervisor: { image: 'xen', buildId: HV }, version: 1, total: 1, remaining: 0, idx: 0, pending: null, boots: 1, boot: { id: 'b', at: 'now' }, appliedStack: [],
      entries: [{ name: 'p', state: 'APPLIED', rc: 0, reason: null, buildId: HV, depends: HV, xenDepends: null, metadata: ['ok', 'bad\ud800'], reverted: false, safeToReapply: true, functions: [] }] };
    expect(() => parseAnswer(WireListSchema, list, 'h', 'GET /l')).toThrow(/entries\.0\.metadata\.1: contains a lone UTF-16 surrogate/);
    expect(WireErrorSchema.safeParse({ error: 'EINVAL', message: 'm', details: { deep: ['\u0000'] } }).success).toBe(false);
    expect(WireErrorSchema.safeParse({ error: 'EINVAL', message: 'm', details: { deep: ['fine'] } }).success).toBe(true);
  });
});

describe("xl's other answers the agent reads", async () => {
  const { parseXlInfoValue, parseXlDebugKeys, parseXlDmesg } = await import('../../src/host/xl-info-output.ts');
  const exit = (exitCode: number, stdout: string, stderr = '') => ({ exitCode, stdout, stderr });
  it('reads one value of xl info, and refuses what xl does not print for one field', () => {
    expect(parseXlInfoValue(exit(0, 'Hello World\n'), 'xen_extra')).toBe('Hello World');
    expect(parseXlInfoValue(exit(0, '\n'), 'xen_extra')).toBe('');
    expect(() => parseXlInfoValue(exit(0, 'a\nb\n'), 'xen_version')).toThrow(expect.objectContaining({ code: 'HOST_TOOL_OUTPUT' }));
    expect(() => parseXlInfoValue(exit(0, ''), 'xen_extra')).toThrow(expect.objectContaining({ code: 'HOST_TOOL_OUTPUT' }));
    expect(() => parseXlInfoValue(exit(0, 'cut'), 'xen_extra')).toThrow(expect.objectContaining({ code: 'HOST_TOOL_OUTPUT' }));
    expect(() => parseXlInfoValue(exit(1, '', 'cannot init xl context\n'), 'xen_extra')).toThrow(expect.objectContaining({ code: 'HOST_TOOL_FAILED' }));
  });
  it('takes xl debug-keys silent, and xl dmesg as its lines', () => {
    expect(() => parseXlDebugKeys(exit(0, ''))).not.toThrow();
    expect(() => parseXlDebugKeys(exit(0, 'surprise\n'))).toThrow(expect.objectContaining({ code: 'HOST_TOOL_OUTPUT' }));
    expect(parseXlDmesg(exit(0, '(XEN) a\n(XEN) b\n'))).toEqual(['(XEN) a', '(XEN) b']);
    expect(() => parseXlDmesg(exit(0, 'bad\u0000\n'))).toThrow(expect.objectContaining({ code: 'HOST_TOOL_OUTPUT' }));
  });
});
