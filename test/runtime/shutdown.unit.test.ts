import { afterEach, describe, expect, it, vi } from 'vitest';
import { Shutdown } from '../../src/runtime/shutdown.ts';
import { createLogger } from '../../src/runtime/logger.ts';

describe('Shutdown on a signal', () => {
  afterEach(() => vi.restoreAllMocks());

  for (const [sig, code] of [['SIGINT', 130], ['SIGTERM', 143], ['SIGHUP', 129]] as const) {
    it(`${sig} (${sig === 'SIGHUP' ? 'the terminal was closed' : 'stop'}): runs every cleanup, newest first, then exits ${code}`, async () => {
      const exit = vi.spyOn(process, 'exit').mockImplementation((() => undefined) as never);
      const shutdown = new Shutdown(createLogger('silent'));
      const ran: string[] = [];
      shutdown.installSignalHandlers();
      shutdown.add('database', async () => void ran.push('database'));
      shutdown.add('temporal', async () => void ran.push('temporal'));
      const before = process.listenerCount(sig);
      process.emit(sig, sig);
      await vi.waitFor(() => expect(exit).toHaveBeenCalledWith(code));
      expect(ran).toEqual(['temporal', 'database']);
      expect(shutdown.signal.aborted).toBe(true);
      // Its handlers went with the cleanups: an in-process command leaves none behind.
      expect(process.listenerCount(sig)).toBe(before - 1);
    });
  }
});
