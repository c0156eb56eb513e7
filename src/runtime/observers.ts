/**
 * Optional observers of what a worker does, for its metrics: hypervisor actions (how long an
 * APPLY, REPLACE or REVERT took until the host reported its outcome), event-store appends (how
 * long a group commit took, how many events it wrote) and webhook deliveries. The code that acts
 * calls these when they are set; `fleetpatch worker --metrics-port` sets them (worker-metrics.ts).
 * Nothing here may throw into the caller. Pure: no imports.
 */
export interface Observers {
  hypervisorAction?: (action: string, seconds: number, outcome: string) => void;
  eventAppend?: (seconds: number, events: number, outcome: 'ok' | 'unreachable' | 'error') => void;
  webhookDelivery?: (seconds: number, outcome: 'delivered' | 'failed') => void;
}

export const observers: Observers = {};

/** Calls an observer, swallowing anything it throws: metrics never fail the work they measure. */
export function observe<K extends keyof Observers>(name: K, ...args: Parameters<NonNullable<Observers[K]>>): void {
  try {
    (observers[name] as ((...a: unknown[]) => void) | undefined)?.(...args);
  } catch {
    // a broken observer is not the work's problem
  }
}
