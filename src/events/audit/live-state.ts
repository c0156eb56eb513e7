/**
 * The live state of an emulated host, for `audit replay`: read from the fleet server named by a
 * fleet file (`fleetpatch emulate` writes it) with the host's own bearer token, through Xen's LIST
 * (GET /hosts/:id/livepatch?idx=&nr=, paged like Xen's, at most 1024 entries a call).
 */
import { readFile } from 'node:fs/promises';
import { z } from 'zod';
import { FleetpatchError } from '../../errors.ts';
import { BuildIdSchema, LoadedPayloadSchema, PayloadRefSchema } from '../catalogue.ts';
import type { LiveHostState, ReadLiveState } from './replay.ts';

/** What replay needs of a fleet file: where the fleet server is and each host's token. */
const FleetAccessSchema = z.object({
  url: z.url(),
  hosts: z.array(z.object({ id: z.string().min(1), token: z.string().min(1) })),
});
export type FleetAccess = z.infer<typeof FleetAccessSchema>;

export async function readFleetAccess(file: string): Promise<FleetAccess> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    const missing = (e as NodeJS.ErrnoException).code === 'ENOENT';
    throw new FleetpatchError('FLEET_FILE_INVALID', missing ? `no fleet file at ${file}: start a fleet with \`fleetpatch emulate\` or pass --fleet-file` : `cannot read ${file}: ${(e as Error).message}`, { file });
  }
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (e) {
    throw new FleetpatchError('FLEET_FILE_INVALID', `${file} is not JSON: ${(e as Error).message}`, { file });
  }
  const r = FleetAccessSchema.safeParse(doc);
  if (!r.success) throw new FleetpatchError('FLEET_FILE_INVALID', `${file}: ${z.prettifyError(r.error).replaceAll('\n', '; ')}`, { file });
  return r.data;
}

/** The part of the fleet server's LIST answer that replay compares. */
const ListPageSchema = z.object({
  hypervisor: z.object({ buildId: BuildIdSchema }),
  version: z.number().int(),
  remaining: z.number().int().min(0),
  entries: z.array(LoadedPayloadSchema),
  appliedStack: z.array(PayloadRefSchema),
});

const PAGE = 1024;

export function httpLiveState(fleet: FleetAccess, options: { timeoutMs?: number } = {}): ReadLiveState {
  const timeoutMs = options.timeoutMs ?? 10_000;
  const base = fleet.url.replace(/\/+$/, '');
  return async (hostId) => {
    const host = fleet.hosts.find((h) => h.id === hostId);
    if (!host) throw new FleetpatchError('HOST_NOT_FOUND', `no host ${hostId} in the fleet at ${fleet.url}`, { hostId });
    // Xen's LIST is paged; a version change between pages means the list changed under us.
    for (let attempt = 1; attempt <= 3; attempt++) {
      const first = await listPage(base, host, 0, timeoutMs);
      const loaded = [...first.entries];
      let page = first;
      while (page.remaining > 0 && page.version === first.version) {
        page = await listPage(base, host, loaded.length, timeoutMs);
        loaded.push(...page.entries);
      }
      if (page.version !== first.version) continue;
      const state: LiveHostState = {
        hypervisorBuildId: first.hypervisor.buildId,
        appliedStack: page.appliedStack,
        loaded: loaded.map((p) => ({ name: p.name, buildId: p.buildId, state: p.state })),
      };
      return state;
    }
    throw new FleetpatchError('HOST_PROTOCOL', `the payload list of ${hostId} kept changing while it was read`, { hostId });
  };
}

async function listPage(base: string, host: { id: string; token: string }, idx: number, timeoutMs: number): Promise<z.infer<typeof ListPageSchema>> {
  const url = `${base}/hosts/${encodeURIComponent(host.id)}/livepatch?idx=${idx}&nr=${PAGE}`;
  let response: Response;
  try {
    response = await fetch(url, { headers: { authorization: `Bearer ${host.token}`, accept: 'application/json' }, signal: AbortSignal.timeout(timeoutMs) });
  } catch (e) {
    const timedOut = (e as Error).name === 'TimeoutError';
    throw new FleetpatchError(timedOut ? 'HOST_TIMEOUT' : 'HOST_UNREACHABLE', `${host.id}: ${timedOut ? `no answer from ${base} within ${timeoutMs} ms` : `cannot reach ${base}: ${(e as Error).message}`}`, { hostId: host.id });
  }
  const text = await response.text();
  if (!response.ok) {
    const code = response.status === 401 || response.status === 403 ? 'HOST_UNAUTHORIZED' : response.status === 404 ? 'HOST_NOT_FOUND' : response.status >= 500 ? 'HOST_UNREACHABLE' : 'HOST_PROTOCOL';
    throw new FleetpatchError(code, `${host.id}: the fleet server answered ${response.status} to LIST: ${text.slice(0, 200)}`, { hostId: host.id, status: response.status });
  }
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    throw new FleetpatchError('HOST_PROTOCOL', `${host.id}: LIST answered something that is not JSON`, { hostId: host.id });
  }
  const r = ListPageSchema.safeParse(doc);
  if (!r.success) throw new FleetpatchError('HOST_PROTOCOL', `${host.id}: LIST answered an unexpected shape: ${z.prettifyError(r.error).replaceAll('\n', '; ')}`, { hostId: host.id });
  return r.data;
}
