#!/usr/bin/env node
// A double of Xen 4.20's xl (info, dmesg, debug-keys) over one emulated host (src/double).
import { register } from 'tsx/esm/api';

register();
const { doubleMain, processStreams } = await import('../src/double/main.ts');
process.exitCode = await doubleMain('xl', process.argv.slice(2), { env: process.env, streams: processStreams });
