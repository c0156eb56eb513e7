/**
 * Every command form of xen-livepatch, cut short and given the wrong exit code: each transcript of
 * each Xen version (4.17 to 4.20, fixtures/xen-livepatch-transcripts.ts) with its standard output
 * or its standard error cut at every byte, and with every other exit code. A cut output is what a
 * tool killed in the middle of a line or a hypercall leaves; it must never read as an answer of
 * Xen: it is refused (HOST_TOOL_OUTPUT, or HOST_TOOL_FAILED when what is left is still the tool's
 * own failure). The one exception is known and documented: a list cut right after a row reads as
 * a shorter list, so the runner refuses output it had to cut (tested in
 * xen-livepatch-output.unit.test.ts). Then each transcript garbled: its two streams swapped, and
 * each of its lines printed twice, refused the same way.
 */
import { describe, expect, it } from 'vitest';
import { FleetpatchError } from '../../src/errors.ts';
import type { ActionCmd } from '../../src/agent/contract.ts';
import { parseAction, parseList, parseUpload } from '../../src/host/xen-livepatch-output.ts';
import { parseXlBuildId, parseXlInfoBuildId } from '../../src/host/xl-info-output.ts';
import { XEN_VERSIONS, transcriptsOf, type Transcript } from './fixtures/xen-livepatch-transcripts.ts';

const ACTIONS: readonly string[] = ['apply', 'revert', 'unload', 'replace'];

/** Reads a transcript with the parser of the command it ran (help and unknown commands as list). */
function read(t: Transcript): unknown {
  const argv = t.argv[0] === '--force' ? t.argv.slice(1) : t.argv;
  const [cmd, name, third] = argv;
  if (cmd && ACTIONS.includes(cmd)) return parseAction(t, { cmd: cmd as ActionCmd, name: name ?? 'xen_hello_world', nodeps: third === '--nodeps' });
  if (cmd === 'upload') return parseUpload(t, { name: name ?? 'xen_hello_world', file: third ?? '/tmp/fleetpatch-upload/xen_hello_world.livepatch' });
  return parseList(t);
}

type Read = { threw: string } | { value: unknown };
function attempt(t: Transcript): Read {
  try {
    return { value: read(t) };
  } catch (e) {
    expect(e).toBeInstanceOf(FleetpatchError);
    return { threw: (e as FleetpatchError).code };
  }
}

const bytes = (s: string | Uint8Array) => (typeof s === 'string' ? new TextEncoder().encode(s) : s);

/** Offsets just after each newline, where a cut leaves whole lines. */
function lineEnds(b: Uint8Array): Set<number> {
  const ends = new Set<number>();
  b.forEach((c, i) => c === 0x0a && ends.add(i + 1));
  return ends;
}

/** The list's rows start after its two header lines; a cut after one of them is a shorter list. */
function isRowBoundaryOfList(t: Transcript, out: Uint8Array, cut: number): boolean {
  if (t.argv[0] !== 'list') return false;
  const headerEnd = [...lineEnds(out)].sort((a, b) => a - b)[1];
  return headerEnd !== undefined && cut > headerEnd && lineEnds(out).has(cut);
}

describe.each(XEN_VERSIONS)('xen-livepatch of Xen %s, cut short', (version) => {
  for (const [scenario, t] of Object.entries(transcriptsOf(version))) {
    const full = attempt(t);
    const out = bytes(t.stdout);
    const err = bytes(t.stderr);

    it(`${scenario}: standard output cut at each of its ${out.length} bytes is refused`, () => {
      for (let cut = 0; cut < out.length; cut++) {
        const short = { ...t, stdout: out.subarray(0, cut), stderr: err };
        if (isRowBoundaryOfList(t, out, cut)) continue;
        const r = attempt(short);
        expect(r, `cut at ${cut}: ${JSON.stringify(new TextDecoder().decode(out.subarray(0, cut)))}`).toHaveProperty('threw');
        expect(['HOST_TOOL_OUTPUT', 'HOST_TOOL_FAILED']).toContain((r as { threw: string }).threw);
      }
    });

    it(`${scenario}: standard error cut at each of its ${err.length} bytes is refused`, () => {
      for (let cut = 0; cut < err.length; cut++) {
        const r = attempt({ ...t, stdout: out, stderr: err.subarray(0, cut) });
        expect(r, `cut at ${cut}: ${JSON.stringify(new TextDecoder().decode(err.subarray(0, cut)))}`).toHaveProperty('threw');
        expect(['HOST_TOOL_OUTPUT', 'HOST_TOOL_FAILED']).toContain((r as { threw: string }).threw);
      }
    });

    it(`${scenario}: with any other exit code it is refused${'threw' in full ? ' (it is a failure of the tool with any)' : ''}`, () => {
      for (const exitCode of [0, 1, 2, 3, 127, 139, 255].filter((c) => c !== t.exitCode)) {
        const r = attempt({ ...t, exitCode });
        if ('threw' in full) {
          // The tool's own failures (usage, no hypervisor interface, a file it cannot open) stay failures.
          expect(r).toHaveProperty('threw');
          continue;
        }
        expect(r, `exit ${exitCode}`).toEqual({ threw: 'HOST_TOOL_OUTPUT' });
      }
    });
  }
});

describe.each(XEN_VERSIONS)('xen-livepatch of Xen %s, garbled', (version) => {
  const decode = (s: string | Uint8Array) => (typeof s === 'string' ? s : null);
  for (const [scenario, t] of Object.entries(transcriptsOf(version))) {
    const out = decode(t.stdout);
    const err = decode(t.stderr);
    if (out === null || err === null || out + err === '') continue;

    it(`${scenario}: its two streams swapped, or any one line printed twice, is refused`, () => {
      const full = attempt(t);
      if (out !== err) {
        const swapped = attempt({ ...t, stdout: err, stderr: out });
        expect(swapped, 'swapped').toHaveProperty('threw');
      }
      for (const [stream, text] of [['stdout', out], ['stderr', err]] as const) {
        const lines = text.split('\n').slice(0, -1);
        lines.forEach((line, i) => {
          // A library's log line twice is still only diagnostics.
          if (/^(?:[A-Za-z0-9_.-]+: )?error: /.test(line)) return;
          const doubled = [...lines.slice(0, i + 1), line, ...lines.slice(i + 1)].join('\n') + '\n';
          const r = attempt({ ...t, [stream]: doubled });
          // The tool's own failures (usage, no handler) stay failures, however garbled.
          if ('threw' in full) expect(r, `${stream} line ${i + 1} twice`).toHaveProperty('threw');
          else expect(r, `${stream} line ${i + 1} twice: ${JSON.stringify(line)}`).toEqual({ threw: 'HOST_TOOL_OUTPUT' });
        });
      }
    });
  }
});

describe('wrong-state lines that name states the tool never names there', () => {
  const lines = (name: string, current: string, expected: string) => `${name} is in the wrong state.\nCurrent state: ${current}\nExpected state: ${expected}\n`;
  it('before acting: the expected state is the one the action starts from, the current one neither it nor the one it leads to', () => {
    const refusedAs = (cmd: ActionCmd, current: string, expected: string) => {
      try {
        parseAction({ exitCode: 1, stdout: '', stderr: lines('p', current, expected) }, { cmd, name: 'p' });
      } catch (e) {
        return (e as FleetpatchError).code;
      }
      return 'read';
    };
    // what the tool prints: unload of an APPLIED payload; any action on a state Xen does not have
    expect(refusedAs('unload', 'APPLIED', 'CHECKED')).toBe('read');
    expect(refusedAs('apply', 'unknown', 'CHECKED')).toBe('read');
    expect(refusedAs('revert', 'unknown', 'APPLIED')).toBe('read');
    // what it cannot print: a CHECKED payload is applied, not refused; unload expects CHECKED; revert expects APPLIED
    expect(refusedAs('apply', 'CHECKED', 'APPLIED')).toBe('HOST_TOOL_OUTPUT');
    expect(refusedAs('apply', 'APPLIED', 'CHECKED')).toBe('HOST_TOOL_OUTPUT');
    expect(refusedAs('unload', 'CHECKED', 'unknown')).toBe('HOST_TOOL_OUTPUT');
    expect(refusedAs('revert', 'CHECKED', 'APPLIED')).toBe('HOST_TOOL_OUTPUT');
    expect(refusedAs('replace', 'APPLIED', 'CHECKED')).toBe('HOST_TOOL_OUTPUT');
  });

  it('after acting: the expected state is the one the action leads to, and the payload is not in it', () => {
    const after = (cmd: ActionCmd, verb: string, current: string, expected: string) => () =>
      parseAction({ exitCode: 1, stdout: `${verb} p... failed\n`, stderr: lines('p', current, expected) }, { cmd, name: 'p' });
    expect(after('unload', 'Unloading', 'CHECKED', 'unknown')()).toMatchObject({ ok: false, phase: 'result-state' });
    expect(after('apply', 'Applying', 'CHECKED', 'APPLIED')()).toMatchObject({ ok: false, phase: 'result-state' });
    expect(after('apply', 'Applying', 'CHECKED', 'CHECKED')).toThrow(/never prints \(it expects APPLIED there\)/);
    expect(after('revert', 'Reverting', 'CHECKED', 'CHECKED')).toThrow(FleetpatchError);
    expect(after('unload', 'Unloading', 'CHECKED', 'CHECKED')).toThrow(FleetpatchError);
  });
});

describe('xl info, cut short', () => {
  const id = 'b48efad4098d4242ea8a36386ea1467ab59cffc9';
  it('xl info build_id cut anywhere in its line is refused', () => {
    const out = `${id}\n`;
    for (let cut = 0; cut < out.length; cut++) {
      expect(() => parseXlBuildId({ exitCode: 0, stdout: out.slice(0, cut), stderr: '' }), `cut at ${cut}`).toThrow(FleetpatchError);
    }
  });

  it('the full xl info cut anywhere before its build_id line has ended is refused', () => {
    const out = `host                   : dom0\nxen_major              : 4\nxen_minor              : 20\nxen_extra              : .0\nbuild_id               : ${id}\nxend_config_format     : 4\n`;
    const end = out.indexOf(id) + id.length + 1;
    for (let cut = 0; cut < end; cut++) {
      expect(() => parseXlInfoBuildId({ exitCode: 0, stdout: out.slice(0, cut), stderr: '' }), `cut at ${cut}`).toThrow(FleetpatchError);
    }
    // cut after it, at a line end: the build-id is there, whole
    expect(parseXlInfoBuildId({ exitCode: 0, stdout: out.slice(0, end), stderr: '' })).toBe(id);
  });
});
