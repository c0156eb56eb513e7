/**
 * The fleet of enrolled hosts, kept in the event store: join tokens issued, enrolments (a
 * certificate issued by the fleet CA for the host's own key), labels, retirement. Every change is
 * one fact appended to the host's stream, checked against the stream's version it was judged on
 * (so two enrolments with one token cannot both win: the second finds it used). The inventory is
 * the fold of those facts (src/events/projections/fleet-hosts.ts).
 */
import { FleetpatchError } from '../errors.ts';
import { quoted } from '../domain/text.ts';
import { AgentAddressSchema, BuildIdSchema, EnrolledHostIdSchema, LabelsSchema, type Actor } from '../events/catalogue.ts';
import { eventIdFromKey, randomEventId } from '../events/event-id.ts';
import { activeHosts, emptyEnrolment, evolveEnrolment, foldEnrolments, judgeJoinToken, type EnrolledHost, type HostEnrolment } from '../events/projections/fleet-hosts.ts';
import { selectEnrolmentEvents } from '../events/sql/enrolment.ts';
import { toRecordedEvent } from '../events/sql/event-row.ts';
import type { EventStore } from '../events/store.ts';
import { hostStream } from '../events/streams.ts';
import { issueHostCertificate, type FleetCa } from '../pki/ca.ts';
import { DEFAULT_JOIN_TOKEN_TTL_MS, MAX_JOIN_TOKEN_TTL_MS, makeJoinToken, parseJoinToken } from './join-token.ts';
import type { z } from 'zod';

function checked<S extends z.ZodType>(schema: S, value: unknown, what: string): z.infer<S> {
  const r = schema.safeParse(value);
  if (r.success) return r.data;
  const shown = typeof value === 'string' ? ` ${quoted(value)}` : '';
  throw new FleetpatchError('ARGUMENT', `${what}${shown}: ${r.error.issues[0]?.message ?? 'invalid'}`, { field: what });
}

export interface EnrolRequest {
  joinToken: string;
  csr: string;
  address: string;
  hypervisorBuildId: string;
}

export interface Enrolment {
  hostId: string;
  certificate: string;
  ca: string;
  notAfter: string;
  fingerprint: string;
  /** True when the host was enrolled already: its certificate was renewed. */
  renewal: boolean;
}

export class FleetRegistry {
  constructor(private readonly events: EventStore) {}

  /** One host's enrolment facts folded, with the stream's version they were read at. */
  async enrolmentOf(hostId: string): Promise<{ state: HostEnrolment; version: number }> {
    const stream = await this.events.readStream(hostStream(hostId));
    const state = stream.reduce((s, r) => evolveEnrolment(s, r.event), emptyEnrolment(hostId));
    return { state, version: stream.length === 0 ? 0 : stream[stream.length - 1]!.streamPosition };
  }

  /** Every host that ever enrolled or got a join token. */
  async enrolments(): Promise<Map<string, HostEnrolment>> {
    const rows = await selectEnrolmentEvents(this.events.pool);
    return foldEnrolments(rows.map((r) => toRecordedEvent(r).event));
  }

  /** The hosts rollouts may select: enrolled, not retired. */
  async activeHosts(): Promise<EnrolledHost[]> {
    return activeHosts((await this.enrolments()).values());
  }

  /** A one-time join token for `hostId` (shown once; only its sha256 is recorded). */
  async issueJoinToken(ca: FleetCa, hostIdInput: string, opts: { labels?: Record<string, string>; ttlMs?: number; actor: Actor; now?: Date }): Promise<{ token: string; hostId: string; expiresAt: string }> {
    const hostId = checked(EnrolledHostIdSchema, hostIdInput, 'host id');
    const labels = checked(LabelsSchema, opts.labels ?? {}, 'labels');
    const ttlMs = opts.ttlMs ?? DEFAULT_JOIN_TOKEN_TTL_MS;
    if (!Number.isFinite(ttlMs) || ttlMs <= 0 || ttlMs > MAX_JOIN_TOKEN_TTL_MS) {
      throw new FleetpatchError('ARGUMENT', `a join token's time to live must be more than 0 and at most 7 days, not ${ttlMs} ms`);
    }
    const now = opts.now ?? new Date();
    const { token, sha256 } = makeJoinToken(ca.fingerprint, hostId);
    const expiresAt = new Date(now.getTime() + ttlMs).toISOString();
    await this.events.append(hostStream(hostId), [
      { eventId: randomEventId(), event: { type: 'JoinTokenIssued', schemaVersion: 1, occurredAt: now.toISOString(), actor: opts.actor, hostId, tokenSha256: sha256, expiresAt, labels } },
    ]);
    return { token, hostId, expiresAt };
  }

  /**
   * Enrols (or renews) the host its join token names: the token must be this fleet's, issued for
   * that host, unused and unexpired; the CSR must name that host; the certificate is issued and
   * the fact recorded in one step, judged on the stream version it was read at.
   */
  async enrol(ca: FleetCa, req: EnrolRequest, opts: { now?: Date } = {}): Promise<Enrolment> {
    const parsed = parseJoinToken(req.joinToken, ca.fingerprint);
    const address = checked(AgentAddressSchema, req.address, 'address');
    const hypervisorBuildId = checked(BuildIdSchema, req.hypervisorBuildId, 'hypervisorBuildId');
    const now = opts.now ?? new Date();
    for (let attempt = 0; ; attempt++) {
      const { state, version } = await this.enrolmentOf(parsed.hostId);
      const verdict = judgeJoinToken(state, parsed.sha256, now);
      if (!verdict.ok) throw new FleetpatchError(verdict.code, verdict.message, { hostId: parsed.hostId });
      const issued = await issueHostCertificate(ca, req.csr, parsed.hostId, address, { now });
      const certificate = { fingerprint: issued.fingerprint, serial: issued.serial, notAfter: issued.notAfter };
      const base = { schemaVersion: 1 as const, occurredAt: now.toISOString(), actor: { kind: 'user' as const, id: `host:${parsed.hostId}` }, hostId: parsed.hostId };
      // The id is the token's: a token's one use is one fact, whoever records it.
      const eventId = eventIdFromKey(`enrol:${parsed.sha256}`);
      const event = verdict.renewal
        ? { ...base, type: 'HostCertificateRenewed' as const, address, hypervisorBuildId, certificate, tokenSha256: parsed.sha256 }
        : { ...base, type: 'HostEnrolled' as const, labels: verdict.token.labels, address, hypervisorBuildId, certificate, tokenSha256: parsed.sha256 };
      try {
        const result = await this.events.append(hostStream(parsed.hostId), [{ eventId, event }], { expectedVersion: version });
        if (result.alreadyRecorded) throw new FleetpatchError('JOIN_TOKEN_USED', `the join token for host ${JSON.stringify(parsed.hostId)} was used already; issue another with \`fleetpatch hosts enroll ${parsed.hostId}\``, { hostId: parsed.hostId });
      } catch (e) {
        // Another fact landed in the host's stream meanwhile (a rollout's, or this token's other use): judge again.
        if ((e as FleetpatchError).code === 'STREAM_VERSION_CONFLICT' && attempt < 5) continue;
        throw e;
      }
      return { hostId: parsed.hostId, certificate: issued.certPem, ca: ca.certPem, notAfter: issued.notAfter, fingerprint: issued.fingerprint, renewal: verdict.renewal };
    }
  }

  private async enrolled(hostId: string): Promise<{ state: HostEnrolment; version: number; host: EnrolledHost }> {
    checked(EnrolledHostIdSchema, hostId, 'host id');
    const { state, version } = await this.enrolmentOf(hostId);
    if (!state.host) throw new FleetpatchError('HOST_NOT_FOUND', `host ${JSON.stringify(hostId)} is not enrolled (fleetpatch hosts list shows the fleet)`, { hostId });
    if (state.host.retired) throw new FleetpatchError('HOST_RETIRED', `host ${JSON.stringify(hostId)} was retired at ${state.host.retired.at} (${state.host.retired.reason}); enrol it again to bring it back`, { hostId });
    return { state, version, host: state.host };
  }

  /** Sets labels (k=v adds or changes, k= removes); records the whole new set. */
  async label(hostId: string, changes: Record<string, string | null>, actor: Actor): Promise<EnrolledHost> {
    const { host, version } = await this.enrolled(hostId);
    const labels: Record<string, string> = { ...host.labels };
    for (const [k, v] of Object.entries(changes)) {
      if (v === null) delete labels[k];
      else labels[k] = v;
    }
    const valid = checked(LabelsSchema, labels, 'labels');
    await this.events.append(hostStream(hostId), [{ eventId: randomEventId(), event: { type: 'HostLabelsChanged', schemaVersion: 1, occurredAt: new Date().toISOString(), actor, hostId, labels: valid } }], { expectedVersion: version });
    return { ...host, labels: valid };
  }

  /** Retires the host: its facts stay, rollouts stop selecting it. */
  async retire(hostId: string, reason: string, actor: Actor): Promise<void> {
    const { version } = await this.enrolled(hostId);
    if (!reason || reason.trim() === '') throw new FleetpatchError('ARGUMENT', 'retiring a host needs a reason (--reason)');
    await this.events.append(hostStream(hostId), [{ eventId: randomEventId(), event: { type: 'HostRetired', schemaVersion: 1, occurredAt: new Date().toISOString(), actor, hostId, reason } }], { expectedVersion: version });
  }
}
