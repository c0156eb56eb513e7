#!/usr/bin/env node
// A double of Xen 4.20's xen-livepatch over one emulated host (src/double): run through tsx's
// loader as bin/fleetpatch.js is, so it needs no build step.
import { register } from 'tsx/esm/api';

register();
const { doubleMain, processStreams } = await import('../src/double/main.ts');
process.exitCode = await doubleMain('xen-livepatch', process.argv.slice(2), { env: process.env, streams: processStreams });
