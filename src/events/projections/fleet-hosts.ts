/**
 * The fleet of enrolled hosts, folded from the enrolment facts of each host stream
 * (JoinTokenIssued, HostEnrolled, HostCertificateRenewed, HostLabelsChanged, HostRetired), and
 * the rules of a join token judged against that fold. Pure: the fold is the only inventory of
 * real hosts, so what the fleet is can always be rebuilt from the hash-chained facts.
 */
import type { DomainEvent, EventOfType } from '../catalogue.ts';

export const ENROLMENT_EVENT_TYPES = ['JoinTokenIssued', 'HostEnrolled', 'HostCertificateRenewed', 'HostLabelsChanged', 'HostRetired'] as const;
export type EnrolmentEvent = EventOfType<(typeof ENROLMENT_EVENT_TYPES)[number]>;

export function isEnrolmentEvent(e: DomainEvent): e is EnrolmentEvent {
  return (ENROLMENT_EVENT_TYPES as readonly string[]).includes(e.type);
}

export interface JoinTokenState {
  tokenSha256: string;
  issuedAt: string;
  expiresAt: string;
  labels: Record<string, string>;
  /** When an enrolment used it; a join token is good once. */
  usedAt: string | null;
}

export interface EnrolledHost {
  id: string;
  labels: Record<string, string>;
  address: string;
  hypervisorBuildId: string;
  certificate: { fingerprint: string; serial: string; notAfter: string };
  enrolledAt: string;
  renewedAt: string | null;
  retired: { at: string; reason: string } | null;
}

export interface HostEnrolment {
  hostId: string;
  /** null until it enrolls. */
  host: EnrolledHost | null;
  tokens: JoinTokenState[];
}

export function emptyEnrolment(hostId: string): HostEnrolment {
  return { hostId, host: null, tokens: [] };
}

function useToken(tokens: JoinTokenState[], sha256: string, at: string): JoinTokenState[] {
  return tokens.map((t) => (t.tokenSha256 === sha256 ? { ...t, usedAt: t.usedAt ?? at } : t));
}

/** One more fact of the host's stream; facts of other kinds leave the state as it is. */
export function evolveEnrolment(state: HostEnrolment, e: DomainEvent): HostEnrolment {
  if (!isEnrolmentEvent(e) || e.hostId !== state.hostId) return state;
  switch (e.type) {
    case 'JoinTokenIssued':
      return { ...state, tokens: [...state.tokens, { tokenSha256: e.tokenSha256, issuedAt: e.occurredAt, expiresAt: e.expiresAt, labels: { ...e.labels }, usedAt: null }] };
    case 'HostEnrolled':
      return {
        hostId: state.hostId,
        tokens: useToken(state.tokens, e.tokenSha256, e.occurredAt),
        host: { id: e.hostId, labels: { ...e.labels }, address: e.address, hypervisorBuildId: e.hypervisorBuildId, certificate: { ...e.certificate }, enrolledAt: e.occurredAt, renewedAt: null, retired: null },
      };
    case 'HostCertificateRenewed':
      if (!state.host) return { ...state, tokens: useToken(state.tokens, e.tokenSha256, e.occurredAt) };
      return {
        ...state,
        tokens: useToken(state.tokens, e.tokenSha256, e.occurredAt),
        host: { ...state.host, address: e.address, hypervisorBuildId: e.hypervisorBuildId, certificate: { ...e.certificate }, renewedAt: e.occurredAt },
      };
    case 'HostLabelsChanged':
      return state.host ? { ...state, host: { ...state.host, labels: { ...e.labels } } } : state;
    case 'HostRetired':
      return state.host ? { ...state, host: { ...state.host, retired: { at: e.occurredAt, reason: e.reason } } } : state;
  }
}

/** Folds events of many host streams (each in stream order) into one enrolment per host. */
export function foldEnrolments(events: Iterable<DomainEvent>): Map<string, HostEnrolment> {
  const out = new Map<string, HostEnrolment>();
  for (const e of events) {
    if (!isEnrolmentEvent(e)) continue;
    out.set(e.hostId, evolveEnrolment(out.get(e.hostId) ?? emptyEnrolment(e.hostId), e));
  }
  return out;
}

/** The hosts rollouts may select: enrolled and not retired, in id order. */
export function activeHosts(enrolments: Iterable<HostEnrolment>): EnrolledHost[] {
  return [...enrolments].flatMap((e) => (e.host && !e.host.retired ? [e.host] : [])).sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
}

export type JoinTokenVerdict =
  | { ok: true; token: JoinTokenState; renewal: boolean }
  | { ok: false; code: 'JOIN_TOKEN_FOREIGN' | 'JOIN_TOKEN_EXPIRED' | 'JOIN_TOKEN_USED'; message: string };

/**
 * Whether a join token (by its sha256) may enrol the host now: issued for this host, not used,
 * not expired. An enrolment of a host enrolled already (not retired) renews its certificate.
 */
export function judgeJoinToken(state: HostEnrolment, tokenSha256: string, now: Date): JoinTokenVerdict {
  const token = state.tokens.find((t) => t.tokenSha256 === tokenSha256);
  if (!token) return { ok: false, code: 'JOIN_TOKEN_FOREIGN', message: `the join token was not issued for host ${JSON.stringify(state.hostId)} by this control plane` };
  if (token.usedAt) return { ok: false, code: 'JOIN_TOKEN_USED', message: `the join token for host ${JSON.stringify(state.hostId)} was used at ${token.usedAt}; a join token is good for one enrolment: issue another with \`fleetpatch hosts enroll ${state.hostId}\`` };
  if (now.getTime() >= new Date(token.expiresAt).getTime()) {
    return { ok: false, code: 'JOIN_TOKEN_EXPIRED', message: `the join token for host ${JSON.stringify(state.hostId)} expired at ${token.expiresAt}; issue another with \`fleetpatch hosts enroll ${state.hostId}\`` };
  }
  return { ok: true, token, renewal: state.host !== null && state.host.retired === null };
}
