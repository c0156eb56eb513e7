import { parseArgs, type ParseArgsConfig } from 'node:util';
import { FleetpatchError } from '../errors.ts';

type Options = NonNullable<ParseArgsConfig['options']>;

/**
 * node:util parseArgs, with its TypeErrors turned into one USAGE line naming the bad option
 * instead of a stack trace.
 */
export function parseCommandArgs<O extends Options>(args: string[], options: O, command: string) {
  try {
    return parseArgs({ args, options, allowPositionals: true, strict: true });
  } catch (e) {
    const message = e instanceof Error ? e.message : String(e);
    throw new FleetpatchError('USAGE', `${command}: ${message}`);
  }
}

/** A required positional argument, or a USAGE error naming it. */
export function requirePositional(positionals: string[], index: number, what: string, command: string): string {
  const value = positionals[index];
  if (value === undefined || value === '') throw new FleetpatchError('USAGE', `${command}: missing ${what}`);
  return value;
}
