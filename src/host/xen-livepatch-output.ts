/**
 * What `xen-livepatch` printed and the code it exited with, read back into facts: the payload list,
 * and the outcome of an upload or an action. The messages are tools/misc/xen-livepatch.c's, the
 * same in Xen 4.17, 4.18, 4.19 and 4.20 (docs/hypervisor.md, "The real tools"). Only what the
 * tool can print is accepted; anything else is HOST_TOOL_OUTPUT quoting the line, and what the
 * tool says but Xen did not (no hypervisor interface, wrong arguments, an unreadable file) is
 * HOST_TOOL_FAILED. Nothing is guessed: where the output cannot tell two cases apart (a hypercall
 * that refused from work that failed), the outcome says so. Pure.
 */
import { XEN_LIVEPATCH_NAME_SIZE, type ActionCmd, type PayloadState } from '../agent/contract.ts';
import { FleetpatchError, XenError, errnoName, type XenErrnoName } from '../errors.ts';
import { unstorable } from '../domain/text.ts';
import { outputError, quote, readToolText, toolError, type ToolExit, type ToolLines, type ToolText } from './tool-text.ts';

/** The list's header, since Xen 4.14 (the metadata column). */
export const LIST_HEADER = [' ID                                     | status     | metadata', '----------------------------------------+------------+---------------'] as const;
const OLD_LIST_HEADER = ' ID                                     | status';
/** printf's `%-40.*s`: names are padded to 40 bytes (not characters), longer ones are not cut. */
const NAME_WIDTH = 40;

export const ACTION_VERB: Readonly<Record<ActionCmd, string>> = {
  apply: 'Applying',
  revert: 'Reverting',
  unload: 'Unloading',
  replace: 'Replacing all live patches with',
};

const EAGAIN = 11;
const EBUSY = 16;
const EINVAL = 22;

/** xen-livepatch's main(): 0 stays 0, EAGAIN and EBUSY become 2 ("retry"), anything else (an errno, or -1) 1. */
export function toolExitCode(ret: number): number {
  if (ret === 0) return 0;
  return ret === EAGAIN || ret === EBUSY ? 2 : 1;
}

// ---- outcomes -----------------------------------------------------------------------------------

/** One row of `xen-livepatch list`. The list prints no build-id and no dependency: only these. */
export interface ListedPayload {
  name: string;
  state: PayloadState;
  /** 0 or -errno, as Xen keeps it (the tool prints its negation). */
  rc: number;
  /** -rc when rc is not 0. */
  errno: number | null;
  /** Its name, when the catalogue (src/errors.ts) knows the number (an action hook may return any). */
  errnoName: XenErrnoName | null;
  /** The text printed after the number, verbatim (strerror of the C library the tool was built with). */
  strerror: string | null;
  /** Why rc is not 0, in words; null when it is 0. */
  reason: string | null;
  /** The .modinfo strings as printed: joined by ';' (a ';' inside one cannot be told from a join). */
  metadata: string;
}

/**
 * Where the tool stopped, for a refusal:
 * - `sizes`, `entries`: LIST's first call (the counts) or second (the entries) failed;
 * - `list-changed`: the list changed between those two calls (the errno printed then is left over from an earlier call);
 * - `name`: the tool refused a name longer than 128 characters itself;
 * - `upload`: the hypervisor refused the upload;
 * - `status`: the tool could not read the payload's status before acting (ENOENT: not loaded); nothing was asked;
 * - `in-progress`: the payload's rc was -EAGAIN before acting; nothing was asked;
 * - `state`: the payload is not in a state the action starts from (UNLOAD of an APPLIED one); the tool refused itself;
 * - `action`: the hypercall refused, or the work it scheduled failed: the output is the same for both (the list's rc tells:
 *   a refusal leaves it as it was, failed work sets it to -errno);
 * - `not-completed`: the work was scheduled and had not finished when the tool looked again 60 ms later; it may still finish;
 * - `result-state`: the work ended with the payload in another state than the action's.
 */
export type RefusalPhase = 'sizes' | 'entries' | 'list-changed' | 'name' | 'upload' | 'status' | 'in-progress' | 'state' | 'action' | 'not-completed' | 'result-state';

export interface ToolRefusal {
  ok: false;
  phase: RefusalPhase;
  /** The errno the tool printed (`Error <n>: …`) or stands for (EAGAIN for in-progress and not-completed); null for wrong states and a changed list. */
  errno: number | null;
  errnoName: XenErrnoName | null;
  /** The text after the number, verbatim, when one was printed. */
  strerror: string | null;
  /** What happened, in words. */
  reason: string;
  /** The tool says a retry can help (it exits 2: EAGAIN, EBUSY), or the list changed while it was read. */
  retryable: boolean;
  /** The lines that say so, verbatim: standard output's, then standard error's. */
  printed: string[];
  /** For `state` and `result-state`: the states the tool named ("unknown" is what it calls the state after an unload). */
  wrongState?: { current: string; expected: string };
  /** The libraries' own log lines on standard error. */
  diagnostics: string[];
}

export type ListOutcome = { ok: true; payloads: ListedPayload[]; diagnostics: string[] } | ToolRefusal;
export type UploadOutcome = { ok: true; diagnostics: string[] } | ToolRefusal;
/** `completed`: the tool saw the state the action leads to; `no-action-needed`: it was already there, nothing was asked. */
export type ActionOutcome = { ok: true; done: 'completed' | 'no-action-needed'; diagnostics: string[] } | ToolRefusal;

// ---- names --------------------------------------------------------------------------------------

const utf8 = new TextEncoder();
const byteLength = (s: string) => utf8.encode(s).length;

/**
 * A payload name the tools can be given and whose rows can be read back: 1 to 127 bytes (Xen's
 * rule: XEN_LIVEPATCH_NAME_SIZE with its NUL; EINVAL as Xen answers), storable, no control
 * character (each row is one line) and no trailing space (the list pads names with spaces).
 */
export function assertReadableName(name: string): void {
  const bytes = byteLength(name);
  if (bytes === 0 || bytes >= XEN_LIVEPATCH_NAME_SIZE) {
    throw new XenError('EINVAL', `a payload name is 1 to ${XEN_LIVEPATCH_NAME_SIZE - 1} bytes; ${quote(name)} is ${bytes}`, { payload: name });
  }
  const problem = unstorable(name);
  if (problem) throw new FleetpatchError('REQUEST_INVALID', `the payload name ${problem}`, { payload: name });
  if (/[\u0000-\u001f\u007f]/.test(name)) {
    throw new FleetpatchError('REQUEST_INVALID', `the payload name ${quote(name)} holds a control character: xen-livepatch prints one row per line, so it could not be read back`, { payload: name });
  }
  if (name.endsWith(' ')) {
    throw new FleetpatchError('REQUEST_INVALID', `the payload name ${quote(name)} ends in a space: xen-livepatch pads names with spaces in its list, so it could not be read back`, { payload: name });
  }
}

// ---- shared pieces --------------------------------------------------------------------------------

const ERROR_LINE = /^Error (-?\d{1,10}): (.+)$/;

interface PrintedErrno {
  errno: number;
  errnoName: XenErrnoName | null;
  strerror: string;
}

function errorLine(line: string | undefined): PrintedErrno | undefined {
  const m = line === undefined ? null : ERROR_LINE.exec(line);
  if (!m) return undefined;
  const errno = Number(m[1]);
  return { errno, errnoName: (errno > 0 && errnoName(errno)) || null, strerror: m[2]! };
}

/** "EINVAL: Invalid argument", or "errno 13: Permission denied" for a number the catalogue does not name. */
function errnoWords(e: PrintedErrno): string {
  return `Error ${e.errno} (${e.errnoName ?? `errno ${e.errno}`}: ${e.strerror})`;
}

/** What an errno outside the catalogue most likely means from a sysctl, said as such. */
function foreignErrnoHint(e: PrintedErrno): string {
  if (e.errno === 1) return '; from a sysctl, EPERM means the security policy (XSM/FLASK) denies it';
  if (e.errno === 13) return "; from a sysctl, EACCES means the tools were built for another Xen version than the one running";
  return '';
}

function allLines(t: ToolText): string[] {
  return [...t.stdout.lines, ...t.stderr.lines];
}

/** The exit code must be the one the tool's main() gives for what it printed. */
function checkExit(t: ToolText, ret: number, said: string): void {
  const expected = toolExitCode(ret);
  if (t.exitCode !== expected) {
    throw outputError(t.what, `it printed ${quote(said)} but exited with ${t.exitCode}; after that xen-livepatch exits with ${expected}`, {
      exitCode: t.exitCode,
      printed: allLines(t),
    });
  }
}

/** The first line of `lines` from `from` on that is not one of `known`, quoted, as the error. */
function unexpected(t: ToolText, lines: ToolLines, from: number, whatItIs: string): FleetpatchError {
  const line = lines.lines[from];
  if (line === undefined) return outputError(t.what, `its ${lines.stream} ended where ${whatItIs} was expected`, { exitCode: t.exitCode, printed: allLines(t) });
  return outputError(t.what, `its ${lines.stream} holds a line xen-livepatch does not print here (${whatItIs} expected): ${quote(line)}`, {
    exitCode: t.exitCode,
    printed: allLines(t),
  });
}

/** The tool's own failures, the same for every command: it never reached Xen, or was not given what it takes. */
function throwToolFailures(t: ToolText, argv: readonly string[]): void {
  const err = t.stderr.lines;
  if (err.includes('failed to get the handler')) {
    const why = t.diagnostics.at(-1);
    // The tool exits 0 here (main returns 0): the exit code cannot be trusted to say it failed.
    throw toolError(
      'HOST_TOOL_FAILED',
      t.what,
      `xen-livepatch could not open the hypervisor's control interface (it must run in dom0, as root, with /dev/xen/privcmd)${why ? `: ${quote(why)}` : ''}`,
      [...t.diagnostics, ...err],
      { exitCode: t.exitCode },
    );
  }
  const first = err[0];
  if (first !== undefined && /^Unrecognised command '.*' -- try 'xen-livepatch help'$/.test(first)) {
    throw toolError('HOST_TOOL_FAILED', t.what, `this xen-livepatch has no such command: ${quote(first)}`, err, { exitCode: t.exitCode });
  }
  if (first === 'xen-livepatch: live patching tool') {
    throw toolError('HOST_TOOL_FAILED', t.what, `xen-livepatch printed its usage instead: it does not take the arguments ${quote(argv.join(' '))}`, err, {
      exitCode: t.exitCode,
      usage: err[1],
    });
  }
  if (first !== undefined && /^Unsupported flag: .*\.$/.test(first) && err.length === 1 && t.stdout.lines.length === 0) {
    throw toolError('HOST_TOOL_FAILED', t.what, `this xen-livepatch does not take a flag it was given: ${quote(first)}`, err, { exitCode: t.exitCode });
  }
}

function refusal(t: ToolText, fields: Omit<ToolRefusal, 'ok' | 'printed' | 'diagnostics'>): ToolRefusal {
  return { ok: false, ...fields, printed: allLines(t), diagnostics: t.diagnostics };
}

function fromErrno(t: ToolText, phase: RefusalPhase, e: PrintedErrno, line: string, reason: string): ToolRefusal {
  checkExit(t, e.errno, line);
  return refusal(t, { phase, errno: e.errno, errnoName: e.errnoName, strerror: e.strerror, reason, retryable: t.exitCode === 2 });
}

// ---- list -----------------------------------------------------------------------------------------

/** After the name field: `| STATE[ (<-rc>, <strerror>)]    | <metadata>`. */
const ROW_TAIL = /^\| (CHECKED|APPLIED|unknown)(?: \((-?\d{1,10}), (.+?)\))?    \| (.*)$/;

function rowReason(rc: number, e: PrintedErrno): string {
  const said = `rc ${rc} (${e.errnoName ?? `errno ${e.errno}`}: ${e.strerror})`;
  if (e.errno === EAGAIN) return `${said}: its last action has not finished, or Xen could not schedule it while another action was pending (and then leaves -EAGAIN)`;
  return `${said}: its last action failed; why is only on the hypervisor console (xl dmesg)`;
}

function parseRow(t: ToolText, line: string): ListedPayload {
  const splits: { name: string; m: RegExpExecArray }[] = [];
  for (let i = line.indexOf('| '); i >= 0; i = line.indexOf('| ', i + 1)) {
    const prefix = line.slice(0, i);
    const width = byteLength(prefix);
    if (width < NAME_WIDTH) continue;
    const m = ROW_TAIL.exec(line.slice(i));
    if (m) splits.push({ name: width === NAME_WIDTH ? prefix.replace(/ +$/, '') : prefix, m });
  }
  if (splits.length === 0) {
    throw outputError(t.what, `a line of its list is not a payload row (a name padded to ${NAME_WIDTH} bytes, "| ", CHECKED or APPLIED, "    | ", metadata): ${quote(line)}`, {
      printed: t.stdout.lines,
    });
  }
  if (splits.length > 1) {
    throw outputError(t.what, `a row of its list can be read in ${splits.length} ways (a name or metadata holding "| <state>    | "), so it is not read at all: ${quote(line)}`, {
      printed: t.stdout.lines,
    });
  }
  const { name, m } = splits[0]!;
  if (name === '') throw outputError(t.what, `a row of its list has no name: ${quote(line)}`, { printed: t.stdout.lines });
  const state = m[1]!;
  if (state === 'unknown') {
    throw outputError(t.what, `it lists ${quote(name)} in a state it calls "unknown" (neither CHECKED nor APPLIED), which fleetpatch does not know: ${quote(line)}`, {
      payload: name,
      printed: t.stdout.lines,
    });
  }
  if (m[2] === undefined) return { name, state: state as PayloadState, rc: 0, errno: null, errnoName: null, strerror: null, reason: null, metadata: m[4]! };
  const printed = Number(m[2]);
  // The tool prints the rc only when it is not 0, negated: "(22, Invalid argument)" is rc -22.
  if (printed === 0) throw outputError(t.what, `a row of its list prints rc 0 in brackets, which xen-livepatch never does: ${quote(line)}`, { printed: t.stdout.lines });
  const e: PrintedErrno = { errno: printed, errnoName: (printed > 0 && errnoName(printed)) || null, strerror: m[3]! };
  return { name, state: state as PayloadState, rc: -printed, errno: printed, errnoName: e.errnoName, strerror: e.strerror, reason: rowReason(-printed, e), metadata: m[4]! };
}

/** `xen-livepatch list`: the payloads in upload order, or why there are none to show. */
export function parseList(exit: ToolExit): ListOutcome {
  const argv = ['list'];
  const t = readToolText('xen-livepatch list', exit);
  throwToolFailures(t, argv);
  const out = t.stdout.lines;
  const err = t.stderr.lines;
  if (out.length === 0) {
    const first = err[0];
    if (first === undefined) {
      throw outputError(t.what, `it printed nothing and exited with ${t.exitCode}; xen-livepatch list prints "Nothing to list" or a table`, { exitCode: t.exitCode, diagnostics: t.diagnostics });
    }
    const e = errorLine(err[1]);
    if (first === 'Failed to get list sizes.' && e && err.length === 2) {
      return fromErrno(t, 'sizes', e, err[1]!, `xen-livepatch could not count the loaded payloads: ${errnoWords(e)}${foreignErrnoHint(e)}`);
    }
    const failed = /^Failed to list (\d{1,10})\/(\d{1,10})\.$/.exec(first);
    if (failed && e && err.length === 2) {
      checkExit(t, e.errno, err[1]!);
      const [left, counted] = [Number(failed[1]), Number(failed[2])];
      // libxc ends such a read without an error of its own; the errno the tool prints is whatever
      // an earlier call left behind (often 0, "Success").
      if (left > 0 || e.errno === 0) {
        return refusal(t, {
          phase: 'list-changed',
          errno: null,
          errnoName: null,
          strerror: null,
          reason: `the payload list changed while xen-livepatch read it (it counted ${counted}, and ${left} more were left when it read them); the "${err[1]}" it printed is left over from an earlier call: list again`,
          retryable: true,
        });
      }
      return fromErrno(t, 'entries', e, err[1]!, `xen-livepatch could not read the ${counted} loaded payloads: ${errnoWords(e)}${foreignErrnoHint(e)}`);
    }
    const known = first === 'Failed to get list sizes.' || failed !== null;
    throw unexpected(t, t.stderr, known ? (e ? 2 : 1) : 0, 'a failure to list and its "Error <n>: <strerror>"');
  }
  if (out[0] === 'Nothing to list') {
    if (out.length > 1) throw unexpected(t, t.stdout, 1, 'nothing after "Nothing to list"');
    if (err.length) throw unexpected(t, t.stderr, 0, 'nothing on standard error');
    checkExit(t, 0, out[0]);
    return { ok: true, payloads: [], diagnostics: t.diagnostics };
  }
  if (out[0] === OLD_LIST_HEADER) {
    throw outputError(t.what, `its list has no metadata column, as xen-livepatch's before Xen 4.14; fleetpatch reads the list of Xen 4.17 to 4.20: ${quote(out[0])}`, { printed: out });
  }
  if (out[0] !== LIST_HEADER[0]) throw unexpected(t, t.stdout, 0, 'the list header or "Nothing to list"');
  if (out[1] !== LIST_HEADER[1]) throw unexpected(t, t.stdout, 1, "the list header's second line");
  if (err.length) throw unexpected(t, t.stderr, 0, 'nothing on standard error after a list');
  // With no payload the tool says "Nothing to list"; a header is always followed by a row.
  if (out.length === 2) throw outputError(t.what, 'it printed the list header and no row, which xen-livepatch never does (with no payload it prints "Nothing to list")', { printed: out });
  const payloads: ListedPayload[] = [];
  const seen = new Set<string>();
  for (const line of out.slice(2)) {
    const row = parseRow(t, line);
    // Xen's names are unique: a second row of one means the output is not the list (a payload's
    // metadata with a newline in it can print a line that looks like a row).
    if (seen.has(row.name)) throw outputError(t.what, `it lists ${quote(row.name)} twice, which Xen cannot hold, so this is not the list as Xen has it: ${quote(line)}`, { printed: out });
    seen.add(row.name);
    payloads.push(row);
  }
  checkExit(t, 0, out[0]);
  return { ok: true, payloads, diagnostics: t.diagnostics };
}

// ---- upload ---------------------------------------------------------------------------------------

const UPLOAD_CAUSES: Partial<Record<XenErrnoName, string>> = {
  EEXIST: 'a payload with that name, or with the same build-id, is already loaded',
  EINVAL: 'the payload is malformed, or was built for another hypervisor build-id (.livepatch.xen_depends)',
  ENOENT: 'a symbol it needs is in neither the hypervisor nor a loaded payload',
  EOPNOTSUPP: 'it uses an ELF feature or a relocation Xen does not support',
  EOVERFLOW: 'a relocation or a patched function is too far from its target',
  ENOMEM: 'the hypervisor is out of memory',
};

/** `Could not unmap <file>.` + its Error line: printed after the upload, whatever its outcome; kept as a diagnostic. */
function unmapWarning(err: string[], from: number, file: string): number {
  return err[from] === `Could not unmap ${file}.` && errorLine(err[from + 1]) ? 2 : 0;
}

/** `xen-livepatch upload <name> <file>`. */
export function parseUpload(exit: ToolExit, request: { name: string; file: string }): UploadOutcome {
  const { name, file } = request;
  const argv = ['upload', name, file];
  const t = readToolText(`xen-livepatch upload ${name}`, exit);
  throwToolFailures(t, argv);
  const out = t.stdout.lines;
  const err = t.stderr.lines;
  if (out.length === 0) {
    if (err.length === 1 && err[0] === `ID must be no more than ${XEN_LIVEPATCH_NAME_SIZE} characters.`) {
      checkExit(t, EINVAL, err[0]);
      return refusal(t, { phase: 'name', errno: EINVAL, errnoName: 'EINVAL', strerror: null, reason: `xen-livepatch refuses the name ${quote(name)}: it is longer than ${XEN_LIVEPATCH_NAME_SIZE} characters`, retryable: false });
    }
    const m = /^Could not (open|get size of|map) (.*)\.$/.exec(err[0] ?? '');
    const e = errorLine(err[1]);
    if (m && m[2] === file && e && err.length === 2) {
      checkExit(t, e.errno, err[1]!);
      throw toolError('HOST_TOOL_FAILED', t.what, `xen-livepatch could not ${m[1] === 'get size of' ? 'read the size of' : m[1]} the payload file ${file}: ${errnoWords(e)}`, err, { exitCode: t.exitCode, errno: e.errno });
    }
    if (err.length === 0) throw outputError(t.what, `it printed nothing and exited with ${t.exitCode}; xen-livepatch upload prints "Uploading <file>... completed" or "failed"`, { exitCode: t.exitCode });
    throw unexpected(t, t.stderr, m && m[2] === file ? 1 : 0, 'why the upload could not start');
  }
  if (out.length > 1) throw unexpected(t, t.stdout, 1, 'nothing after the "Uploading" line');
  const line = out[0]!;
  const diagnostics = [...t.diagnostics];
  if (line === `Uploading ${file}... completed`) {
    const unmap = unmapWarning(err, 0, file);
    if (err.length > unmap) throw unexpected(t, t.stderr, unmap, 'nothing on standard error after "completed"');
    diagnostics.push(...err);
    checkExit(t, 0, line);
    return { ok: true, diagnostics };
  }
  if (line === `Uploading ${file}... failed`) {
    const e = errorLine(err[0]);
    if (!e) throw unexpected(t, t.stderr, 0, '"Error <n>: <strerror>"');
    const unmap = unmapWarning(err, 1, file);
    if (err.length > 1 + unmap) throw unexpected(t, t.stderr, 1 + unmap, 'nothing more after the Error line');
    const cause = e.errnoName ? UPLOAD_CAUSES[e.errnoName] : undefined;
    const r = fromErrno(t, 'upload', e, err[0]!, `Xen refused the upload of ${name}: ${errnoWords(e)}${cause ? `, which it returns when ${cause}` : foreignErrnoHint(e)}; why exactly is only on the hypervisor console (xl dmesg)`);
    return { ...r, diagnostics: [...r.diagnostics, ...err.slice(1)] };
  }
  throw unexpected(t, t.stdout, 0, `"Uploading ${file}... completed" or "failed"`);
}

// ---- actions --------------------------------------------------------------------------------------

const ACTION_CAUSES: Readonly<Record<ActionCmd, Partial<Record<XenErrnoName, string>>>> = {
  apply: {
    EINVAL: 'its build-id dependency does not match the top of the stack (or the hypervisor), it has .data and was applied before, or an expectation failed',
    EBUSY: 'another action is pending on the host, or the CPUs did not rendezvous within the 30 ms timeout',
    ENOENT: 'it is no longer loaded',
    EFAULT: 'an expectation names no address',
    ERANGE: 'an expectation is longer than the function it checks',
  },
  revert: {
    EBUSY: 'it is not the top of the stack, another action is pending on the host, or the CPUs did not rendezvous within the 30 ms timeout',
    ENOENT: 'it is no longer loaded',
  },
  replace: {
    EINVAL: "its build-id dependency is not the hypervisor's, or reverting an applied payload failed (the stack is then partly reverted)",
    EOPNOTSUPP: 'it, or a payload it would revert, has pre- or post-action hooks',
    EBUSY: 'another action is pending on the host, or the CPUs did not rendezvous within the 30 ms timeout',
    ENOENT: 'it is no longer loaded',
  },
  unload: {
    EINVAL: 'it is applied',
    EBUSY: 'another action is pending on the host',
  },
};

function statusReason(cmd: ActionCmd, name: string, e: PrintedErrno): string {
  if (e.errnoName === 'ENOENT') return `no payload named ${name} is loaded (${errnoWords(e)}); nothing was asked of Xen`;
  if (e.errnoName === 'EINVAL') return `Xen refused the name ${quote(name)} (${errnoWords(e)}): a name is 1 to ${XEN_LIVEPATCH_NAME_SIZE - 1} bytes; nothing was asked of Xen`;
  return `xen-livepatch could not read the status of ${name} before the ${cmd}: ${errnoWords(e)}${foreignErrnoHint(e)}; nothing was asked of Xen`;
}

const STATE_WORD = /^(CHECKED|APPLIED|unknown)$/;

/**
 * action_options[] of xen-livepatch.c: the state each action starts from (`allow`, what the
 * wrong-state lines before acting name as expected) and the one it leads to (`expected`, named
 * after acting; "unknown" for unload, whose payload is gone). Wrong-state lines that name other
 * states are not the tool's.
 */
const ACTION_STATES: Readonly<Record<ActionCmd, { allow: string; leadsTo: string }>> = {
  apply: { allow: 'CHECKED', leadsTo: 'APPLIED' },
  revert: { allow: 'APPLIED', leadsTo: 'CHECKED' },
  unload: { allow: 'CHECKED', leadsTo: 'unknown' },
  replace: { allow: 'CHECKED', leadsTo: 'APPLIED' },
};

/** `<name> is in the wrong state.` / `Current state: X` / `Expected state: Y`, at `from`. */
function wrongState(err: string[], from: number, name: string): { current: string; expected: string } | undefined {
  if (err[from] !== `${name} is in the wrong state.`) return undefined;
  const cur = /^Current state: (.*)$/.exec(err[from + 1] ?? '');
  const exp = /^Expected state: (.*)$/.exec(err[from + 2] ?? '');
  if (!cur || !exp || !STATE_WORD.test(cur[1]!) || !STATE_WORD.test(exp[1]!)) return undefined;
  return { current: cur[1]!, expected: exp[1]! };
}

/** `xen-livepatch apply|revert|replace|unload <name> [--nodeps]`. */
export function parseAction(exit: ToolExit, request: { cmd: ActionCmd; name: string; nodeps?: boolean }): ActionOutcome {
  const { cmd, name } = request;
  const argv = [cmd, name, ...(request.nodeps ? ['--nodeps'] : [])];
  const t = readToolText(`xen-livepatch ${argv.join(' ')}`, exit);
  throwToolFailures(t, argv);
  const out = t.stdout.lines;
  const err = t.stderr.lines;
  const only = (n: number, after: string) => {
    if (err.length > n) throw unexpected(t, t.stderr, n, `nothing more after ${after}`);
  };
  if (out.length > 1) throw unexpected(t, t.stdout, 1, 'one line at most');
  const line = out[0];

  if (line === undefined) {
    if (err.length === 0) throw outputError(t.what, `it printed nothing and exited with ${t.exitCode}; xen-livepatch ${cmd} always says what it did`, { exitCode: t.exitCode });
    if (err[0] === `Failed to get status of ${name}.`) {
      const e = errorLine(err[1]);
      if (!e) throw unexpected(t, t.stderr, 1, '"Error <n>: <strerror>"');
      only(2, 'the Error line');
      return fromErrno(t, 'status', e, err[1]!, statusReason(cmd, name, e));
    }
    if (err[0] === `Cannot execute ${cmd}.`) {
      if (err[1] !== 'Operation already in progress.') throw unexpected(t, t.stderr, 1, '"Operation already in progress."');
      only(2, '"Operation already in progress."');
      checkExit(t, EAGAIN, err[1]);
      return refusal(t, {
        phase: 'in-progress',
        errno: EAGAIN,
        errnoName: 'EAGAIN',
        strerror: null,
        reason: `${name}: its previous action has not finished (rc -EAGAIN), or Xen left rc -EAGAIN after an action it could not schedule; the ${cmd} was not attempted`,
        retryable: true,
      });
    }
    const ws = wrongState(err, 0, name);
    if (ws) {
      only(3, 'the expected state');
      // Before acting the tool names the state the action starts from; it stops there only when
      // the payload is in neither that state nor the one the action leads to ("No action needed.").
      const { allow, leadsTo } = ACTION_STATES[cmd];
      if (ws.expected !== allow || ws.current === allow || ws.current === leadsTo) {
        throw outputError(t.what, `its wrong-state lines name ${ws.current} and ${ws.expected}, which xen-livepatch ${cmd} never prints before acting (it expects ${allow} there, and acts or needs no action in ${allow} and ${leadsTo}): ${quote(err[2]!)}`, {
          exitCode: t.exitCode,
          printed: allLines(t),
        });
      }
      checkExit(t, -1, err[0]!);
      return refusal(t, {
        phase: 'state',
        errno: null,
        errnoName: null,
        strerror: null,
        reason: `${name} is ${ws.current}, and ${cmd} needs it ${ws.expected}${cmd === 'unload' && ws.current === 'APPLIED' ? ' (revert it first)' : ''}; the tool refused without asking Xen`,
        retryable: false,
        wrongState: ws,
      });
    }
    if (err[0] === `ID must be no more than ${XEN_LIVEPATCH_NAME_SIZE} characters.`) {
      only(1, 'the name check');
      checkExit(t, EINVAL, err[0]);
      return refusal(t, { phase: 'name', errno: EINVAL, errnoName: 'EINVAL', strerror: null, reason: `xen-livepatch refuses the name ${quote(name)}: it is longer than ${XEN_LIVEPATCH_NAME_SIZE} characters`, retryable: false });
    }
    throw unexpected(t, t.stderr, 0, `why the ${cmd} did not start`);
  }

  if (line === 'No action needed.') {
    only(0, '"No action needed."');
    checkExit(t, 0, line);
    return { ok: true, done: 'no-action-needed', diagnostics: t.diagnostics };
  }
  const verbLine = `${ACTION_VERB[cmd]} ${name}... `;
  if (line === `${verbLine}completed`) {
    only(0, '"completed"');
    checkExit(t, 0, line);
    return { ok: true, done: 'completed', diagnostics: t.diagnostics };
  }
  if (line !== `${verbLine}failed`) throw unexpected(t, t.stdout, 0, `"${verbLine}completed" or "failed", or "No action needed."`);

  const e = errorLine(err[0]);
  if (e) {
    only(1, 'the Error line');
    const cause = e.errnoName ? (ACTION_CAUSES[cmd][e.errnoName] ?? (e.errnoName === 'ENOMEM' ? 'the hypervisor is out of memory' : undefined)) : undefined;
    return fromErrno(
      t,
      'action',
      e,
      err[0]!,
      `Xen refused to ${cmd} ${name}, or the work failed: ${errnoWords(e)}${cause ? `, which Xen returns when ${cause}` : foreignErrnoHint(e)}; why exactly is only on the hypervisor console (xl dmesg)`,
    );
  }
  if (err[0] === "Operation didn't complete.") {
    only(1, `"Operation didn't complete."`);
    checkExit(t, EAGAIN, err[0]);
    return refusal(t, {
      phase: 'not-completed',
      errno: EAGAIN,
      errnoName: 'EAGAIN',
      strerror: null,
      reason: `the ${cmd} of ${name} was scheduled, but had not finished when xen-livepatch looked again 60 ms later (rc -EAGAIN); it may still finish: the list shows when`,
      retryable: true,
    });
  }
  const ws = wrongState(err, 0, name);
  if (ws) {
    only(3, 'the expected state');
    // After acting the tool names the state the action leads to, and only when the payload is not in it.
    const { leadsTo } = ACTION_STATES[cmd];
    if (ws.expected !== leadsTo || ws.current === leadsTo) {
      throw outputError(t.what, `its wrong-state lines after "${verbLine}failed" name ${ws.current} and ${ws.expected}, which xen-livepatch ${cmd} never prints (it expects ${leadsTo} there): ${quote(err[2]!)}`, {
        exitCode: t.exitCode,
        printed: allLines(t),
      });
    }
    checkExit(t, -1, err[0]!);
    return refusal(t, {
      phase: 'result-state',
      errno: null,
      errnoName: null,
      strerror: null,
      reason: `after the ${cmd}, ${name} is ${ws.current}, not ${cmd === 'unload' ? 'gone' : ws.expected}`,
      retryable: false,
      wrongState: ws,
    });
  }
  throw unexpected(t, t.stderr, 0, `why the ${cmd} failed`);
}

// ---- as errors ------------------------------------------------------------------------------------

/**
 * A refusal as the catalogue's error: Xen's errno as a XenError; the tool's refusal of an
 * UNLOAD of an APPLIED payload (`state`) as EINVAL, which is what Xen answers to it; a list that
 * changed as EBUSY, as libxc reports one it notices itself; an errno the catalogue does not know
 * (EPERM, EACCES, an action hook's) as HOST_TOOL_FAILED.
 */
export function refusalError(r: ToolRefusal, details: Record<string, unknown> = {}): FleetpatchError {
  const facts = { phase: r.phase, printed: r.printed, ...(r.wrongState ? { wrongState: r.wrongState } : {}), ...details };
  if (r.phase === 'state') return new XenError('EINVAL', r.reason, facts);
  if (r.phase === 'list-changed') return new XenError('EBUSY', r.reason, facts);
  if (r.errnoName) return new XenError(r.errnoName, r.reason, facts);
  return new FleetpatchError('HOST_TOOL_FAILED', r.reason, { ...facts, errno: r.errno });
}
