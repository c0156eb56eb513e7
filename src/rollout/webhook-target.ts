/**
 * Where a plan's webhook may point. A webhook is a request fleetpatch's workers send to a URL an
 * operator (or an API caller) chose, so it must not be a way into what the workers can reach and
 * the caller cannot: only http and https (no `file:`, `data:`, `javascript:`, `gopher:`), no
 * user:password in the URL (it would be stored in the outbox and shown in every failed attempt;
 * receivers check X-Fleetpatch-Signature instead), and none of fleetpatch's own services (the
 * PostgreSQL, Temporal, emulator and API ports its configuration knows) unless the configuration
 * allows that host:port (FLEETPATCH_WEBHOOK_ALLOW).
 *
 * Ports are compared, not host names: 127.0.0.1, localhost, 0.0.0.0, [::ffff:127.0.0.1] and a
 * name that resolves to the database all reach the same listener, and no list of spellings
 * catches them all. Pure: the services and the allowed endpoints come from the caller.
 */

/** A port one of fleetpatch's services listens on, and which, in words (for the refusal). */
export interface ServicePort {
  port: number;
  service: string;
}

export interface WebhookPolicy {
  services: readonly ServicePort[];
  /** `host:port` endpoints that may be webhooks although a service uses the port (lower-case host). */
  allow: readonly string[];
}

const SCHEMES = new Set(['http:', 'https:']);

function parsed(url: string): URL | undefined {
  try {
    return new URL(url);
  } catch {
    return undefined;
  }
}

/** The URL's port, the scheme's default when it names none. */
function portOf(u: URL): number {
  return u.port ? Number(u.port) : u.protocol === 'https:' ? 443 : 80;
}

/** The endpoint as FLEETPATCH_WEBHOOK_ALLOW names it: `host:port`, IPv6 in brackets. */
export function endpointOf(u: URL): string {
  return `${u.hostname.toLowerCase()}:${portOf(u)}`;
}

/**
 * Why `url` cannot be a webhook whatever the configuration (not a URL, not http(s), credentials),
 * or undefined. The words never repeat the URL: it may hold a password.
 */
export function webhookUrlProblem(url: string): string | undefined {
  const u = parsed(url);
  if (!u) return 'must be an http:// or https:// URL, e.g. https://chat.example.com/hooks/fleetpatch';
  if (!SCHEMES.has(u.protocol)) return `must be an http:// or https:// URL, not ${u.protocol.slice(0, 20)} (fleetpatch POSTs notifications over HTTP)`;
  if (u.username !== '' || u.password !== '') {
    return 'must not carry a user name or password (user:password@): it would be stored and shown with every delivery; a receiver checks the X-Fleetpatch-Signature header instead';
  }
  if (u.hostname === '') return 'must name a host';
  return undefined;
}

/** Why `url` cannot be a webhook under `policy`, or undefined: webhookUrlProblem, then the ports. */
export function webhookTargetProblem(url: string, policy: WebhookPolicy): string | undefined {
  const problem = webhookUrlProblem(url);
  if (problem) return problem;
  const u = new URL(url);
  const port = portOf(u);
  const endpoint = endpointOf(u);
  if (policy.allow.includes(endpoint)) return undefined;
  const service = policy.services.find((s) => s.port === port);
  if (!service) return undefined;
  return `${u.origin} is on port ${port}, ${service.service}: fleetpatch does not send webhooks to its own services (FLEETPATCH_WEBHOOK_ALLOW=${endpoint} allows this one)`;
}
