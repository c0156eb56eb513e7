/**
 * Whether a worker runs a task queue now. Temporal lists a poller for minutes after its last poll
 * (a stopped worker stays listed), so a poller counts only when it polled recently: a live
 * worker's long poll is answered or renewed at least once a minute, and a stopped one never polls
 * again.
 */
import type { Client } from '@temporalio/client';

/** A live worker polled within Temporal's long-poll interval (one minute); a little more for a busy machine. */
export const POLLER_FRESH_MS = 75_000;

export interface TaskQueueWorkers {
  /** Workers that polled for workflow tasks within POLLER_FRESH_MS. */
  live: number;
  /** Workers Temporal still lists, live or not. */
  listed: number;
  /** When the most recent poll came, if Temporal lists any poller. */
  lastPoll?: Date;
}

export async function taskQueueWorkers(client: Client, taskQueue: string, now = Date.now()): Promise<TaskQueueWorkers> {
  const r = await client.workflowService.describeTaskQueue({ namespace: client.options.namespace, taskQueue: { name: taskQueue }, taskQueueType: 1 });
  const polls = (r.pollers ?? []).map((p) => (p.lastAccessTime ? Number(p.lastAccessTime.seconds ?? 0) * 1000 + Math.floor((p.lastAccessTime.nanos ?? 0) / 1e6) : 0));
  const last = polls.length > 0 ? Math.max(...polls) : undefined;
  return { live: polls.filter((t) => now - t <= POLLER_FRESH_MS).length, listed: polls.length, ...(last ? { lastPoll: new Date(last) } : {}) };
}

/** Why no worker runs the queue, in words: none ever polled, or the last poll was long ago. */
export function noWorkerWords(taskQueue: string, w: TaskQueueWorkers, now = Date.now()): string {
  if (!w.lastPoll) return `no worker polls task queue "${taskQueue}"`;
  return `no worker polls task queue "${taskQueue}" (the last poll was ${Math.round((now - w.lastPoll.getTime()) / 1000)} s ago)`;
}
