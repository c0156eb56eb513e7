/**
 * The hypervisor's build-id as `xl info` prints it (tools/xl/xl_info.c): `xl info build_id`
 * prints the value alone on one line (with an argument, `xl info` prints, of each line that starts
 * with it, what follows ": "), the full `xl info` a `build_id               : <hex>` line. When
 * Xen does not give the build-id, xl still exits 0: Xen 4.17 to 4.19 print an empty value,
 * 4.20 prints "(null)" (libxl's xc_xenver_buildid() wrapper returns NULL and printf prints that).
 * Pure.
 */
import { isBuildIdHex } from '../payload/build-id.ts';
import { outputError, quote, readToolText, toolError, type ToolExit, type ToolText } from './tool-text.ts';

/** Longest build-id taken: Xen hands it over in one page, and sha1 (20 bytes) is what `ld --build-id` writes. */
const MAX_BUILD_ID_BYTES = 4096;

function failedXl(t: ToolText): never {
  const last = t.stderr.lines.at(-1) ?? t.diagnostics.at(-1);
  throw toolError('HOST_TOOL_FAILED', t.what, `xl exited with ${t.exitCode}${last ? `: ${quote(last)}` : ' and said nothing'}`, [...t.diagnostics, ...t.stderr.lines], {
    exitCode: t.exitCode,
  });
}

function buildIdValue(t: ToolText, value: string, line: string): string {
  if (value === '' || value === '(null)') {
    throw toolError(
      'HOST_TOOL_FAILED',
      t.what,
      `xl printed ${value === '' ? 'an empty build-id' : '"(null)" for the build-id'}: the hypervisor did not give it (XENVER_build_id was denied, or Xen was built without one)${t.diagnostics.length ? `: ${quote(t.diagnostics.at(-1)!)}` : ''}`,
      [line, ...t.diagnostics],
    );
  }
  if (!isBuildIdHex(value) || value.length > MAX_BUILD_ID_BYTES * 2) {
    throw outputError(t.what, `the build-id it printed is not lowercase hex of whole bytes, as xl prints it: ${quote(line)}`, { printed: t.stdout.lines });
  }
  return value;
}

/** `xl info build_id`: the running hypervisor's build-id, lowercase hex. */
export function parseXlBuildId(exit: ToolExit): string {
  const t = readToolText('xl info build_id', exit);
  if (t.exitCode !== 0) failedXl(t);
  const out = t.stdout.lines;
  if (out.length === 0) {
    // Nothing printed: xl stopped before the line (e.g. "get_scheduler sysctl failed."), and still exited 0.
    if (t.stderr.lines.length || t.diagnostics.length) failedXl(t);
    throw outputError(t.what, 'it printed nothing and exited with 0; xl info build_id prints the build-id on one line');
  }
  if (out.length > 1) throw outputError(t.what, `it printed ${out.length} lines; xl info build_id prints one, the build-id: ${quote(out[1]!)}`, { printed: out });
  if (t.stderr.lines.length) throw outputError(t.what, `its standard error holds a line xl does not print when it gives the build-id: ${quote(t.stderr.lines[0]!)}`, { printed: t.stderr.lines });
  return buildIdValue(t, out[0]!, out[0]!);
}

const BUILD_ID_LINE = /^build_id +: (.*)$/;

/** The full `xl info`: the value of its one `build_id` line. */
export function parseXlInfoBuildId(exit: ToolExit): string {
  const t = readToolText('xl info', exit);
  if (t.exitCode !== 0) failedXl(t);
  const found = t.stdout.lines.filter((l) => l.startsWith('build_id'));
  if (found.length === 0) {
    if (t.stderr.lines.length || t.diagnostics.length) failedXl(t);
    throw outputError(t.what, `it has no build_id line (xl prints "build_id               : <hex>" last but one)${t.stdout.lines.length ? `; its last line is ${quote(t.stdout.lines.at(-1)!)}` : ': it printed nothing'}`);
  }
  if (found.length > 1) throw outputError(t.what, `it has ${found.length} build_id lines, where xl prints one: ${quote(found[1]!)}`, { printed: found });
  const m = BUILD_ID_LINE.exec(found[0]!);
  if (!m) throw outputError(t.what, `its build_id line is not "build_id <spaces>: <hex>": ${quote(found[0]!)}`, { printed: found });
  return buildIdValue(t, m[1]!, found[0]!);
}

/**
 * `xl info <field>` for another field (xen_extra, xen_major, ...): its value alone on one line.
 * xl prints, of each line starting with the argument, what follows ": ", so a field that is a
 * prefix of another (xen_version of xen_version_extra) would print two lines: refused as output
 * it does not print for one field. An empty value is returned as "" (xl prints what Xen gave).
 */
export function parseXlInfoValue(exit: ToolExit, field: string): string {
  const t = readToolText(`xl info ${field}`, exit);
  if (t.exitCode !== 0) failedXl(t);
  const out = t.stdout.lines;
  if (out.length === 0) {
    if (t.stderr.lines.length || t.diagnostics.length) failedXl(t);
    throw outputError(t.what, `it printed nothing and exited with 0; xl info ${field} prints the value on one line`);
  }
  if (out.length > 1) throw outputError(t.what, `it printed ${out.length} lines; xl info ${field} prints one: ${quote(out[1]!)}`, { printed: out });
  if (t.stderr.lines.length) throw outputError(t.what, `its standard error holds a line xl does not print when it gives the value: ${quote(t.stderr.lines[0]!)}`, { printed: t.stderr.lines });
  return out[0]!;
}

/** `xl debug-keys x`: nothing on either stream and exit 0, or xl's failure. */
export function parseXlDebugKeys(exit: ToolExit): void {
  const t = readToolText('xl debug-keys x', exit);
  if (t.exitCode !== 0) failedXl(t);
  const line = t.stdout.lines[0] ?? t.stderr.lines[0];
  if (line !== undefined) throw outputError(t.what, `it printed a line where xl debug-keys prints nothing: ${quote(line)}`, { printed: [...t.stdout.lines, ...t.stderr.lines] });
}

/** `xl dmesg`: the hypervisor's console ring, its lines as printed. */
export function parseXlDmesg(exit: ToolExit): string[] {
  const t = readToolText('xl dmesg', exit);
  if (t.exitCode !== 0) failedXl(t);
  return t.stdout.lines;
}
