/**
 * fleetpatch's import rules, checked in `npm test` (test/architecture.unit.test.ts) and by
 * `npm run lint:deps`. docs/architecture.md states them in words; this file is where they live.
 *
 * Layers, top to bottom: bin, cli, api -> app -> control -> workflows -> activities -> emulator,
 * agent, events, payload, rollout, runtime -> errors. Arrows point down only. Beside them, host
 * (the dom0 side of the agent contract), imported only by app and cli, and double (doubles of
 * Xen's tools over an emulated host, on top of the agent client), run as executables.
 */
/** @type {import('dependency-cruiser').IConfiguration} */
module.exports = {
  forbidden: [
    {
      name: 'no-cycles',
      severity: 'error',
      comment: 'Modules that import each other cannot be understood, tested or moved one at a time.',
      from: { path: '^(src|activities|workflows)/' },
      to: { circular: true },
    },
    {
      name: 'workflows-import-pure-modules-and-activity-types',
      severity: 'error',
      comment:
        'Workflow code runs in a deterministic sandbox and is bundled on its own: it may import Temporal workflow APIs, other workflow modules, the pure rollout planning, and activity TYPES (never their code).',
      from: { path: '^workflows/' },
      to: {
        pathNot: ['^workflows/', '^src/rollout/', '^node_modules/@temporalio/(workflow|common)/', '^src/errors\\.ts$'],
        dependencyTypesNot: ['type-only'],
      },
    },
    {
      name: 'nothing-imports-the-front-ends',
      severity: 'error',
      comment: 'The CLI, the HTTP API and the composition root sit on top: nothing below imports them.',
      from: { path: '^(src/(?!cli/|api/|app/)|activities/|workflows/)' },
      to: { path: '^src/(cli|api|app)/' },
    },
    {
      name: 'control-sits-above-the-engine',
      severity: 'error',
      comment: 'src/control (starting and steering rollouts, for the CLI and the API) uses the engine; the engine never uses it.',
      from: { path: '^(src/(events|rollout|payload|agent|emulator|runtime|domain|access)/|activities/|workflows/)' },
      to: { path: '^src/control/' },
    },
    {
      name: 'only-the-emulator-imports-the-state-machine',
      severity: 'error',
      comment: "The Xen state machine is the emulator's core; everything else speaks the agent contract (src/agent/contract.ts).",
      from: { pathNot: '^src/emulator/' },
      to: { path: '^src/emulator/state-machine\\.ts$' },
    },
    {
      name: 'the-agent-side-does-not-import-the-emulator',
      severity: 'error',
      comment: 'What talks to a hypervisor must work against a real one: it knows the contract, not the emulator.',
      from: { path: '^src/agent/' },
      to: { path: '^src/emulator/' },
    },
    {
      name: 'only-the-front-ends-import-the-host-side',
      severity: 'error',
      comment: 'src/host is the dom0 agent that drives Xen through its own tools: the composition root and the CLI start it, nothing else uses it.',
      from: { path: '^(src|activities|workflows)/', pathNot: '^src/(app|cli|host)/' },
      to: { path: '^src/host/' },
    },
    {
      name: 'the-host-side-imports-the-contract-and-below',
      severity: 'error',
      comment:
        'The dom0 agent serves the agent contract from Xen itself: it may import the contract, the fleet\'s mTLS names and checks (src/pki), payloads, domain, runtime and the error catalogue, never the emulator (it must not pass for Xen by asking the emulator) nor the engine above.',
      from: { path: '^src/host/' },
      to: { path: '^(src/(?!host/|pki/|agent/(contract|requests)\\.ts$|payload/|domain/|runtime/|errors\\.ts$|secrets\\.ts$)|activities/|workflows/)' },
    },
    {
      name: 'only-the-front-ends-import-the-tool-doubles',
      severity: 'error',
      comment: "src/double plays Xen's tools over an emulated host for tests and `fleetpatch emulate`: it is run as an executable (bin/*-double.js), started by the CLI at most, never used by the engine or the dom0 agent.",
      from: { path: '^(src|activities|workflows)/', pathNot: '^src/(app|cli|double)/' },
      to: { path: '^src/double/' },
    },
    {
      name: 'the-tool-doubles-stand-on-the-agent-client',
      severity: 'error',
      comment:
        "A double of xen-livepatch and xl reaches its host the way any client does, through the agent contract and HostAgent: never through the emulator's insides (what it prints must come from what the host answers), nor the engine above.",
      from: { path: '^src/double/' },
      to: { path: '^(src/(?!double/|agent/|domain/|errors\\.ts$|secrets\\.ts$)|activities/|workflows/)' },
    },
    {
      name: 'runtime-is-infrastructure-only',
      severity: 'error',
      comment: 'Config, logger, local services, shutdown: imported by everyone, importing nothing of ours above it.',
      from: { path: '^src/runtime/' },
      to: { path: '^(src/(?!runtime/|errors\\.ts|secrets\\.ts)|activities/|workflows/)' },
    },
    {
      name: 'pure-cores-import-no-node-modules',
      severity: 'error',
      comment: "ELF parsing, the payload model, the Xen state machine, rollout planning and the readers of Xen's tools' output are pure functions of their inputs.",
      from: { path: '^src/(rollout/|payload/(elf|model|note|returns|x86|upload-check|build-id|image)\\.ts$|emulator/(state-machine|dispatch)\\.ts$|agent/requests\\.ts$|host/agent-state\\.ts$|pki/names\\.ts$|events/catalogue\\.ts$|events/projections/|host/(tool-text|xen-livepatch-output|xl-info-output)\\.ts$)' },
      to: { dependencyTypes: ['core'] },
    },
    {
      name: 'activities-do-not-import-workflows',
      severity: 'error',
      comment: 'Workflows call activities, never the other way round.',
      from: { path: '^activities/' },
      to: { path: '^workflows/', dependencyTypesNot: ['type-only'] },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    exclude: { path: '^(test|bench|fuzz|chaos|node_modules)/' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    enhancedResolveOptions: { extensions: ['.ts', '.js'] },
  },
};
