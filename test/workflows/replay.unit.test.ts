import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { Worker } from '@temporalio/worker';
import { historyFromJSON } from '@temporalio/common/lib/proto-utils.js';
import { WORKFLOWS_PATH } from '../../src/runtime/worker.ts';
import { HISTORIES_DIR } from '../support/histories.ts';

// Saved histories of representative runs (recorded by the e2e tests with
// FLEETPATCH_RECORD_HISTORIES=1) replayed against today's workflow code: a change that would
// break running rollouts fails here with a DeterminismViolationError. No server is needed.
// Every workflow type is covered: rolloutWorkflow (every path) and rollbackWorkflow.
describe('replaying saved workflow histories', async () => {
  const files = (await readdir(HISTORIES_DIR)).filter((f) => f.endsWith('.json')).sort();

  it('has histories of the representative runs', () => {
    expect(files).toEqual(
      expect.arrayContaining([
        'rollout-two-images-first-run.json',
        'rollout-budget-exceeded-rollback.json',
        'rollout-approval-gate.json',
        'rollout-pause-resume.json',
        'rollout-worker-killed.json',
        'rollout-replace.json',
        'rollout-replace-restore.json',
        'rollout-abort-rollback.json',
        'rollback.json',
      ]),
    );
  });

  it('replays every one of them without a determinism violation', { timeout: 180_000 }, async () => {
    const histories = await Promise.all(
      files.map(async (f) => {
        const saved = JSON.parse(await readFile(path.join(HISTORIES_DIR, f), 'utf8')) as { workflowId: string; history: unknown };
        return { workflowId: saved.workflowId, history: historyFromJSON(saved.history) };
      }),
    );
    const results: { workflowId: string; error?: unknown }[] = [];
    for await (const r of Worker.runReplayHistories({ workflowsPath: WORKFLOWS_PATH, replayName: 'fleetpatch-replay' }, histories)) results.push(r);
    expect(results.filter((r) => r.error).map((r) => `${r.workflowId}: ${String(r.error)}`)).toEqual([]);
    expect(results).toHaveLength(files.length);
  });
});
