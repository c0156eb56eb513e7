/**
 * The workflow bundle, made once per version of the code and kept in the data dir. Bundling with
 * webpack takes seconds and a few hundred MB; doing it in a short-lived child process keeps that
 * memory out of the long-running worker, and the cache makes a restarted worker (after a crash or
 * a deploy of unchanged workflows) start polling at once.
 *
 * Run as a script (`node --import tsx workflow-bundle.ts <out>`), it bundles into <out>.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readdir, readFile, rename, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { FleetpatchError } from '../errors.ts';
import type { Logger } from './logger.ts';
import { WORKFLOWS_PATH } from './worker.ts';

const HERE = fileURLToPath(import.meta.url);
const ROOT = path.resolve(path.dirname(HERE), '..', '..');

/** Everything the bundle can contain: workflow code and the pure modules it imports. */
async function sourceDigest(): Promise<string> {
  const hash = createHash('sha256');
  for (const dir of ['workflows', 'src', 'activities']) {
    const files = (await readdir(path.join(ROOT, dir), { recursive: true })).filter((f) => f.endsWith('.ts')).sort();
    for (const f of files) hash.update(f).update('\0').update(await readFile(path.join(ROOT, dir, f))).update('\0');
  }
  hash.update(JSON.parse(await readFile(path.join(ROOT, 'node_modules', '@temporalio', 'workflow', 'package.json'), 'utf8')).version as string);
  return hash.digest('hex').slice(0, 16);
}

/** The path of an up-to-date bundle in `cacheDir`, made in a child process when missing. */
export async function workflowBundle(cacheDir: string, logger: Logger): Promise<string> {
  const file = path.join(cacheDir, `workflows-${await sourceDigest()}.js`);
  if (existsSync(file)) return file;
  await mkdir(cacheDir, { recursive: true });
  const started = Date.now();
  const tmp = `${file}.${process.pid}.tmp`;
  await new Promise<void>((resolve, reject) => {
    // tsx resolved from here, not from the caller's working directory.
    const child = spawn(process.execPath, ['--import', import.meta.resolve('tsx'), HERE, tmp], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('exit', (code) => (code === 0 ? resolve() : reject(new FleetpatchError('TOOL_MISSING', `bundling the workflow code failed: ${stderr.trim().split('\n').slice(-5).join(' ')}`))));
  });
  await rename(tmp, file);
  logger.info({ file, ms: Date.now() - started }, 'workflow code bundled');
  return file;
}

if (process.argv[1] && pathToFileURL(process.argv[1]).href === import.meta.url) {
  const { bundleWorkflowCode } = await import('@temporalio/worker');
  const quiet = { log: () => {}, trace: () => {}, debug: () => {}, info: () => {}, warn: (m: string) => console.error(m), error: (m: string) => console.error(m) };
  const { code } = await bundleWorkflowCode({ workflowsPath: WORKFLOWS_PATH, logger: quiet });
  await writeFile(process.argv[2]!, code);
}
