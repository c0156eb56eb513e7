/**
 * The import rules of docs/architecture.md, checked: the real tree breaks none of them, and each
 * rule really fires on a tree that breaks it (so a rule that matches nothing cannot pass silently).
 * dependency-cruiser runs in this process, through its API, with the options `npm run lint:deps`
 * reads from .dependency-cruiser.cjs: a unit test spawns nothing.
 */
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { cruise as depcruise, type ICruiseResult } from 'dependency-cruiser';
import extractDepcruiseOptions from 'dependency-cruiser/config-utl/extract-depcruise-options';
import extractTSConfig from 'dependency-cruiser/config-utl/extract-ts-config';
import { afterAll, describe, expect, it } from 'vitest';

const ROOT = resolve(import.meta.dirname, '..');
const CONFIG = join(ROOT, '.dependency-cruiser.cjs');

interface Violation {
  from: string;
  to: string;
  rule: { name: string };
}

async function cruise(cwd: string, roots: string[]): Promise<{ violations: Violation[]; cruised: number }> {
  const options = await extractDepcruiseOptions(CONFIG);
  const result = await depcruise(
    roots,
    // A worktree's node_modules is a symlink to another checkout's: the rules name node_modules/...,
    // so module paths are kept as imported, not resolved through the link.
    { ...options, baseDir: cwd, preserveSymlinks: true, outputType: 'json' },
    {},
    { tsConfig: extractTSConfig(join(cwd, 'tsconfig.json')) },
  );
  const report = (typeof result.output === 'string' ? JSON.parse(result.output) : result.output) as ICruiseResult;
  return { violations: report.summary.violations as Violation[], cruised: report.summary.totalCruised };
}

describe('architecture', () => {
  it('the source tree breaks none of the import rules', async () => {
    const { violations, cruised } = await cruise(ROOT, ['src', 'activities', 'workflows', 'bin']);
    expect(cruised).toBeGreaterThan(100);
    expect(violations.map((v) => `${v.rule.name}: ${v.from} -> ${v.to}`)).toEqual([]);
  }, 120_000);

  const scratch: string[] = [];
  afterAll(async () => {
    for (const d of scratch) await rm(d, { recursive: true, force: true });
  });

  it('each rule fires on a tree that breaks it', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'fp-arch-'));
    scratch.push(dir);
    const files: Record<string, string> = {
      'tsconfig.json': JSON.stringify({ compilerOptions: { module: 'nodenext', allowImportingTsExtensions: true, noEmit: true } }),
      // a pure core reaching for the file system
      'src/rollout/waves.ts': "import { readFileSync } from 'node:fs';\nexport const w = readFileSync;\n",
      // infrastructure importing the control layer, which imports the front end
      'src/runtime/config.ts': "import { steer } from '../control/steer.ts';\nexport const c = steer;\n",
      'src/control/steer.ts': "import { cmd } from '../cli/main.ts';\nexport const steer = cmd;\n",
      'src/cli/main.ts': 'export const cmd = 1;\n',
      // workflow code importing activity code (not just its types)
      'workflows/rollout.ts': "import { patchBatch } from '../activities/batch.ts';\nexport const r = patchBatch;\n",
      'activities/batch.ts': "import { r } from '../workflows/other.ts';\nexport const patchBatch = r;\n",
      'workflows/other.ts': 'export const r = 1;\n',
      // the agent reaching into the emulator's state machine
      'src/agent/client.ts': "import { sm } from '../emulator/state-machine.ts';\nexport const a = sm;\n",
      'src/emulator/state-machine.ts': 'export const sm = 1;\n',
      // the engine reaching for the dom0 agent, and the dom0 agent asking the emulator
      'activities/host-engine.ts': "import { XenTools } from '../src/host/xen-tools.ts';\nexport const e = XenTools;\n",
      'src/host/xen-tools.ts': "import { f } from '../emulator/fleet.ts';\nexport const XenTools = f;\n",
      'src/emulator/fleet.ts': 'export const f = 1;\n',
      // a tool double asking the emulator instead of its host, and the agent using a double
      'src/double/xl.ts': "import { f } from '../emulator/fleet.ts';\nexport const xl = f;\n",
      'src/agent/live-state.ts': "import { xl } from '../double/xl.ts';\nexport const l = xl;\n",
      // a cycle
      'src/events/a.ts': "import { b } from './b.ts';\nexport const a = b;\n",
      'src/events/b.ts': "import { a } from './a.ts';\nexport const b = () => a;\n",
    };
    for (const [path, text] of Object.entries(files)) {
      await mkdir(dirname(join(dir, path)), { recursive: true });
      await writeFile(join(dir, path), text);
    }
    const { violations } = await cruise(dir, ['src', 'activities', 'workflows']);
    const fired = new Set(violations.map((v) => v.rule.name));
    expect([...fired].sort()).toEqual(
      [
        'activities-do-not-import-workflows',
        'control-sits-above-the-engine',
        'no-cycles',
        'nothing-imports-the-front-ends',
        'only-the-front-ends-import-the-host-side',
        'only-the-front-ends-import-the-tool-doubles',
        'only-the-emulator-imports-the-state-machine',
        'pure-cores-import-no-node-modules',
        'runtime-is-infrastructure-only',
        'the-agent-side-does-not-import-the-emulator',
        'the-host-side-imports-the-contract-and-below',
        'the-tool-doubles-stand-on-the-agent-client',
        'workflows-import-pure-modules-and-activity-types',
      ].sort(),
    );
  }, 120_000);
});
