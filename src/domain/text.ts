/**
 * Text that can be stored. PostgreSQL refuses NUL in text and jsonb (`\u0000 cannot be converted
 * to text`), and a lone UTF-16 surrogate has no UTF-8 form at all, so a string holding either,
 * once accepted, would fail later where it is recorded: in the middle of a rollout, far from the
 * person who sent it. Every edge (plan schema, API bodies, path and query parameters, CLI
 * arguments) refuses such text at once, naming the field. Pure (zod only).
 */
import { z } from 'zod';

/** A high surrogate without its low half after it, or a low one without its high half before it. */
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/** Why `value` cannot be stored, in words, or undefined when it can. */
export function unstorable(value: string): string | undefined {
  const nul = value.indexOf('\0');
  if (nul >= 0) return `contains a NUL character (\\u0000) at position ${nul}, which cannot be stored`;
  const lone = LONE_SURROGATE.exec(value);
  if (lone) return `contains a lone UTF-16 surrogate (\\u${lone[0].charCodeAt(0).toString(16).padStart(4, '0')}) at position ${lone.index}, which is not text and cannot be stored`;
  return undefined;
}

/**
 * A string that PostgreSQL can store; refinements chain on it like on z.string(). Text that cannot
 * be stored is refused with that one reason: the checks chained after it (lengths, patterns) are
 * not run, so a field is not also called "too long" or "not a name" for its NUL.
 */
export const StorableString = z.string().superRefine((v, ctx) => {
  const problem = unstorable(v);
  if (problem) ctx.addIssue({ code: 'custom', message: problem, continue: false });
});

/** The first string in a JSON-like value (keys included) that cannot be stored, with its path. */
export function findUnstorable(value: unknown, path: (string | number)[] = []): { path: (string | number)[]; problem: string } | undefined {
  if (typeof value === 'string') {
    const problem = unstorable(value);
    return problem ? { path, problem } : undefined;
  }
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) {
      const found = findUnstorable(value[i], [...path, i]);
      if (found) return found;
    }
    return undefined;
  }
  if (value !== null && typeof value === 'object') {
    for (const [k, v] of Object.entries(value)) {
      const keyProblem = unstorable(k);
      if (keyProblem) return { path: [...path, k], problem: `its name ${keyProblem}` };
      const found = findUnstorable(v, [...path, k]);
      if (found) return found;
    }
  }
  return undefined;
}

const NAMED_ESCAPES: Record<string, string> = { '\n': '\\n', '\r': '\\r', '\t': '\\t' };
const UNPRINTABLE = new RegExp(`[\\u0000-\\u001f\\u007f\\u2028\\u2029]|${LONE_SURROGATE.source}`, 'g');

/**
 * Text as an error message may quote it: control characters (a NUL, a newline) and lone
 * surrogates written as escapes, so the message stays one line and is itself storable (a refusal
 * is often recorded as a reason). Pairs (emoji) are kept.
 */
export function printable(value: string): string {
  return value.replace(UNPRINTABLE, (c) => NAMED_ESCAPES[c] ?? `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

/**
 * At most `max` UTF-16 units of `value`, quoted and printable, for a message that names what was
 * given (`"x\u0000y"`); a cut never splits an emoji into a lone surrogate.
 */
export function quoted(value: string, max = 40): string {
  let cut = value.length > max ? value.slice(0, max) : value;
  if (cut.length < value.length && /[\uD800-\uDBFF]$/.test(cut)) cut = cut.slice(0, -1);
  return `"${printable(cut)}"${cut.length < value.length ? '...' : ''}`;
}

/** A path as the plan's and the API's errors write it: `hosts.ids[1]`, `reason`; a hostile key is printable. */
export function formatPath(path: readonly PropertyKey[]): string {
  return path.reduce<string>((s, p) => (typeof p === 'number' ? `${s}[${p}]` : s ? `${s}.${printable(String(p))}` : printable(String(p))), '') || '(the whole value)';
}
