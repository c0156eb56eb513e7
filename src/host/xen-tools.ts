/**
 * Xen's own tools on one host: `xen-livepatch` for the payloads, `xl info build_id` for the
 * hypervisor's build-id, each run as an argument vector with a timeout and bounded output
 * (run-tool.ts), its output read by the parsers (xen-livepatch-output.ts, xl-info-output.ts).
 * One action at a time: uploads and actions wait for each other in order (Xen schedules one
 * action at a time, and an agent that ran two would see EBUSY from itself); the list and the
 * build-id are read at any time, so the work of an action can be watched while it runs.
 *
 * `load` is not offered: it unloads the payload again when the apply fails, which hides the
 * state the apply left; the agent uploads and applies as two steps instead.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { ActionCmd } from '../agent/contract.ts';
import { DEFAULT_LIMITS, runTool, type RunLimits, type ToolRun } from './run-tool.ts';
import { assertReadableName, parseAction, parseList, parseUpload, type ActionOutcome, type ListOutcome, type UploadOutcome } from './xen-livepatch-output.ts';
import { parseXlBuildId, parseXlDebugKeys, parseXlDmesg, parseXlInfoValue } from './xl-info-output.ts';

/** Where Xen installs them (sbindir), and where XenServer's xapi calls them. */
export const DEFAULT_TOOL_PATHS = { xenLivepatch: '/usr/sbin/xen-livepatch', xl: '/usr/sbin/xl' } as const;

export interface XenToolsOptions extends Partial<RunLimits> {
  /** `--xen-livepatch PATH`. */
  xenLivepatch?: string;
  /** `--xl PATH`. */
  xl?: string;
  /** Where an upload's bytes are written for the tool to read (a private directory per upload); default the OS's temp dir. */
  uploadDir?: string;
  /**
   * Hears every run before its output is read: the agent's journal (fsynced before the answer).
   * `run` is what the tool printed and its exit code, or the runner's error (timeout, flood,
   * signal, missing tool).
   */
  onRun?: (record: ToolRunRecord) => Promise<void> | void;
}

export interface ToolRunRecord {
  file: string;
  args: readonly string[];
  ms: number;
  run: ToolRun | null;
  error: unknown;
}

export class XenTools {
  readonly xenLivepatch: string;
  readonly xl: string;
  readonly limits: RunLimits;
  private readonly uploadDir: string;
  /** The last upload or action, done or not: the next one starts after it. */
  private tail: Promise<unknown> = Promise.resolve();

  constructor(options: XenToolsOptions = {}) {
    this.xenLivepatch = options.xenLivepatch ?? DEFAULT_TOOL_PATHS.xenLivepatch;
    this.xl = options.xl ?? DEFAULT_TOOL_PATHS.xl;
    this.limits = {
      timeoutMs: options.timeoutMs ?? DEFAULT_LIMITS.timeoutMs,
      maxStdoutBytes: options.maxStdoutBytes ?? DEFAULT_LIMITS.maxStdoutBytes,
      maxStderrBytes: options.maxStderrBytes ?? DEFAULT_LIMITS.maxStderrBytes,
    };
    this.uploadDir = options.uploadDir ?? os.tmpdir();
    this.onRun = options.onRun;
  }

  private readonly onRun: XenToolsOptions['onRun'];

  /** runTool, heard by onRun whatever the outcome. */
  private async run(file: string, args: readonly string[], what: string): Promise<ToolRun> {
    const t0 = performance.now();
    let run: ToolRun;
    try {
      run = await runTool(file, args, this.limits, what);
    } catch (error) {
      await this.onRun?.({ file, args, ms: performance.now() - t0, run: null, error });
      throw error;
    }
    await this.onRun?.({ file, args, ms: performance.now() - t0, run, error: null });
    return run;
  }

  /** Runs `work` after every upload and action queued before it has ended, whatever their outcome. */
  private oneAtATime<T>(work: () => Promise<T>): Promise<T> {
    const run = this.tail.then(work, work);
    this.tail = run.catch(() => undefined);
    return run;
  }

  /** `xen-livepatch list`. */
  async list(): Promise<ListOutcome> {
    return parseList(await this.run(this.xenLivepatch, ['list'], 'xen-livepatch list'));
  }

  /** `xen-livepatch upload <name> <file>`, the bytes in a file of their own, removed afterwards. */
  async upload(name: string, bytes: Uint8Array): Promise<UploadOutcome> {
    assertReadableName(name);
    return this.oneAtATime(async () => {
      const dir = await mkdtemp(path.join(this.uploadDir, 'fleetpatch-upload-'));
      try {
        const file = path.join(dir, 'payload.livepatch');
        await writeFile(file, bytes, { mode: 0o600 });
        const run = await this.run(this.xenLivepatch, ['upload', name, file], `xen-livepatch upload ${name}`);
        return parseUpload(run, { name, file });
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    });
  }

  /**
   * `xen-livepatch apply|revert|replace|unload <name>`; `nodeps` adds `--nodeps`, which only
   * apply takes (Xen's APPLY_NODEPS flag means nothing to the others), so it is ignored for them.
   */
  async action(cmd: ActionCmd, name: string, options: { nodeps?: boolean } = {}): Promise<ActionOutcome> {
    assertReadableName(name);
    const nodeps = cmd === 'apply' && options.nodeps === true;
    const args = [cmd, name, ...(nodeps ? ['--nodeps'] : [])];
    return this.oneAtATime(async () => parseAction(await this.run(this.xenLivepatch, args, `xen-livepatch ${args.join(' ')}`), { cmd, name, nodeps }));
  }

  /** `xl info build_id`: the running hypervisor's build-id, lowercase hex. */
  async buildId(): Promise<string> {
    return parseXlBuildId(await this.run(this.xl, ['info', 'build_id'], 'xl info build_id'));
  }

  /** `xl info <field>`: one value of the hypervisor's (xen_extra is what xen_extra_version() returns). */
  async info(field: string): Promise<string> {
    return parseXlInfoValue(await this.run(this.xl, ['info', field], `xl info ${field}`), field);
  }

  /**
   * Xen's livepatch debug dump: `xl debug-keys x` has the hypervisor print it on its console,
   * `xl dmesg` reads the console back (the dump is its last part; see agent-state.ts parseDump).
   * One at a time with actions: two dumps at once would interleave on the console.
   */
  async dump(): Promise<string[]> {
    return this.oneAtATime(async () => {
      parseXlDebugKeys(await this.run(this.xl, ['debug-keys', 'x'], 'xl debug-keys x'));
      return parseXlDmesg(await this.run(this.xl, ['dmesg'], 'xl dmesg'));
    });
  }
}
