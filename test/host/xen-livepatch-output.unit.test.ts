/**
 * The reader of xen-livepatch's output, on what the tool of Xen 4.17, 4.18, 4.19 and 4.20 really
 * prints (fixtures/xen-livepatch-transcripts.ts: captured byte for byte from each release's
 * xen-livepatch.c), then on output that is cut, garbled, not UTF-8 or contradicts its exit code.
 */
import { describe, expect, it } from 'vitest';
import { FleetpatchError, XenError } from '../../src/errors.ts';
import {
  ACTION_VERB,
  LIST_HEADER,
  assertReadableName,
  parseAction,
  parseList,
  parseUpload,
  refusalError,
  toolExitCode,
  type ActionOutcome,
  type ListOutcome,
  type ListedPayload,
  type ToolRefusal,
  type UploadOutcome,
} from '../../src/host/xen-livepatch-output.ts';
import type { ActionCmd } from '../../src/agent/contract.ts';
import { COMMON, XEN_VERSIONS, transcriptsOf, type Transcript, type XenVersion } from './fixtures/xen-livepatch-transcripts.ts';

type Outcome = ListOutcome | UploadOutcome | ActionOutcome;
const ACTIONS: readonly string[] = ['apply', 'revert', 'unload', 'replace'];

/** Reads a transcript with the parser for the command it ran (help and unknown commands as if `list` had been asked for). */
function read(t: Transcript, as?: { cmd?: ActionCmd; name?: string; nodeps?: boolean }): Outcome {
  const argv = t.argv[0] === '--force' ? t.argv.slice(1) : t.argv;
  const [cmd, name, third] = argv;
  if (as?.cmd || (cmd && ACTIONS.includes(cmd))) {
    return parseAction(t, { cmd: as?.cmd ?? (cmd as ActionCmd), name: as?.name ?? name ?? 'xen_hello_world', nodeps: as?.nodeps ?? third === '--nodeps' });
  }
  if (cmd === 'upload') return parseUpload(t, { name: name ?? 'xen_hello_world', file: third ?? '/tmp/fleetpatch-upload/xen_hello_world.livepatch' });
  return parseList(t);
}

/** The error a read throws; every one is a single line that a person reads. */
function failure(f: () => unknown): FleetpatchError {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(FleetpatchError);
    const err = e as FleetpatchError;
    expect(err.message).not.toMatch(/\n/);
    return err;
  }
  throw new Error('expected the read to throw');
}

function refused(o: Outcome): ToolRefusal {
  expect(o.ok).toBe(false);
  return o as ToolRefusal;
}

function listed(o: Outcome): ListedPayload[] {
  expect(o.ok).toBe(true);
  return (o as { payloads: ListedPayload[] }).payloads;
}

type Expectation = (t: Transcript, v: XenVersion) => void;
const failsWith = (code: string, message: RegExp): Expectation => (t) => {
  const e = failure(() => read(t));
  expect(e.code).toBe(code);
  expect(e.message).toMatch(message);
};
const refusal =
  (fields: Partial<ToolRefusal>, reason?: RegExp): Expectation =>
  (t) => {
    const r = refused(read(t));
    expect(r).toMatchObject(fields);
    if (reason) expect(r.reason).toMatch(reason);
    expect(r.printed.length).toBeGreaterThan(0);
  };
const done =
  (what: 'completed' | 'no-action-needed'): Expectation =>
  (t) => {
    expect(read(t)).toEqual({ ok: true, done: what, diagnostics: [] });
  };
const modern = (v: XenVersion) => v === '4.19' || v === '4.20';

/** What each scenario must read as, in every version. */
const EXPECT: Record<string, Expectation> = {
  help: failsWith('HOST_TOOL_FAILED', /printed its usage instead/),
  'no-arguments': failsWith('HOST_TOOL_FAILED', /printed its usage instead/),
  'unknown-command': failsWith('HOST_TOOL_FAILED', /no such command: "Unrecognised command 'frobnicate'/),
  // Until 4.18 a command name is matched as a prefix: `li` runs list.
  'prefix-li': (t, v) => {
    if (modern(v)) expect(failure(() => read(t)).message).toMatch(/no such command/);
    else expect(listed(read(t))).toEqual([]);
  },
  'force-alone': (t, v) => expect(failure(() => read(t)).message).toMatch(modern(v) ? /usage/ : /no such command: "Unrecognised command '--force'/),
  'force-upload': (t, v) => {
    if (modern(v)) expect(read(t)).toEqual({ ok: true, diagnostics: [] });
    else expect(failure(() => read(t)).code).toBe('HOST_TOOL_FAILED');
  },
  'list-empty': (t) => expect(read(t)).toEqual({ ok: true, payloads: [], diagnostics: [] }),
  'list-rows': (t) => {
    const rows = listed(read(t));
    expect(rows.map((r) => [r.name, r.state, r.rc, r.errnoName, r.metadata])).toEqual([
      ['xen_hello_world', 'APPLIED', 0, null, 'LIVEPATCH_RULEZ'],
      ['xen_bye_world', 'CHECKED', -22, 'EINVAL', ''],
      ['xen_replace_world', 'APPLIED', 0, null, ''],
      // longer than the 40-byte column: no padding, "|" straight after the name (XenServer's names)
      ['lp_4.17.3-3.11.gf717213.xs8-4.17.3-3.12.xs8', 'CHECKED', -11, 'EAGAIN', 'a=1;b=2'],
      ['exactly_forty_bytes_long_payload_name_xx', 'CHECKED', 0, null, ''],
      ['x'.repeat(40), 'CHECKED', -16, 'EBUSY', 'key=value'],
      // padded to 40 bytes, not characters
      ['ünïcödé_pätch', 'CHECKED', 0, null, ''],
      // numbers the catalogue does not name stay numbers
      ['lp_hook_denied', 'CHECKED', -1, null, ''],
      ['lp_odd_rc', 'CHECKED', -512, null, ''],
    ]);
    expect(rows[1]).toMatchObject({ errno: 22, strerror: 'Invalid argument', reason: expect.stringMatching(/^rc -22 \(EINVAL: Invalid argument\): its last action failed/) });
    expect(rows[3]!.reason).toMatch(/has not finished/);
    expect(rows[8]).toMatchObject({ errno: 512, strerror: 'Unknown error 512', reason: expect.stringContaining('errno 512') });
    expect(rows[0]).toMatchObject({ errno: null, strerror: null, reason: null });
  },
  'list-metadata-newline': failsWith('HOST_TOOL_OUTPUT', /not a payload row.*"lines"/),
  'list-metadata-forged-row': failsWith('HOST_TOOL_OUTPUT', /lists "xen_hello_world" twice/),
  'list-name-with-separator': (t) => expect(listed(read(t)).map((r) => [r.name, r.state])).toEqual([['evil| APPLIED    | x', 'CHECKED']]),
  'list-long-name-with-separator': failsWith('HOST_TOOL_OUTPUT', /can be read in 2 ways/),
  'list-unknown-state': failsWith('HOST_TOOL_OUTPUT', /"xen_hello_world" in a state it calls "unknown"/),
  'list-usage': failsWith('HOST_TOOL_FAILED', /usage/),
  'list-sizes-eperm': (t) => {
    const r = refused(read(t));
    expect(r).toMatchObject({ phase: 'sizes', errno: 1, errnoName: null, strerror: 'Operation not permitted', retryable: false });
    expect(r.reason).toMatch(/could not count the loaded payloads: Error 1 \(errno 1: Operation not permitted\); from a sysctl, EPERM means the security policy/);
    const e = refusalError(r);
    expect(e.code).toBe('HOST_TOOL_FAILED');
    expect(e.details).toMatchObject({ errno: 1, phase: 'sizes' });
  },
  'list-sizes-eacces': refusal({ phase: 'sizes', errno: 13, errnoName: null }, /built for another Xen version/),
  'list-entries-ebusy': (t) => {
    const r = refused(read(t));
    expect(r).toMatchObject({ phase: 'entries', errno: 16, errnoName: 'EBUSY', retryable: true });
    expect(refusalError(r)).toBeInstanceOf(XenError);
  },
  'list-entries-einval': refusal({ phase: 'entries', errno: 22, errnoName: 'EINVAL', retryable: false }),
  // The list grew between counting and reading: the tool prints "Error 0: Success" and exits 0.
  'list-grew-errno-0': (t) => {
    expect(t.exitCode).toBe(0);
    const r = refused(read(t));
    expect(r).toMatchObject({ phase: 'list-changed', errno: null, retryable: true });
    expect(r.reason).toMatch(/changed while xen-livepatch read it \(it counted 2, and 1 more were left/);
    const e = refusalError(r);
    expect(e).toBeInstanceOf(XenError);
    expect((e as XenError).errnoName).toBe('EBUSY');
  },
  'list-grew-stale-errno': refusal({ phase: 'list-changed', errno: null, retryable: true }, /"Error 2: No such file or directory" it printed is left over/),
  'list-no-handle': (t) => {
    const e = failure(() => read(t));
    expect(e.code).toBe('HOST_TOOL_FAILED');
    expect(e.message).toBe(
      "xen-livepatch list: xen-livepatch could not open the hypervisor's control interface (it must run in dom0, as root, with /dev/xen/privcmd): \"xencall: error: Could not obtain handle on privileged command interface: No such file or directory\"",
    );
  },
  'list-no-handle-eacces': failsWith('HOST_TOOL_FAILED', /control interface.*Permission denied/),
  'upload-completed': (t) => expect(read(t)).toEqual({ ok: true, diagnostics: [] }),
  'upload-eexist': refusal({ phase: 'upload', errnoName: 'EEXIST', errno: 17, retryable: false }, /^Xen refused the upload of xen_hello_world: Error 17 \(EEXIST: File exists\), which it returns when a payload with that name, or with the same build-id, is already loaded/),
  'upload-einval': refusal({ phase: 'upload', errnoName: 'EINVAL' }, /another hypervisor build-id/),
  'upload-enomem': refusal({ phase: 'upload', errnoName: 'ENOMEM', retryable: false }),
  'upload-ebusy': refusal({ phase: 'upload', errnoName: 'EBUSY', retryable: true }),
  'upload-eperm': (t) => expect(refusalError(refused(read(t))).code).toBe('HOST_TOOL_FAILED'),
  'upload-no-file': failsWith('HOST_TOOL_FAILED', /could not open the payload file \/tmp\/fleetpatch-upload\/missing.livepatch: Error 2 \(ENOENT: No such file or directory\)/),
  'upload-empty-file': failsWith('HOST_TOOL_FAILED', /could not map the payload file .*Error 22/),
  'upload-directory': failsWith('HOST_TOOL_FAILED', /could not map the payload file .*Error 19 \(errno 19: No such device\)/),
  'upload-name-129': refusal({ phase: 'name', errnoName: 'EINVAL' }, /longer than 128 characters/),
  // 128 characters pass the tool's check; libxc refuses them (no room for the NUL).
  'upload-name-128': refusal({ phase: 'upload', errnoName: 'EINVAL' }),
  'upload-usage': failsWith('HOST_TOOL_FAILED', /usage/),
  'upload-no-handle': failsWith('HOST_TOOL_FAILED', /control interface/),
  'apply-completed': done('completed'),
  'apply-nodeps-completed': done('completed'),
  'apply-no-action-needed': done('no-action-needed'),
  'apply-not-loaded': refusal({ phase: 'status', errnoName: 'ENOENT', retryable: false }, /^no payload named xen_hello_world is loaded .*nothing was asked of Xen$/),
  'apply-in-progress': refusal({ phase: 'in-progress', errno: 11, errnoName: 'EAGAIN', retryable: true }, /previous action has not finished/),
  'apply-refused-einval': refusal({ phase: 'action', errnoName: 'EINVAL', retryable: false }, /^Xen refused to apply xen_bye_world, or the work failed: Error 22 \(EINVAL: Invalid argument\), which Xen returns when its build-id dependency does not match/),
  'apply-refused-ebusy': refusal({ phase: 'action', errnoName: 'EBUSY', retryable: true }, /did not rendezvous/),
  'apply-refused-eperm': (t) => {
    const r = refused(read(t));
    expect(r).toMatchObject({ phase: 'action', errno: 1, errnoName: null, retryable: false });
    expect(refusalError(r).code).toBe('HOST_TOOL_FAILED');
  },
  // The work failed after the hypercall scheduled it: printed exactly as a refusal of the hypercall.
  'apply-work-failed-einval': (t) => {
    const refusedByXen = refused(read(COMMON['apply-refused-einval']!, { name: 'xen_bye_world' }));
    const failedWork = refused(read(t));
    expect({ ...failedWork, reason: undefined, printed: undefined }).toEqual({ ...refusedByXen, reason: undefined, printed: undefined });
  },
  'apply-work-timed-out': refusal({ phase: 'action', errnoName: 'EBUSY', retryable: true }),
  'apply-not-completed': (t) => {
    const r = refused(read(t));
    expect(r).toMatchObject({ phase: 'not-completed', errnoName: 'EAGAIN', retryable: true, printed: ['Applying xen_hello_world... failed', "Operation didn't complete."] });
    expect(r.reason).toMatch(/may still finish/);
  },
  'apply-gone-after': refusal({ phase: 'action', errnoName: 'ENOENT' }, /no longer loaded/),
  'apply-wrong-state-after': refusal({ phase: 'result-state', errno: null, wrongState: { current: 'CHECKED', expected: 'APPLIED' } }, /after the apply, xen_hello_world is CHECKED, not APPLIED/),
  'apply-unsupported-flag': failsWith('HOST_TOOL_FAILED', /does not take a flag it was given: "Unsupported flag: --bogus."/),
  'apply-usage': failsWith('HOST_TOOL_FAILED', /usage/),
  'apply-name-129': refusal({ phase: 'name', errnoName: 'EINVAL' }),
  // A 128-character name is not NUL-terminated in the tool: it prints the stack bytes after it.
  'apply-name-128': failsWith('HOST_TOOL_OUTPUT', /holds a byte that is not UTF-8/),
  'apply-no-handle': failsWith('HOST_TOOL_FAILED', /control interface/),
  'revert-completed': done('completed'),
  'revert-no-action-needed': done('no-action-needed'),
  'revert-not-top': refusal({ phase: 'action', errnoName: 'EBUSY', retryable: true }, /it is not the top of the stack/),
  'revert-nodeps': failsWith('HOST_TOOL_FAILED', /"Unsupported flag: --nodeps."/),
  'revert-in-progress': refusal({ phase: 'in-progress', errnoName: 'EAGAIN' }, /the revert was not attempted/),
  'unload-completed': done('completed'),
  'unload-wrong-state': (t) => {
    const r = refused(read(t));
    expect(r).toMatchObject({ phase: 'state', errno: null, retryable: false, wrongState: { current: 'APPLIED', expected: 'CHECKED' } });
    expect(r.reason).toBe('xen_nop is APPLIED, and unload needs it CHECKED (revert it first); the tool refused without asking Xen');
    const e = refusalError(r);
    expect(e).toBeInstanceOf(XenError);
    expect((e as XenError).errnoName).toBe('EINVAL');
  },
  // After an unload the tool expects the GET to fail with ENOENT, and calls that state "unknown".
  'unload-still-loaded': refusal({ phase: 'result-state', wrongState: { current: 'CHECKED', expected: 'unknown' } }, /is CHECKED, not gone/),
  'unload-not-loaded': refusal({ phase: 'status', errnoName: 'ENOENT' }),
  'replace-completed': done('completed'),
  'replace-no-action-needed': done('no-action-needed'),
  'replace-refused-eopnotsupp': refusal({ phase: 'action', errnoName: 'EOPNOTSUPP' }, /hooks/),
  'replace-work-failed': refusal({ phase: 'action', errnoName: 'EINVAL' }, /partly reverted/),
};

describe.each(XEN_VERSIONS)('xen-livepatch of Xen %s, as it prints', (version) => {
  const transcripts = transcriptsOf(version);
  it('has an expectation for every scenario captured', () => {
    expect(Object.keys(transcripts).filter((k) => !(k in EXPECT))).toEqual([]);
  });
  for (const [scenario, t] of Object.entries(transcripts)) {
    it(`${scenario}: ${t.argv.join(' ').slice(0, 60) || '(no arguments)'} -> exit ${t.exitCode}`, () => EXPECT[scenario]!(t, version));
  }
});

describe('xen-livepatch output that is not what it prints', () => {
  const rows = COMMON['list-rows']!;
  const rowsText = rows.stdout as string;

  it('a list cut anywhere inside a line is refused, quoting the piece; cut at a line end it is a shorter list', () => {
    const ends = new Set<number>();
    for (let i = rowsText.indexOf('\n'); i >= 0; i = rowsText.indexOf('\n', i + 1)) ends.add(i + 1);
    let shorter = 0;
    for (let cut = 1; cut < rowsText.length; cut++) {
      const t = { ...rows, stdout: rowsText.slice(0, cut) };
      if (!ends.has(cut)) {
        const e = failure(() => parseList(t));
        expect(e.code).toBe('HOST_TOOL_OUTPUT');
        expect(e.message).toMatch(/ends in the middle of a line|not a payload row/);
        continue;
      }
      // Up to the header's end it is refused (a header is always followed by a row); after it,
      // rows end at a newline, so a list cut there is indistinguishable from a shorter one: the
      // runner refuses output it cut itself instead.
      if (cut <= rowsText.indexOf('\n', LIST_HEADER[0].length + 1) + 1) expect(failure(() => parseList(t)).code).toBe('HOST_TOOL_OUTPUT');
      else {
        expect(listed(parseList(t)).length).toBeGreaterThan(0);
        shorter++;
      }
    }
    expect(shorter).toBe(8);
  });

  it('a row cut mid-way with its newline, a garbled state, a missing separator: refused with the line', () => {
    const withRow = (row: string) => ({ ...rows, stdout: `${LIST_HEADER.join('\n')}\n${row}\n` });
    for (const row of [
      'xen_hello_world                         | APPL',
      'xen_hello_world                         | APPLIED',
      'xen_hello_world                         | applied    | ',
      'xen_hello_world                         | LOADED    | ',
      'xen_hello_world                         | CHECKED (22 Invalid argument)    | ',
      'xen_hello_world                         | CHECKED (, Invalid argument)    | ',
      'xen_hello_world                         | CHECKED (0, Success)    | ',
      'xen_hello_world                         | CHECKED   | ',
      'xen_hello_world| CHECKED    | ',
      '                                        | CHECKED    | ',
    ]) {
      const e = failure(() => parseList(withRow(row)));
      expect(e.code).toBe('HOST_TOOL_OUTPUT');
      expect(e.message).toContain(JSON.stringify(row.trimEnd()).slice(1, 20));
    }
  });

  it('an Error line without a number, with words for the number, or with no text is not an errno', () => {
    const t = COMMON['apply-refused-einval']!;
    for (const line of ['Error : Invalid argument', 'Error 22 Invalid argument', 'Error twenty-two: Invalid argument', 'Error 22: ', 'Error 22:Invalid argument', 'error 22: Invalid argument']) {
      const e = failure(() => parseAction({ ...t, stderr: `${line}\n` }, { cmd: 'apply', name: 'xen_bye_world' }));
      expect(e.code).toBe('HOST_TOOL_OUTPUT');
      expect(e.message).toContain(JSON.stringify(line));
    }
    const sizes = COMMON['list-sizes-eperm']!;
    expect(failure(() => parseList({ ...sizes, stderr: 'Failed to get list sizes.\nError: Operation not permitted\n' })).message).toMatch(/"Error: Operation not permitted"/);
  });

  it('garbage, and nothing at all with a failing exit code, are refused', () => {
    for (const exitCode of [0, 1, 2, 139]) {
      expect(failure(() => parseList({ exitCode, stdout: '', stderr: '' })).message).toBe(
        `xen-livepatch list: it printed nothing and exited with ${exitCode}; xen-livepatch list prints "Nothing to list" or a table`,
      );
      expect(failure(() => parseAction({ exitCode, stdout: '', stderr: '' }, { cmd: 'revert', name: 'xen_nop' })).message).toMatch(/printed nothing and exited with/);
      expect(failure(() => parseUpload({ exitCode, stdout: '', stderr: '' }, { name: 'a', file: '/f' })).message).toMatch(/printed nothing and exited with/);
    }
    expect(failure(() => parseList({ exitCode: 0, stdout: 'hello world\n', stderr: '' })).message).toMatch(/"hello world"/);
    expect(failure(() => parseList({ exitCode: 0, stdout: ' ID | status | metadata\n', stderr: '' })).code).toBe('HOST_TOOL_OUTPUT');
    expect(failure(() => parseAction({ exitCode: 1, stdout: 'Segmentation fault\n', stderr: '' }, { cmd: 'apply', name: 'x' })).message).toMatch(/"Segmentation fault"/);
    expect(failure(() => parseAction({ exitCode: 1, stdout: '', stderr: 'something else\n' }, { cmd: 'apply', name: 'x' })).message).toMatch(/"something else"/);
    expect(failure(() => parseAction({ exitCode: 0, stdout: 'Applying x... completed\r\n', stderr: '' }, { cmd: 'apply', name: 'x' })).message).toMatch(/\\r/);
  });

  it('a byte that is not UTF-8, or a NUL, is refused with where it is', () => {
    const bytes = new TextEncoder().encode(rowsText);
    const at = rowsText.indexOf('xen_bye_world');
    bytes[at + 3] = 0xff;
    expect(failure(() => parseList({ ...rows, stdout: bytes })).message).toMatch(/line 4 of its standard output holds a byte that is not UTF-8 \(0xff at byte \d+\).*"xen\uFFFDbye_world/);
    // an overlong encoding and a lone continuation byte are not UTF-8 either
    for (const bad of [[0xc0, 0xaf], [0x80], [0xed, 0xa0, 0x80], [0xf4, 0x90, 0x80, 0x80], [0xe2, 0x82]]) {
      const b = Uint8Array.from([...new TextEncoder().encode('Nothing to list'), ...bad, 0x0a]);
      expect(failure(() => parseList({ exitCode: 0, stdout: b, stderr: '' })).message).toMatch(/not UTF-8/);
    }
    expect(failure(() => parseList({ ...rows, stdout: rowsText.replace('LIVEPATCH_RULEZ', 'LIVEPATCH\0RULEZ') })).message).toMatch(/NUL character/);
    // what is UTF-8 reads the same as bytes and as text
    expect(parseList({ ...rows, stdout: new TextEncoder().encode(rowsText) })).toEqual(parseList(rows));
  });

  it('an exit code that contradicts what was printed is refused', () => {
    const cases: [Transcript, number, { cmd: ActionCmd; name: string }][] = [
      [COMMON['apply-completed']!, 1, { cmd: 'apply', name: 'xen_hello_world' }],
      [COMMON['revert-not-top']!, 1, { cmd: 'revert', name: 'xen_hello_world' }],
      [COMMON['apply-refused-einval']!, 2, { cmd: 'apply', name: 'xen_bye_world' }],
      [COMMON['apply-not-completed']!, 0, { cmd: 'apply', name: 'xen_hello_world' }],
      [COMMON['unload-wrong-state']!, 0, { cmd: 'unload', name: 'xen_nop' }],
    ];
    for (const [t, exitCode, request] of cases) {
      const e = failure(() => parseAction({ ...t, exitCode }, request));
      expect(e.code).toBe('HOST_TOOL_OUTPUT');
      expect(e.message).toMatch(new RegExp(`but exited with ${exitCode}; after that xen-livepatch exits with ${t.exitCode}`));
    }
    expect(failure(() => parseList({ ...COMMON['list-rows']!, exitCode: 1 })).message).toMatch(/exited with 1/);
    expect(failure(() => parseUpload({ ...COMMON['upload-completed']!, exitCode: 2 }, { name: 'xen_hello_world', file: '/tmp/fleetpatch-upload/xen_hello_world.livepatch' })).code).toBe('HOST_TOOL_OUTPUT');
  });

  it('a line about another payload, another command or another file is refused', () => {
    expect(failure(() => parseAction(COMMON['apply-completed']!, { cmd: 'apply', name: 'xen_bye_world' })).message).toMatch(/"Applying xen_hello_world... completed"/);
    expect(failure(() => parseAction(COMMON['apply-completed']!, { cmd: 'replace', name: 'xen_hello_world' })).message).toMatch(/expected.*"Applying xen_hello_world... completed"/);
    expect(failure(() => parseAction(COMMON['apply-in-progress']!, { cmd: 'revert', name: 'xen_hello_world' })).message).toMatch(/"Cannot execute apply."/);
    expect(failure(() => parseAction(COMMON['apply-not-loaded']!, { cmd: 'apply', name: 'xen_nop' })).message).toMatch(/"Failed to get status of xen_hello_world."/);
    expect(failure(() => parseUpload(COMMON['upload-completed']!, { name: 'xen_hello_world', file: '/elsewhere.livepatch' })).message).toMatch(/Uploading \/tmp\/fleetpatch-upload/);
    const extra = { ...COMMON['apply-completed']!, stdout: 'Applying xen_hello_world... completed\nApplying xen_hello_world... completed\n' };
    expect(failure(() => parseAction(extra, { cmd: 'apply', name: 'xen_hello_world' })).message).toMatch(/one line at most/);
  });

  it("the list of xen-livepatch before Xen 4.14 (no metadata column) is named as such", () => {
    const old = ' ID                                     | status\n----------------------------------------+------------\nxen_hello_world                         | APPLIED\n';
    expect(failure(() => parseList({ exitCode: 0, stdout: old, stderr: '' })).message).toMatch(/before Xen 4.14; fleetpatch reads the list of Xen 4.17 to 4.20/);
  });

  it("keeps the libraries' log lines apart, and a refusal stays a refusal with them", () => {
    const t = { ...COMMON['upload-enomem']!, stderr: 'xc: error: Could not bounce buffer for sysctl hypercall: Cannot allocate memory\nError 12: Cannot allocate memory\n' };
    const r = refused(parseUpload(t, { name: 'xen_hello_world', file: '/tmp/fleetpatch-upload/xen_hello_world.livepatch' }));
    expect(r).toMatchObject({ errnoName: 'ENOMEM', diagnostics: ['xc: error: Could not bounce buffer for sysctl hypercall: Cannot allocate memory'] });
    const warned = { ...COMMON['upload-completed']!, stderr: 'Could not unmap /tmp/fleetpatch-upload/xen_hello_world.livepatch.\nError 22: Invalid argument\n' };
    expect(parseUpload(warned, { name: 'xen_hello_world', file: '/tmp/fleetpatch-upload/xen_hello_world.livepatch' })).toEqual({
      ok: true,
      diagnostics: ['Could not unmap /tmp/fleetpatch-upload/xen_hello_world.livepatch.', 'Error 22: Invalid argument'],
    });
  });
});

describe('xen-livepatch, the rest', () => {
  it("exits as its main() says: 0, 2 for EAGAIN and EBUSY, 1 for anything else", () => {
    expect([0, 11, 16, 22, 2, -1, 1, 12].map(toolExitCode)).toEqual([0, 2, 2, 1, 1, 1, 1, 1]);
  });

  it('says its verbs as the tool does', () => {
    expect(ACTION_VERB).toEqual({ apply: 'Applying', revert: 'Reverting', unload: 'Unloading', replace: 'Replacing all live patches with' });
  });

  it('takes only names whose rows can be read back, and refuses the rest as Xen would or in words', () => {
    for (const ok of ['xen_hello_world', 'ünïcödé_pätch', 'evil| APPLIED    | x', 'a'.repeat(127), '--nodeps', 'lp_4.17.3-3.11.gf717213.xs8-4.17.3-3.12.xs8']) expect(() => assertReadableName(ok)).not.toThrow();
    const refusedAs = (name: string) => failure(() => assertReadableName(name));
    expect(refusedAs('')).toBeInstanceOf(XenError);
    expect(refusedAs('a'.repeat(128)).message).toBe(`a payload name is 1 to 127 bytes; "${'a'.repeat(128).slice(0, 160)}" is 128`);
    expect((refusedAs('é'.repeat(64)) as XenError).errnoName).toBe('EINVAL');
    expect(refusedAs('two\nlines').code).toBe('REQUEST_INVALID');
    expect(refusedAs('tab\there').message).toMatch(/control character/);
    expect(refusedAs('trailing ').message).toMatch(/ends in a space/);
    expect(refusedAs('bad\uD800').message).toMatch(/lone UTF-16 surrogate/);
  });
});
