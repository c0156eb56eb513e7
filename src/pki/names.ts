/**
 * The fleet's mutual-TLS names, decided in one place: a host's certificate carries the SAN URI
 * `fleetpatch://host/<hostId>`, a worker's (the control plane's client) `fleetpatch://worker/<name>`.
 * The agent lets only a worker drive it (a host's certificate cannot drive another host) and the
 * worker checks the agent names exactly the host it meant to reach: both read the role here.
 * Tiny and dependency-free: it takes node:crypto's X509Certificate, or anything with its
 * `subjectAltName` text.
 */

const HOST_PREFIX = 'fleetpatch://host/';
const WORKER_PREFIX = 'fleetpatch://worker/';

export function hostUri(id: string): string {
  return `${HOST_PREFIX}${encodeURIComponent(id)}`;
}

export function workerUri(name: string): string {
  return `${WORKER_PREFIX}${encodeURIComponent(name)}`;
}

export type PeerRole = { kind: 'host'; id: string } | { kind: 'worker'; name: string };

/**
 * The SAN entries of node's `subjectAltName` text: `DNS:a, URI:b, IP Address:c`. Node writes an
 * entry whose value holds a comma, a quote or a control character as a JSON string
 * (`URI:"fleetpatch://host/a, b"`) so that a crafted name cannot pass for two entries: read it so.
 */
export function sanEntries(subjectAltName: string | undefined): { type: string; value: string }[] {
  const out: { type: string; value: string }[] = [];
  if (!subjectAltName) return out;
  let i = 0;
  const s = subjectAltName;
  while (i < s.length) {
    const colon = s.indexOf(':', i);
    if (colon < 0) break;
    const type = s.slice(i, colon);
    let j = colon + 1;
    let value: string;
    if (s[j] === '"') {
      // A JSON string: find its closing quote (one not escaped) and let JSON read it.
      let k = j + 1;
      while (k < s.length && s[k] !== '"') k += s[k] === '\\' ? 2 : 1;
      try {
        value = JSON.parse(s.slice(j, k + 1)) as string;
      } catch {
        return out;
      }
      j = k + 1;
    } else {
      const comma = s.indexOf(', ', j);
      const end = comma < 0 ? s.length : comma;
      value = s.slice(j, end);
      j = end;
    }
    out.push({ type, value });
    if (s.startsWith(', ', j)) j += 2;
    i = j;
  }
  return out;
}

function decoded(rest: string): string | null {
  if (rest === '' || rest.includes('/')) return null;
  try {
    const v = decodeURIComponent(rest);
    return v === '' ? null : v;
  } catch {
    return null;
  }
}

/**
 * Who a certificate is in the fleet: a host, a worker, or nobody (null). A certificate naming
 * more than one fleetpatch identity is nobody: it must not be a host and a worker at once.
 */
export function peerRole(cert: { readonly subjectAltName?: string | undefined }): PeerRole | null {
  const roles: PeerRole[] = [];
  for (const { type, value } of sanEntries(cert.subjectAltName)) {
    if (type !== 'URI') continue;
    if (value.startsWith(HOST_PREFIX)) {
      const id = decoded(value.slice(HOST_PREFIX.length));
      if (id === null) return null;
      roles.push({ kind: 'host', id });
    } else if (value.startsWith(WORKER_PREFIX)) {
      const name = decoded(value.slice(WORKER_PREFIX.length));
      if (name === null) return null;
      roles.push({ kind: 'worker', name });
    }
  }
  return roles.length === 1 ? roles[0]! : null;
}
