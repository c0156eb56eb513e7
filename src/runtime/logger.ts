/**
 * One pino logger for the process: pretty on a terminal, JSON lines otherwise (for log shippers).
 * Temporal's Runtime logger forwards into it, so SDK and core messages share the same stream.
 */
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { pino, type DestinationStream, type Logger, type LoggerOptions } from 'pino';
import pretty from 'pino-pretty';
import { maskSecrets } from '../secrets.ts';
import type { Config } from './config.ts';

export type { Logger };

/** Every string in a log record with passwords in URLs masked, however deep (to a point). */
function masked(value: unknown, depth = 0): unknown {
  if (typeof value === 'string') return maskSecrets(value);
  if (depth > 6 || value === null || typeof value !== 'object') return value;
  if (Array.isArray(value)) return value.map((v) => masked(v, depth + 1));
  if (value instanceof Error) return { type: value.name, message: maskSecrets(value.message), ...(value.stack ? { stack: maskSecrets(value.stack) } : {}) };
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) out[k] = masked(v, depth + 1);
  return out;
}

/**
 * A command's logger. On a terminal the person reads the command's story, so only warnings and
 * errors reach the terminal; every record at LOG_LEVEL goes to `<data dir>/logs/fleetpatch.log`.
 * Elsewhere (CI, containers, log shippers) JSON lines at LOG_LEVEL go to stderr, as before.
 */
export function createCommandLogger(level: Config['logLevel'], dataDir: string, opts: { name?: string } = {}): Logger {
  if (!process.stderr.isTTY) return createLogger(level, opts);
  const dir = path.join(dataDir, 'logs');
  mkdirSync(dir, { recursive: true });
  const file = pino.destination({ dest: path.join(dir, 'fleetpatch.log'), sync: true, mkdir: true });
  const terminal = pretty({ destination: 2, colorize: true, ignore: 'pid,hostname', translateTime: 'HH:MM:ss.l', sync: true });
  if (level === 'silent') return maskingChildren(pino(baseOptions('silent', opts.name)));
  const warnOrAbove = pino.levels.values[level]! > pino.levels.values.warn! ? level : 'warn';
  return maskingChildren(pino(baseOptions(level, opts.name), pino.multistream([{ level: warnOrAbove, stream: terminal }, { level, stream: file }])));
}

/**
 * Child bindings (logger.child({ database })) are serialised once, when the child is made, past
 * logMethod; pino's bindings formatter applies to the root only. Children are made from their
 * parent by Object.create, so they inherit this `child` too.
 */
function maskingChildren(logger: Logger): Logger {
  const child = logger.child;
  logger.child = function (this: Logger, bindings, options) {
    return child.call(this, masked(bindings) as typeof bindings, options);
  } as Logger['child'];
  return logger;
}

function baseOptions(level: Config['logLevel'], name?: string): LoggerOptions {
  // A database URL in a message or a field (an error from a driver, a setting) never shows its password.
  return {
    level,
    name: name ?? 'fleetpatch',
    redact: { paths: ['token', '*.token', 'authorization', '*.authorization', 'headers.authorization', 'password', '*.password'], censor: '[redacted]' },
    hooks: {
      logMethod(args, method) {
        method.apply(this, args.map((a) => masked(a)) as Parameters<typeof method>);
      },
    },
  };
}

export function createLogger(level: Config['logLevel'], opts: { pretty?: boolean; name?: string; destination?: DestinationStream } = {}): Logger {
  const pretty = opts.pretty ?? Boolean(process.stderr.isTTY);
  const base = baseOptions(level, opts.name);
  if (opts.destination) return maskingChildren(pino(base, opts.destination));
  if (pretty) {
    return maskingChildren(
      pino({
        ...base,
        transport: { target: 'pino-pretty', options: { destination: 2, colorize: true, ignore: 'pid,hostname', translateTime: 'HH:MM:ss.l' } },
      }),
    );
  }
  return maskingChildren(pino(base, pino.destination({ dest: 2, sync: true })));
}

/** Adapts pino to Temporal's Logger interface (used by Runtime.install). */
export function temporalLoggerFor(logger: Logger) {
  const child = logger.child({ component: 'temporal' });
  const at =
    (level: 'trace' | 'debug' | 'info' | 'warn' | 'error') =>
    (message: string, meta?: Record<string, unknown>) =>
      child[level](meta ?? {}, message);
  return {
    log: (level: string, message: string, meta?: Record<string, unknown>) => {
      const l = level.toLowerCase();
      const fn = l === 'trace' || l === 'debug' || l === 'info' || l === 'warn' || l === 'error' ? l : 'info';
      child[fn](meta ?? {}, message);
    },
    trace: at('trace'),
    debug: at('debug'),
    info: at('info'),
    warn: at('warn'),
    error: at('error'),
  };
}
