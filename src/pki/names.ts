/**
 * The fleet's certificate names, decided in one place (docs/agent.md, "TLS"): a host's
 * certificate carries the SAN URI `fleetpatch://host/<hostId>`, a worker's (a control-plane
 * client's) `fleetpatch://worker/<name>`. The agent lets only a worker drive it, and a worker
 * talks only to the host it meant: both read the peer's role here. Tiny and dependency-free.
 */
const HOST_PREFIX = 'fleetpatch://host/';
const WORKER_PREFIX = 'fleetpatch://worker/';

export function hostUri(id: string): string {
  return `${HOST_PREFIX}${id}`;
}

export function workerUri(name: string): string {
  return `${WORKER_PREFIX}${name}`;
}

export type PeerRole = { kind: 'host'; id: string } | { kind: 'worker'; name: string };

/**
 * The fleet role a certificate's subjectAltName gives it, or null when it names none, or more
 * than one (a certificate that is both a host and a worker, or two hosts, is no one's). Takes
 * node:crypto's X509Certificate (or anything with its `subjectAltName` text).
 */
export function peerRole(cert: { readonly subjectAltName?: string | undefined }): PeerRole | null {
  const roles: PeerRole[] = [];
  // node prints the SAN as `URI:a, DNS:b`; a value holding ", " is quoted as JSON by node
  // (since 17.3), so it is not split apart into a second entry.
  for (const entry of splitSan(cert.subjectAltName ?? '')) {
    if (!entry.startsWith('URI:')) continue;
    const uri = entry.slice(4);
    if (uri.startsWith(HOST_PREFIX) && uri.length > HOST_PREFIX.length) roles.push({ kind: 'host', id: uri.slice(HOST_PREFIX.length) });
    else if (uri.startsWith(WORKER_PREFIX) && uri.length > WORKER_PREFIX.length) roles.push({ kind: 'worker', name: uri.slice(WORKER_PREFIX.length) });
  }
  return roles.length === 1 ? roles[0]! : null;
}

function splitSan(san: string): string[] {
  const out: string[] = [];
  let i = 0;
  while (i < san.length) {
    const colon = san.indexOf(':', i);
    if (colon === -1) break;
    const kind = san.slice(i, colon + 1);
    let value: string;
    let next: number;
    if (san[colon + 1] === '"') {
      // A quoted value: JSON string syntax.
      let j = colon + 2;
      while (j < san.length && san[j] !== '"') j += san[j] === '\\' ? 2 : 1;
      try {
        value = JSON.parse(san.slice(colon + 1, j + 1)) as string;
      } catch {
        return out;
      }
      next = j + 1;
    } else {
      const comma = san.indexOf(', ', colon + 1);
      next = comma === -1 ? san.length : comma;
      value = san.slice(colon + 1, next);
    }
    out.push(kind + value);
    i = next;
    if (san.startsWith(', ', i)) i += 2;
  }
  return out;
}
