/**
 * Payload parse throughput over the real fixture payloads (gcc/ld-built, as in Xen's tests),
 * next to running `readelf -n` once per payload on the same files.
 */
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { promisify } from 'node:util';
import { checkUpload, parsePayload, readImage } from '../src/payload/index.ts';
import { buildFixtures } from '../test/fixtures/toolchain.ts';
import type { Bench } from './report.ts';

const run = promisify(execFile);
const PARSE_SECONDS = 2;
const READELF_ROUNDS = 5;

export default (async (ctx) => {
  const fx = await buildFixtures();
  const files = Object.values(fx.payloads);
  const payloads = await Promise.all(files.map(async (p) => new Uint8Array(await readFile(p.path))));
  const bytesPerRound = payloads.reduce((n, p) => n + p.length, 0);
  const image = readImage(new Uint8Array(await readFile(fx.images.xen.path)));
  ctx.log(`${payloads.length} fixture payloads, ${bytesPerRound} bytes per round (${files.map((f) => f.name).join(', ')})`);

  // Warm up the JIT, then parse the whole set round after round for a fixed time.
  for (let i = 0; i < 200; i++) for (const p of payloads) parsePayload(p);
  let parsed = 0;
  let bytes = 0;
  const started = performance.now();
  while (performance.now() - started < PARSE_SECONDS * 1000) {
    for (const p of payloads) {
      parsePayload(p);
      parsed++;
      bytes += p.length;
    }
  }
  const parseSeconds = (performance.now() - started) / 1000;
  const parseRate = parsed / parseSeconds;
  ctx.report({ name: 'payload parse throughput', value: parseRate, unit: 'payloads/s', note: `${parsed} parses of the ${payloads.length} fixtures in ${parseSeconds.toFixed(1)} s, all of Xen's payload-only checks` });
  ctx.report({ name: 'payload parse throughput (bytes)', value: bytes / parseSeconds / 1e6, unit: 'MB/s' });

  // The whole upload check against the image (the three payloads that pass and the four that fail).
  let checked = 0;
  const checkStarted = performance.now();
  while (performance.now() - checkStarted < PARSE_SECONDS * 1000) {
    for (let i = 0; i < payloads.length; i++) {
      try {
        checkUpload({ name: files[i]!.name, bytes: payloads[i]!, image });
      } catch {
        // Refusals are part of the work measured.
      }
      checked++;
    }
  }
  ctx.report({ name: 'upload check throughput', value: checked / ((performance.now() - checkStarted) / 1000), unit: 'payloads/s', note: 'checkUpload against the fixture xen-syms, nothing loaded' });

  // readelf -n, one process per payload, on the same files.
  let runs = 0;
  let readelfBytes = 0;
  const readelfStarted = performance.now();
  for (let round = 0; round < READELF_ROUNDS; round++) {
    for (let i = 0; i < files.length; i++) {
      const { stdout } = await run('readelf', ['-n', files[i]!.path]);
      if (!stdout.includes(files[i]!.buildId)) throw new Error(`readelf -n did not show the build-id of ${files[i]!.name}`);
      runs++;
      readelfBytes += payloads[i]!.length;
    }
  }
  const readelfSeconds = (performance.now() - readelfStarted) / 1000;
  const readelfRate = runs / readelfSeconds;
  ctx.report({ name: 'readelf -n, one process per payload', value: readelfRate, unit: 'payloads/s', note: `${runs} runs in ${readelfSeconds.toFixed(1)} s` });
  ctx.report({ name: 'readelf -n, one process per payload (bytes)', value: readelfBytes / readelfSeconds / 1e6, unit: 'MB/s' });
  ctx.report({ name: 'parse vs readelf -n', value: parseRate / readelfRate, unit: 'x faster', note: 'in-process full parse and checks vs. spawning readelf for the notes only' });
}) satisfies Bench;
