/**
 * The agent's learned facts on disk: <dir>/state/agent-state.json, written atomically (a private
 * temporary file in the same directory, fsynced, renamed over the old one, the directory fsynced),
 * so a power cut leaves the old facts or the new ones, never half of either. A file that does not
 * parse is refused with its path: the agent does not start from facts it cannot read.
 */
import { mkdir, open, readFile, rename, rm } from 'node:fs/promises';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { FleetpatchError } from '../errors.ts';
import { AgentStateSchema, emptyState, type AgentState } from './agent-state.ts';

export const STATE_FILE = 'agent-state.json';

export async function loadState(stateDir: string, bootId: string): Promise<AgentState> {
  const file = path.join(stateDir, STATE_FILE);
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return emptyState(bootId);
    throw new FleetpatchError('FILE_ERROR', `cannot read the agent's state ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, { file });
  }
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    throw new FleetpatchError('FILE_ERROR', `the agent's state ${file} is not JSON; move it away to start afresh (the agent then learns again from Xen's list and dump)`, { file });
  }
  const r = AgentStateSchema.safeParse(doc);
  if (!r.success) {
    const i = r.error.issues[0]!;
    throw new FleetpatchError('FILE_ERROR', `the agent's state ${file} is not the agent's (${i.path.join('.') || '(top)'}: ${i.message}); move it away to start afresh`, { file });
  }
  return r.data;
}

export async function saveState(stateDir: string, state: AgentState): Promise<void> {
  await mkdir(stateDir, { recursive: true, mode: 0o700 });
  const file = path.join(stateDir, STATE_FILE);
  const tmp = path.join(stateDir, `.${STATE_FILE}.${randomBytes(6).toString('hex')}`);
  const h = await open(tmp, 'wx', 0o600);
  try {
    await h.writeFile(`${JSON.stringify(state, null, 1)}\n`);
    await h.sync();
  } catch (e) {
    await h.close();
    await rm(tmp, { force: true });
    throw e;
  }
  await h.close();
  try {
    await rename(tmp, file);
  } catch (e) {
    await rm(tmp, { force: true });
    throw e;
  }
  const d = await open(stateDir, 'r');
  try {
    await d.sync();
  } finally {
    await d.close();
  }
}
