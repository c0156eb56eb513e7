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

  it('one Ctrl-C delivered several times (terminal, npx forwarding it as SIGTERM, the terminal closing) lets the cleanup finish', async () => {
    const exit = vi.spyOn(process, 'exit').mockImplementation((() => undefined) as never);
    const shutdown = new Shutdown(createLogger('silent'));
    let release!: () => void;
    const slow = new Promise<void>((r) => (release = r));
    const ran: string[] = [];
    shutdown.installSignalHandlers();
    shutdown.add('database', async () => void ran.push('database'));
    shutdown.add('temporal', async () => {
      await slow;
      ran.push('temporal');
    });
    process.emit('SIGINT', 'SIGINT');
    process.emit('SIGTERM', 'SIGTERM');
    process.emit('SIGINT', 'SIGINT');
    process.emit('SIGHUP', 'SIGHUP');
    expect(exit).not.toHaveBeenCalled();
    release();
    await vi.waitFor(() => expect(exit).toHaveBeenCalledWith(130));
    expect(exit).toHaveBeenCalledTimes(1);
    expect(ran).toEqual(['temporal', 'database']);
  });

  it('a second Ctrl-C a moment later, while the cleanup hangs, exits at once', async () => {
    const exit = vi.spyOn(process, 'exit').mockImplementation((() => undefined) as never);
    const sigs = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;
    const before = new Map(sigs.map((sig) => [sig, process.listeners(sig)]));
    vi.useFakeTimers({ toFake: ['Date'] });
    try {
      const shutdown = new Shutdown(createLogger('silent'));
      shutdown.installSignalHandlers();
      shutdown.add('stuck', () => new Promise<void>(() => undefined));
      process.emit('SIGINT', 'SIGINT');
      vi.setSystemTime(Date.now() + 1_500);
      process.emit('SIGINT', 'SIGINT');
      expect(exit).toHaveBeenCalledWith(130);
    } finally {
      vi.useRealTimers();
      // The stuck cleanup never removes its handlers; take off only what this test added.
      for (const sig of sigs) for (const l of process.listeners(sig)) if (!before.get(sig)!.includes(l)) process.off(sig, l);
    }
  });
});
