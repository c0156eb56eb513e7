/**
 * The host's own journal, <dir>/journal.jsonl: one JSON object per line, appended and fsynced
 * before the agent answers, so a host can be audited on its own, whatever the control plane
 * recorded (or lost, or was made to say). Every request (who sent it: the worker's certificate
 * name), every tool run (argv, exit code, what it printed, bounded), every refusal, every answer.
 * Lines are only ever appended; `fleetpatch agent journal` prints them for people.
 */
import { open, readFile, type FileHandle } from 'node:fs/promises';
import { z } from 'zod';
import { FleetpatchError } from '../errors.ts';

/** What a tool printed is kept up to this many bytes per stream: enough for every message xen-livepatch has, not a flood. */
export const JOURNAL_OUTPUT_BYTES = 4096;

export const JournalEntrySchema = z.discriminatedUnion('kind', [
  z.object({ kind: z.literal('start'), at: z.string(), hostId: z.string(), listen: z.string(), transport: z.enum(['mtls', 'insecure-http']), xenLivepatch: z.string(), xl: z.string(), trustedKeys: z.array(z.string()) }),
  z.object({ kind: z.literal('request'), at: z.string(), req: z.number().int(), who: z.string(), method: z.string(), path: z.string() }),
  z.object({
    kind: z.literal('tool'),
    at: z.string(),
    req: z.number().int(),
    argv: z.array(z.string()),
    exitCode: z.number().int().nullable(),
    /** Set when the run did not end with an exit code: timeout, flood, signal, missing tool. */
    error: z.string().optional(),
    stdout: z.string(),
    stderr: z.string(),
    ms: z.number(),
  }),
  z.object({ kind: z.literal('refusal'), at: z.string(), req: z.number().int(), code: z.string(), message: z.string() }),
  z.object({ kind: z.literal('answer'), at: z.string(), req: z.number().int(), status: z.number().int(), summary: z.string().optional() }),
]);
export type JournalEntry = z.infer<typeof JournalEntrySchema>;

/** Output decoded for the journal: lossy UTF-8, cut at the bound with the cut said. */
export function boundedOutput(bytes: Uint8Array | string): string {
  const buf = typeof bytes === 'string' ? Buffer.from(bytes) : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (buf.length <= JOURNAL_OUTPUT_BYTES) return buf.toString('utf8');
  return `${buf.subarray(0, JOURNAL_OUTPUT_BYTES).toString('utf8')}… (${buf.length - JOURNAL_OUTPUT_BYTES} more bytes)`;
}

/** One line of the journal: the entry as JSON (a NUL or a lone surrogate a tool printed is escaped by JSON itself), and a newline. */
export function journalLine(entry: JournalEntry): string {
  return `${JSON.stringify(entry)}\n`;
}

export class HostJournal {
  private tail: Promise<void> = Promise.resolve();

  private constructor(
    readonly file: string,
    private readonly handle: FileHandle,
  ) {}

  /** Opens (creating, 0600) the journal for appending. */
  static async open(file: string): Promise<HostJournal> {
    return new HostJournal(file, await open(file, 'a', 0o600));
  }

  /** Appends the entry and waits until it is on disk; appends happen in call order. */
  append(entry: JournalEntry): Promise<void> {
    const line = journalLine(entry);
    const run = this.tail.then(async () => {
      await this.handle.write(line);
      await this.handle.datasync();
    });
    // A failed write fails its own request; the next one still tries.
    this.tail = run.catch(() => undefined);
    return run;
  }

  async close(): Promise<void> {
    await this.tail;
    await this.handle.close();
  }
}

/**
 * The journal's entries from `since` on (an ISO time). A line that is not an entry (a torn last
 * write after a power cut, an edit by hand) is kept as an entry of its own kind, never skipped.
 */
export async function readJournal(file: string, since?: string): Promise<({ line: number } & (JournalEntry | { kind: 'unreadable'; text: string }))[]> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new FleetpatchError(code === 'ENOENT' ? 'ARGUMENT' : 'FILE_ERROR', `cannot read the host journal ${file}: ${code ?? (e as Error).message}`, { file });
  }
  const sinceMs = since ? Date.parse(since) : -Infinity;
  const out: ({ line: number } & (JournalEntry | { kind: 'unreadable'; text: string }))[] = [];
  text.split('\n').forEach((raw, i) => {
    if (raw === '') return;
    let entry: JournalEntry | undefined;
    try {
      const r = JournalEntrySchema.safeParse(JSON.parse(raw));
      if (r.success) entry = r.data;
    } catch {
      // Reported below as unreadable.
    }
    if (!entry) {
      out.push({ line: i + 1, kind: 'unreadable', text: raw.slice(0, 200) });
      return;
    }
    if (Date.parse(entry.at) >= sinceMs) out.push({ line: i + 1, ...entry });
  });
  return out;
}

/** One entry as a line for people. */
export function describeEntry(e: { line: number } & (JournalEntry | { kind: 'unreadable'; text: string })): string {
  switch (e.kind) {
    case 'unreadable':
      return `line ${e.line}: not a journal entry: ${JSON.stringify(e.text)}`;
    case 'start':
      return `${e.at} start   ${e.hostId} on ${e.listen} (${e.transport}), ${e.xenLivepatch}, ${e.xl}, keys ${e.trustedKeys.join(', ') || 'none'}`;
    case 'request':
      return `${e.at} #${e.req} ${e.method} ${e.path} by ${e.who}`;
    case 'tool': {
      const said = [e.stdout, e.stderr].filter(Boolean).join(' | ').replace(/\n+$/g, '').replace(/\n/g, ' / ');
      return `${e.at} #${e.req}   ${e.argv.join(' ')} -> ${e.error ?? `exit ${e.exitCode}`} (${Math.round(e.ms)} ms)${said ? `: ${said}` : ''}`;
    }
    case 'refusal':
      return `${e.at} #${e.req}   refused ${e.code}: ${e.message}`;
    case 'answer':
      return `${e.at} #${e.req}   answered ${e.status}${e.summary ? ` ${e.summary}` : ''}`;
  }
}
