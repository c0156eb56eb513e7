/**
 * Saved workflow histories for replay tests. Recording happens only when
 * FLEETPATCH_RECORD_HISTORIES=1 (e.g. `FLEETPATCH_RECORD_HISTORIES=1 npm run test:e2e`): the e2e
 * tests then save the histories of the representative runs they make, and
 * test/workflows/replay.unit.test.ts replays every saved one against the current workflow code.
 */
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Client } from '@temporalio/client';
import { historyToJSON } from '@temporalio/common/lib/proto-utils.js';

export const HISTORIES_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', 'workflows', 'histories');

export const recordingHistories = () => process.env.FLEETPATCH_RECORD_HISTORIES === '1';

/** Saves a workflow's history (its first run when `firstRun`, for runs that continued as new). */
export async function saveHistory(client: Client, workflowId: string, name: string, opts: { firstRun?: boolean } = {}): Promise<void> {
  if (!recordingHistories()) return;
  let handle = client.workflow.getHandle(workflowId);
  if (opts.firstRun) {
    const first = (await handle.describe()).raw.workflowExecutionInfo?.firstRunId;
    if (first) handle = client.workflow.getHandle(workflowId, first);
  }
  const history = await handle.fetchHistory();
  // The workflow id is not in the history itself, and the workflows derive child ids from it.
  const json = `{"workflowId":${JSON.stringify(workflowId)},"history":${historyToJSON(history)}}\n`;
  await writeFile(path.join(HISTORIES_DIR, `${name}.json`), json);
}
