#!/usr/bin/env node
// fleetpatch is written in TypeScript and run through tsx's loader, so `npx fleetpatch` works right
// after `npm ci` with no build step that could go stale.
import { register } from 'tsx/esm/api';

register();
const { main, reportError } = await import('../src/cli/main.ts');
// An error that escapes every command (a rejected promise nobody awaited, a throw in a callback)
// is still reported in one line through the catalogue, never as Node's stack trace.
const last = (e) => {
  process.exitCode = reportError(e, { out: (l) => process.stdout.write(`${l}\n`), err: (l) => process.stderr.write(`${l}\n`), isTTY: false });
  process.exit();
};
process.on('uncaughtException', last);
process.on('unhandledRejection', last);
process.exitCode = await main(process.argv.slice(2));
