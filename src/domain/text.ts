/**
 * Text that can be stored. PostgreSQL refuses NUL in text and jsonb (`\u0000 cannot be converted
 * to text`), and a lone UTF-16 surrogate has no UTF-8 form at all, so a string holding either,
 * once accepted, would fail later where it is recorded: in the middle of a rollout, far from the
 * person who sent it. Every edge (plan schema, API bodies, path and query parameters, CLI
 * arguments) refuses such text at once, naming the field. Pure (zod only).
 */
import { z } from 'zod';

/** Why `value` cannot be stored, in words, or undefined when it can. */
export function unstorable(value: string): string | undefined {
  const nul = value.indexOf('\0');
  if (nul >= 0) return `contains a NUL character (\\u0000) at position ${nul}, which cannot be stored`;
  if (!value.isWellFormed()) {
    for (let i = 0; i < value.length; i++) {
      const c = value.charCodeAt(i);
      if (c >= 0xd800 && c <= 0xdbff) {
        const next = value.charCodeAt(i + 1);
        if (next >= 0xdc00 && next <= 0xdfff) {
          i++;
          continue;
        }
      } else if (!(c >= 0xdc00 && c <= 0xdfff)) continue;
      return `contains a lone UTF-16 surrogate (\\u${c.toString(16).padStart(4, '0')}) at position ${i}, which is not text and cannot be stored`;
    }
  }
  return undefined;
}

/** A string that PostgreSQL can store; refinements chain on it like on z.string(). */
export const StorableString = z.string().superRefine((v, ctx) => {
  const problem = unstorable(v);
  if (problem) ctx.addIssue({ code: 'custom', message: problem });
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

/** A path as the plan's and the API's errors write it: `hosts.ids[1]`, `reason`. */
export function formatPath(path: (string | number)[]): string {
  return path.reduce<string>((s, p) => (typeof p === 'number' ? `${s}[${p}]` : s ? `${s}.${p}` : p), '') || '(the whole value)';
}
