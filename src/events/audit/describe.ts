/** One line in words per event, for the audit tables (the --json output has every field). Pure. */
import type { DomainEvent, PayloadRef } from '../catalogue.ts';

export function shortId(buildId: string | null | undefined): string {
  if (!buildId) return '-';
  return buildId.length > 12 ? `${buildId.slice(0, 12)}…` : buildId;
}

const p = (x: PayloadRef): string => `${x.name} (${shortId(x.buildId)})`;
const labelText = (l: Readonly<Record<string, string>>): string => Object.entries(l).map(([k, v]) => `${k}=${v}`).join(',');
const because = (reason: string | null | undefined): string => (reason ? `: ${reason}` : '');

export function describeEvent(e: DomainEvent): string {
  switch (e.type) {
    case 'PayloadStored':
      return `stored ${p(e.payload)}, ${e.size} bytes, sha256 ${e.sha256.slice(0, 12)}…, ${e.signature ? `signed (${e.signature.algorithm}, key ${e.signature.keyId})` : 'unsigned'}`;
    case 'PayloadRefused':
      return `REFUSED ${p(e.payload)}: ${e.code}${because(e.reason)}`;
    case 'PayloadUploaded':
      return `uploaded ${p(e.payload)}`;
    case 'DependencyChecked': {
      const against = e.against.kind === 'hypervisor' ? 'the hypervisor' : `${e.against.name}`;
      const verdict = e.outcome === 'match' ? 'match' : e.outcome === 'mismatch' ? `MISMATCH${e.errno ? ` (${e.errno})` : ''}` : 'UNREACHABLE';
      return `${e.phase} check of ${p(e.payload)} ${e.on}: needs ${shortId(e.expected)}, ${against} is ${shortId(e.found)}: ${verdict}${because(e.reason)}`;
    }
    case 'PayloadApplied':
      return `applied ${p(e.payload)}${e.nodeps ? ' (nodeps)' : ''}`;
    case 'PayloadReverted':
      return `reverted ${p(e.payload)}`;
    case 'PayloadReplaced':
      return `replaced [${e.replaced.map(p).join(', ')}] with ${p(e.payload)}`;
    case 'PayloadUnloaded':
      return `unloaded ${p(e.payload)}`;
    case 'PayloadActionFailed':
      return `${e.action} of ${p(e.payload)} failed, ${e.errno ?? e.code}${because(e.reason)}`;
    case 'HealthChecked':
      return `health ${e.outcome}${e.check ? ` (${e.check.call} returned ${JSON.stringify(e.observed ?? null)}, expected ${JSON.stringify(e.check.expect)})` : ''}${because(e.reason)}`;
    case 'HostPatchStarted':
      return `rollout ${e.rollout} starts changing the host; its stack was [${e.formerStack.map(p).join(', ')}]${e.formerResult ? `, ${e.formerResult.call} returned ${JSON.stringify(e.formerResult.value)}` : ''}`;
    case 'HostRebooted':
      return `rebooted${e.hypervisorBuildId ? ` into hypervisor ${shortId(e.hypervisorBuildId)}` : ''}${e.bootId ? ` (boot ${e.bootId})` : ''}${e.lostStack ? `; lost its stack [${e.lostStack.map(p).join(', ')}]` : ''}${because(e.reason)}`;
    case 'DriftDetected':
      return `DRIFT: ${e.differences.length} difference(s) between events and host; ${e.differences[0]!.description}`;
    case 'RolloutStarted':
      return `rollout "${e.planName}" started (${e.mode}; ${e.payloads.map(p).join(', ')}; waves ${e.waves.map((w) => w.name).join(', ')})${because(e.reason)}`;
    case 'PreflightCompleted':
      return `preflight: ${e.selected} selected, ${e.targets} to patch (${e.waves.map((w) => `${w.name} ${w.planned}`).join(', ')}), ${e.alreadyPatched} already, ${e.incompatible} incompatible, ${e.unreachable} unreachable${e.unrestorable ? `, ${e.unrestorable} carry payloads a REPLACE could not put back` : ''}`;
    case 'WaveStarted':
      return `wave ${e.wave} started with ${e.plannedHosts} host(s)`;
    case 'HostPatchFinished':
      return `${e.hostId} ${e.outcome} in wave ${e.wave}${e.applied.length ? `, applied ${e.applied.map(p).join(', ')}` : ''}${e.failure ? `: ${e.failure.stage} ${e.failure.code}: ${e.failure.reason}` : ''}${e.revertedAfterFailure ? ' (reverted)' : ''}${e.restore ? `; restore ${e.restore.outcome}, stack now [${e.restore.stackNow.map(p).join(', ')}]${e.restore.reason ? ` (${e.restore.reason})` : ''}` : ''}`;
    case 'WaveFinished':
      return `wave ${e.wave} ${e.outcome}: ${e.patched} patched, ${e.already} already, ${e.failed} failed (${e.unreachable} unreachable) of ${e.planned}${because(e.reason)}`;
    case 'RolloutPaused':
      return `paused${e.wave ? ` after wave ${e.wave}` : ''}${because(e.reason)}`;
    case 'RolloutResumed':
      return `resumed${because(e.reason)}`;
    case 'RolloutAborted':
      return `ABORTED${because(e.reason)}`;
    case 'ApprovalGiven':
      return `approved going on after wave ${e.wave}${because(e.reason)}`;
    case 'RollbackStarted':
      return `rollback started on ${e.hosts} host(s)${because(e.reason)}`;
    case 'HostRollbackFinished':
      return `${e.hostId} rollback ${e.outcome}${e.reverted.length ? `, reverted ${e.reverted.map(p).join(', ')}` : ''}${e.reapplied.length ? `, re-applied ${e.reapplied.map(p).join(', ')}` : ''}${e.stackNow && e.outcome !== 'rolled-back' && e.outcome !== 'nothing-to-do' ? `; stack now [${e.stackNow.map(p).join(', ')}], should be [${(e.formerStack ?? []).map(p).join(', ')}]` : ''}${because(e.reason)}`;
    case 'RollbackFinished':
      return `rollback finished${e.outcome ? ` (${e.outcome})` : ''}: ${e.rolledBack} rolled back, ${e.nothingToDo} nothing to do, ${e.stackGrew} stack grew, ${e.unrecoverable ?? 0} unrecoverable, ${e.failed} failed`;
    case 'RepairStarted':
      return `${e.repair}: ${e.lost} of ${e.checked} patched host(s) lost the payload since (rebooted); patching them again${because(e.reason)}`;
    case 'RepairFinished':
      return `${e.repair} finished: ${e.patched} patched again, ${e.failed} failed${because(e.reason)}`;
    case 'RolloutFinished':
      return `rollout ${e.status}${because(e.reason)}`;
    case 'ApprovalRequested':
      return `waiting for approval to go on after wave ${e.wave}${e.requireDifferentApprover ? ' (by someone other than who started it)' : ''}`;
    case 'TokenCreated':
      return `API token "${e.tokenName}" created with role ${e.role} (fingerprint ${e.fingerprint})`;
    case 'TokenRevoked':
      return `API token "${e.tokenName}" revoked${because(e.reason)}`;
    case 'JoinTokenIssued':
      return `join token issued (sha256 ${e.tokenSha256.slice(0, 12)}…), good until ${e.expiresAt}${Object.keys(e.labels).length ? `, labels ${labelText(e.labels)}` : ''}`;
    case 'HostEnrolled':
      return `enrolled at ${e.address}, hypervisor ${shortId(e.hypervisorBuildId)}, certificate ${e.certificate.fingerprint.slice(0, 12)}… until ${e.certificate.notAfter}${Object.keys(e.labels).length ? `, labels ${labelText(e.labels)}` : ''}`;
    case 'HostCertificateRenewed':
      return `certificate renewed: ${e.certificate.fingerprint.slice(0, 12)}… until ${e.certificate.notAfter}, at ${e.address}, hypervisor ${shortId(e.hypervisorBuildId)}`;
    case 'HostLabelsChanged':
      return `labels now ${labelText(e.labels) || '(none)'}`;
    case 'HostRetired':
      return `RETIRED${because(e.reason)}`;
    default:
      // A type added to the catalogue before it got its own sentence: its type and reason.
      return `${(e as { type: string }).type}${because((e as { reason?: string }).reason)}`;
  }
}

export function describeActor(a: { kind: string; id: string }): string {
  return a.kind === 'user' ? a.id : `${a.kind}:${a.id}`;
}
