/**
 * The emulated Xen hypervisors: the live-patch state machine (pure), faults, the fleet server
 * speaking the agent protocol (src/agent/contract.ts), its journal and admin client.
 * See docs/hypervisor.md. Talking to a hypervisor is the agent's: src/agent/index.ts.
 */
export * as stateMachine from './state-machine.ts';
export {
  ACTION_CMDS,
  LIVEPATCH_DEFAULT_TIMEOUT_NS,
  LIVEPATCH_LIST_MAX,
  createHost,
  type ActionCmd,
  type ActionEffects,
  type CallResult,
  type DependencyCheck,
  type Host,
  type HostImage,
  type LoadedPayload,
  type Outcome,
  type PayloadFacts,
  type PayloadState,
  type UploadChecker,
} from './state-machine.ts';
export { callFunction, formatResult, functionTable, resultValue, type FunctionView } from './functions.ts';
export { FaultInjector, FaultsSchema, NO_FAULTS, loadFaultsFile, parseFaults, type FaultRule, type Faults, type FaultsInput } from './faults.ts';
export { MAX_FLEET_HOSTS, createFleet, hostId, hostLabels, type FleetMember } from './fleet.ts';
export { startFleetServer, type FleetServerOptions, type FleetStats, type RunningFleet } from './server.ts';
export { EmulatorAdmin } from './admin-client.ts';
export { transitions, type JournalEntry } from './journal.ts';
export { DEFAULT_HOST_IMAGE, cachingChecker, hostImage, loadImageFile, payloadLibraryChecker } from './payload-adapter.ts';
