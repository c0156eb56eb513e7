/**
 * Temporal's Runtime is process-wide and must be installed before the first Worker or
 * NativeConnection. We install it once with our pino logger, forward core (Rust) logs into it, and
 * take signal handling away from the SDK: fleetpatch's Shutdown stops the worker before it stops
 * the servers the worker talks to.
 */
import { Runtime } from '@temporalio/worker';
import type { Logger } from './logger.ts';
import { temporalLoggerFor } from './logger.ts';

let installed = false;

export function installTemporalRuntime(logger: Logger): void {
  if (installed) return;
  installed = true;
  const level = logger.levelVal <= 20 ? 'DEBUG' : logger.levelVal <= 30 ? 'INFO' : 'WARN';
  Runtime.install({
    logger: temporalLoggerFor(logger),
    shutdownSignals: [],
    telemetryOptions: { logging: { filter: { core: level, other: 'WARN' }, forward: {} } },
  });
}
