/**
 * The catalogue error a call refuses with: the test fails if it succeeds or throws anything else,
 * so "refused" always means refused by fleetpatch, with a code and a message to check.
 */
import { FleetpatchError } from '../../src/errors.ts';

export function refusal(fn: () => unknown): FleetpatchError {
  try {
    fn();
  } catch (e) {
    if (e instanceof FleetpatchError) return e;
    throw e;
  }
  throw new Error('expected a refusal');
}

export async function refusalOf(p: Promise<unknown>): Promise<FleetpatchError> {
  try {
    await p;
  } catch (e) {
    if (e instanceof FleetpatchError) return e;
    throw e;
  }
  throw new Error('expected a refusal');
}
