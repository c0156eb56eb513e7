/**
 * Emulated Xen hypervisors: the live-patch state machine, the fleet server, its client, faults.
 * See docs/hypervisor.md.
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
export { FleetFileSchema, defaultFleetFilePath, findFleetHost, readFleetFile, writeFleetFile, type FleetFile, type FleetFileHost } from './fleet-file.ts';
export { startFleetServer, type FleetServerOptions, type FleetStats, type RunningFleet } from './server.ts';
export { FleetClient, HostAgent, sharedHttpAgent, type ActionOptions, type HostAgentOptions, type WaitOptions } from './agent-client.ts';
export { DEFAULT_HOST_IMAGE, cachingChecker, hostImage, loadImageFile, payloadLibraryChecker } from './payload-adapter.ts';
export type { WireAction, WireCall, WireError, WireList, WirePayload, WireReboot, WireStatus, WireUpload } from './wire.ts';
