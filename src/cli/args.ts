import { parseArgs, type ParseArgsConfig } from 'node:util';
import { FleetpatchError } from '../errors.ts';
import { printable, quoted, unstorable } from '../domain/text.ts';

type Options = NonNullable<ParseArgsConfig['options']>;

/**
 * node:util parseArgs, with its TypeErrors turned into one USAGE line naming the bad option
 * instead of a stack trace. Every value and positional is text that may be recorded (a reason, a
 * name, a host id), so one that PostgreSQL cannot store (a NUL, a lone surrogate: only a caller
 * in the same process can pass them, the kernel's argv cannot) is refused here, naming the option
 * or the argument, before any command looks at it.
 */
export function parseCommandArgs<O extends Options>(args: string[], options: O, command: string) {
  let parsed;
  try {
    parsed = parseArgs({ args, options, allowPositionals: true, strict: true, tokens: true });
  } catch (e) {
    const message = e instanceof Error ? e.message : String(e);
    throw new FleetpatchError('USAGE', `${command}: ${printable(message)}`);
  }
  for (const token of parsed.tokens) {
    const value = token.kind === 'option' ? token.value : token.kind === 'positional' ? token.value : undefined;
    const problem = value === undefined ? undefined : unstorable(value);
    if (!problem) continue;
    const what = token.kind === 'option' ? `--${token.name}` : `argument ${positionalNumber(parsed.tokens, token.index)} (${quoted(value!)})`;
    throw new FleetpatchError('USAGE', `${command}: ${what} ${problem}`);
  }
  const { tokens: _tokens, ...result } = parsed;
  return result;
}

/** Which positional (1, 2, ...) the token at argv index `index` is. */
function positionalNumber(tokens: readonly { kind: string; index: number }[], index: number): number {
  return tokens.filter((t) => t.kind === 'positional' && t.index <= index).length;
}

/** A required positional argument, or a USAGE error naming it. */
export function requirePositional(positionals: string[], index: number, what: string, command: string): string {
  const value = positionals[index];
  if (value === undefined || value === '') throw new FleetpatchError('USAGE', `${command}: missing ${what}`);
  return value;
}

/**
 * A whole number given as an option, within [min, max]; undefined when the option is absent.
 * Digits only (no sign, exponent, hex or spaces), so "1e3", "0x10" and " 5" are refused, and
 * the bounds keep it exact (below 2^53) and within what the command can use.
 */
export function boundedInteger(value: string | undefined, flag: string, min: number, max: number, command: string): number | undefined {
  if (value === undefined) return undefined;
  const n = /^\d{1,16}$/.test(value) ? Number(value) : NaN;
  if (!(n >= min && n <= max)) throw new FleetpatchError('USAGE', `${command}: ${flag} must be a whole number from ${min} to ${max}, not "${value.slice(0, 40)}"`);
  return n;
}

/**
 * A text option of 1 to `max` characters that can be stored (what the event catalogue records);
 * also for a value that did not come through parseCommandArgs (a default from the environment).
 */
export function boundedText(value: string | undefined, flag: string, max: number, command: string): string | undefined {
  if (value === undefined) return undefined;
  if (value === '') throw new FleetpatchError('USAGE', `${command}: ${flag} is empty`);
  const problem = unstorable(value);
  if (problem) throw new FleetpatchError('USAGE', `${command}: ${flag} ${problem}`);
  if (value.length > max) throw new FleetpatchError('USAGE', `${command}: ${flag} is ${value.length} characters long; at most ${max} are recorded`);
  return value;
}

/** An ISO 8601 instant (2025-03-01T10:00:00Z), as the store reads it. */
export function isoInstant(value: string | undefined, flag: string, command: string): string | undefined {
  if (value === undefined) return undefined;
  const ms = /^\d{4}-\d{2}-\d{2}/.test(value) ? Date.parse(value) : NaN;
  if (!Number.isFinite(ms)) throw new FleetpatchError('USAGE', `${command}: ${flag} must be an ISO 8601 time such as 2025-03-01T10:00:00Z, not "${value.slice(0, 40)}"`);
  return value;
}
