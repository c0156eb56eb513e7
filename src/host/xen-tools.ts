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
import { DEFAULT_LIMITS, runTool, type RunLimits } from './run-tool.ts';
import { assertReadableName, parseAction, parseList, parseUpload, type ActionOutcome, type ListOutcome, type UploadOutcome } from './xen-livepatch-output.ts';
import { parseXlBuildId } from './xl-info-output.ts';

/** Where Xen installs them (sbindir), and where XenServer's xapi calls them. */
export const DEFAULT_TOOL_PATHS = { xenLivepatch: '/usr/sbin/xen-livepatch', xl: '/usr/sbin/xl' } as const;

export interface XenToolsOptions extends Partial<RunLimits> {
  /** `--xen-livepatch PATH`. */
  xenLivepatch?: string;
  /** `--xl PATH`. */
  xl?: string;
  /** Where an upload's bytes are written for the tool to read (a private directory per upload); default the OS's temp dir. */
  uploadDir?: string;
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
  }

  /** Runs `work` after every upload and action queued before it has ended, whatever their outcome. */
  private oneAtATime<T>(work: () => Promise<T>): Promise<T> {
    const run = this.tail.then(work, work);
    this.tail = run.catch(() => undefined);
    return run;
  }

  /** `xen-livepatch list`. */
  async list(): Promise<ListOutcome> {
    return parseList(await runTool(this.xenLivepatch, ['list'], this.limits, 'xen-livepatch list'));
  }

  /** `xen-livepatch upload <name> <file>`, the bytes in a file of their own, removed afterwards. */
  async upload(name: string, bytes: Uint8Array): Promise<UploadOutcome> {
    assertReadableName(name);
    return this.oneAtATime(async () => {
      const dir = await mkdtemp(path.join(this.uploadDir, 'fleetpatch-upload-'));
      try {
        const file = path.join(dir, 'payload.livepatch');
        await writeFile(file, bytes, { mode: 0o600 });
        const run = await runTool(this.xenLivepatch, ['upload', name, file], this.limits, `xen-livepatch upload ${name}`);
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
    return this.oneAtATime(async () => parseAction(await runTool(this.xenLivepatch, args, this.limits, `xen-livepatch ${args.join(' ')}`), { cmd, name, nodeps }));
  }

  /** `xl info build_id`: the running hypervisor's build-id, lowercase hex. */
  async buildId(): Promise<string> {
    return parseXlBuildId(await runTool(this.xl, ['info', 'build_id'], this.limits, 'xl info build_id'));
  }
}
