/**
 * The event store and audit: the public API of src/events. Activities record through EventStore
 * (with deterministic ids from event-id.ts), the CLI and API read through the audit functions.
 */
export * from './catalogue.ts';
export { activityEventId, eventIdFromKey, randomEventId, uuidV5, type ActivityStep } from './event-id.ts';
export { canonicalJson, chainHash, GENESIS_HASH, StreamChainChecker, type ChainBreak, type ChainRecord } from './hash-chain.ts';
export { hostStream, parseStreamId, payloadStream, rolloutStream, streamFor, type StreamKind } from './streams.ts';
export {
  EventStore,
  START,
  cursorOf,
  type AppendedEvent,
  type AppendOptions,
  type AppendResult,
  type EventToAppend,
  type ExpectedVersion,
  type GlobalCursor,
  type RecordedEvent,
  type StreamAppend,
  type StreamRange,
} from './store.ts';
export { PayloadStore, type PayloadSignatureInput, type PayloadToStore, type StoreContext, type StoredPayload } from './payload-store.ts';
export { emptyHostStack, evolveHostStack, foldHostStack, hostSnapshot, type HostAnomaly, type HostStackState } from './projections/host-stack.ts';
export { placementsOf, type PayloadPlacement } from './projections/payload-placement.ts';
export {
  emptyRolloutSummary,
  evolveRolloutSummary,
  foldRolloutSummary,
  type Decision,
  type RollbackSummary,
  type RolloutSummary,
  type RolloutSummaryStatus,
  type WaveSummary,
} from './projections/rollout-summary.ts';
export { AUDIT_PROJECTIONS, Projector, hostStackProjection, rolloutSummaryProjection, type Projection, type ProjectorOptions } from './projections/projector.ts';
export { hostTimeline } from './audit/timeline.ts';
export { hostStackAsOf, type AsOf } from './audit/stack-as-of.ts';
export { CHECK_OUTCOMES, dependencyChecks, type CheckFilter, type DependencyCheckRecord } from './audit/checks.ts';
export { whereIsPayload } from './audit/where.ts';
export { rolloutReport, type HostOutcome, type HostRollbackOutcome, type RolloutReport } from './audit/rollout-report.ts';
export { verifyChains, type VerifyReport } from './audit/verify.ts';
export { compareStacks, replayHost, type LiveHostState, type ReadLiveState, type ReplayOptions, type ReplayResult } from './audit/replay.ts';
export { describeActor, describeEvent, shortId } from './audit/describe.ts';
export { listRollouts, hostStacks } from './audit/projections.ts';
