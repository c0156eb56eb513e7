/**
 * Orderly shutdown: cleanups run once, last registered first (worker before Temporal server,
 * server before the database), on normal exit of a command and on SIGINT/SIGTERM/SIGHUP (a
 * closed terminal must not leave a Temporal server and a PostgreSQL behind). A second Ctrl-C
 * (or SIGTERM) a second or more after the first exits at once.
 */
import type { Logger } from './logger.ts';

type Cleanup = { name: string; fn: () => Promise<void> };

const SIGNALS: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];
/** A repeated signal sooner than this after the first is the same request delivered twice. */
const REPEAT_MS = 1_000;

export class Shutdown {
  private readonly cleanups: Cleanup[] = [];
  private running: Promise<void> | undefined;
  private readonly abort = new AbortController();
  private signalsInstalled = false;
  private firstSignalAt = 0;

  constructor(private readonly logger: Logger) {}

  /** Aborted when a signal arrives: long-running commands stop waiting on it. */
  get signal(): AbortSignal {
    return this.abort.signal;
  }

  add(name: string, fn: () => Promise<void>): void {
    this.cleanups.push({ name, fn });
  }

  installSignalHandlers(): void {
    if (this.signalsInstalled) return;
    this.signalsInstalled = true;
    // 128 + the signal's number, as a shell reports a process that signal ended.
    const exitCode = (sig: NodeJS.Signals) => (sig === 'SIGINT' ? 130 : sig === 'SIGHUP' ? 129 : 143);
    const onSignal = (sig: NodeJS.Signals) => {
      if (this.running) {
        // One Ctrl-C often arrives several times: from the terminal to the whole process group and
        // again from a wrapper that forwards it (npx, npm, script), sometimes as SIGTERM, and the
        // terminal closing adds a SIGHUP. Only a signal a person sends later, while the cleanup
        // still runs, means "stop waiting".
        if (sig === 'SIGHUP' || Date.now() - this.firstSignalAt < REPEAT_MS) return;
        this.logger.warn(`${sig} again: exiting without waiting for cleanup`);
        process.exit(exitCode(sig));
      }
      this.firstSignalAt = Date.now();
      this.logger.info(`${sig} received: shutting down`);
      this.abort.abort(new Error(`interrupted by ${sig}`));
      void this.run().finally(() => process.exit(exitCode(sig)));
    };
    for (const sig of SIGNALS) process.on(sig, onSignal);
    // A command run in-process (tests, the demo) must not leave its handlers behind.
    this.add('signal handlers', async () => {
      for (const sig of SIGNALS) process.off(sig, onSignal);
    });
  }

  /** Runs every cleanup once, newest first; failures are logged and do not stop the rest. */
  run(): Promise<void> {
    this.running ??= (async () => {
      for (const c of this.cleanups.splice(0).reverse()) {
        try {
          await c.fn();
        } catch (e) {
          this.logger.warn({ err: (e as Error).message }, `cleanup "${c.name}" failed`);
        }
      }
    })();
    return this.running;
  }
}
