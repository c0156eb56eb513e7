/**
 * The text a Xen tool left when it exited, made safe to read: each stream decoded as strict UTF-8
 * (the tools print payload names and .modinfo bytes as they are, and xen-livepatch can print stack
 * bytes after a 128-character name), split into lines, the libraries' own log lines set aside,
 * and one error for anything that is not what the tool prints, quoting the line. Pure.
 */
import { FleetpatchError, type ErrorCode } from '../errors.ts';
import { unstorable } from '../domain/text.ts';

/** How a tool ended when it exited by itself (deaths by signal, timeouts and floods are the runner's to report). */
export interface ToolExit {
  exitCode: number;
  stdout: Uint8Array | string;
  stderr: Uint8Array | string;
}

export type StreamName = 'standard output' | 'standard error';

/** One stream as lines, without their newlines. */
export interface ToolLines {
  stream: StreamName;
  lines: string[];
}

/** A tool's output, read. `what` names the command for every sentence ("xen-livepatch apply xen_nop"). */
export interface ToolText {
  what: string;
  exitCode: number;
  stdout: ToolLines;
  /** Standard error without the libraries' log lines, which are in `diagnostics`. */
  stderr: ToolLines;
  /** libxenctrl's, libxencall's and libxl's own log lines ("xencall: error: …"), verbatim. */
  diagnostics: string[];
}

/** A quoted line for a sentence: escaped (control characters show as \u…), and at most 160 characters. */
export function quote(line: string): string {
  return JSON.stringify(line.length > 160 ? `${line.slice(0, 160)}…` : line);
}

/** The one error for output that is not what the tool prints. */
export function outputError(what: string, problem: string, details: Record<string, unknown> = {}): FleetpatchError {
  return new FleetpatchError('HOST_TOOL_OUTPUT', `${what}: ${problem}`, { command: what, ...details });
}

/** An error that quotes lines the tool printed, with the facts in details. */
export function toolError(code: ErrorCode, what: string, sentence: string, printed: string[], details: Record<string, unknown> = {}): FleetpatchError {
  return new FleetpatchError(code, `${what}: ${sentence}`, { command: what, printed, ...details });
}

/** Offset of the first byte that does not belong to well-formed UTF-8, or -1. */
export function firstInvalidUtf8(bytes: Uint8Array): number {
  let i = 0;
  while (i < bytes.length) {
    const b = bytes[i]!;
    if (b < 0x80) {
      i++;
      continue;
    }
    let need: number;
    let min: number;
    if (b >= 0xc2 && b <= 0xdf) [need, min] = [1, 0x80];
    else if (b >= 0xe0 && b <= 0xef) [need, min] = [2, 0x800];
    else if (b >= 0xf0 && b <= 0xf4) [need, min] = [3, 0x10000];
    else return i;
    let cp = b & (0x3f >> need);
    for (let k = 1; k <= need; k++) {
      const c = bytes[i + k];
      if (c === undefined || (c & 0xc0) !== 0x80) return i;
      cp = (cp << 6) | (c & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return i;
    i += need + 1;
  }
  return -1;
}

const lossy = new TextDecoder('utf-8');

function decode(what: string, stream: StreamName, data: Uint8Array | string): string {
  if (typeof data === 'string') return data;
  const bad = firstInvalidUtf8(data);
  if (bad >= 0) {
    const before = data.subarray(0, bad);
    const lineNo = before.filter((b) => b === 0x0a).length + 1;
    const start = before.lastIndexOf(0x0a) + 1;
    const end = data.indexOf(0x0a, bad);
    const line = lossy.decode(data.subarray(start, end < 0 ? data.length : end));
    throw outputError(what, `line ${lineNo} of its ${stream} holds a byte that is not UTF-8 (0x${data[bad]!.toString(16).padStart(2, '0')} at byte ${bad}), which no Xen tool prints for a name it was given: ${quote(line)}`, {
      stream,
      line: lineNo,
    });
  }
  return lossy.decode(data);
}

function splitLines(what: string, stream: StreamName, text: string): ToolLines {
  if (text === '') return { stream, lines: [] };
  const problem = unstorable(text);
  if (problem) throw outputError(what, `its ${stream} ${problem}; Xen's tools never print one`, { stream });
  const lines = text.split('\n');
  const last = lines.pop()!;
  // Every line the tools print ends in a newline; one that does not was cut off.
  if (last !== '') throw outputError(what, `its ${stream} ends in the middle of a line: ${quote(last)}`, { stream, line: lines.length + 1 });
  return { stream, lines };
}

/**
 * A log line of Xen's libraries (xentoollog: `[<context>: ]<level>: <message>[: <strerror>]`),
 * e.g. `xencall: error: Could not obtain handle on privileged command interface: No such file or
 * directory` or `libxl: error: libxl.c:102:libxl_ctx_alloc: cannot open libxc handle: …`.
 */
const LIBRARY_LOG = /^(?:[A-Za-z0-9_.-]+: )?(?:debug|verbose|detail|progress|info|notice|warning|error|critical): ./;

export function isLibraryLogLine(line: string): boolean {
  return LIBRARY_LOG.test(line);
}

/** Decodes and splits both streams, or throws HOST_TOOL_OUTPUT naming the first byte or line that is wrong. */
export function readToolText(what: string, exit: ToolExit): ToolText {
  const stdout = splitLines(what, 'standard output', decode(what, 'standard output', exit.stdout));
  const all = splitLines(what, 'standard error', decode(what, 'standard error', exit.stderr));
  const diagnostics = all.lines.filter(isLibraryLogLine);
  return { what, exitCode: exit.exitCode, stdout, stderr: { stream: all.stream, lines: all.lines.filter((l) => !isLibraryLogLine(l)) }, diagnostics };
}
