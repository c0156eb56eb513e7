/**
 * What talks to a hypervisor: the protocol (contract.ts, zod), the host agent client and the fleet
 * client, the fleet file, and live states read from many hosts. Nothing here knows the emulator.
 */
export * from './contract.ts';
export { DEFAULT_REQUEST_TIMEOUT_MS, FleetClient, HostAgent, sharedDispatcher, type ActionOptions, type FleetClientOptions, type HostAgentOptions, type WaitOptions } from './client.ts';
export { FleetFileSchema, defaultFleetFilePath, findFleetHost, readFleetFile, writeFleetFile, type FleetFile, type FleetFileHost } from './fleet-file.ts';
export { hostStateFromList, readLiveStates } from './live-state.ts';
