#!/usr/bin/env node
// fleetpatch is written in TypeScript and run through tsx's loader, so `npx fleetpatch` works right
// after `npm ci` with no build step that could go stale.
import { register } from 'tsx/esm/api';

register();
const { main } = await import('../src/cli/main.ts');
process.exitCode = await main(process.argv.slice(2));
