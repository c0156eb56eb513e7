/**
 * What the long fuzzing of the emulator's HTTP API (npm run fuzz -- --target http,
 * docs/reliability.md) found, kept fixed: a payload whose `name` string is not the function its
 * old_addr is relocated against (Xen accepts it: the name is only looked up when old_addr is 0)
 * made GET /hosts/:id/functions a 500 while it was loaded, and once applied it was reported as
 * patching a function called by that name instead of the one at old_addr.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FleetFileHost } from '../../src/agent/fleet-file.ts';
import { payload, startTestFleet, type TestFleet } from './fleet-helpers.ts';

/** xen_extra_version's replacement, with the name string changed to xen_extra_versioX. */
function misnamed(): Uint8Array {
  const bytes = payload('odd', 'Odd').slice();
  const at = Buffer.from(bytes).indexOf('xen_extra_version\0');
  bytes[at + 16] = 'X'.charCodeAt(0);
  return bytes;
}

let t: TestFleet;
let host: FleetFileHost;

async function get(path: string): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(`${t.fleet.url}/hosts/${host.id}${path}`, { headers: { authorization: `Bearer ${host.token}` } });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

beforeAll(async () => {
  t = await startTestFleet({ hosts: 1, actionDurationMs: 0 });
  host = t.fleet.fleet.hosts[0]!;
});
afterAll(() => t.close());

describe('a payload whose name is not the function it patches', () => {
  it('loaded: GET /functions answers 200 (it was a 500), without a function nobody provides', async () => {
    const agent = t.client.host(host.id);
    await agent.upload('odd', misnamed());
    const r = await get('/functions');
    expect(r.status).toBe(200);
    const names = (r.body.functions as { function: string }[]).map((f) => f.function);
    expect(names).toContain('xen_extra_version');
    expect(names).not.toContain('xen_extra_versioX');
    expect((await get('/functions/xen_extra_versioX')).body.error).toBe('ENOENT');
  });

  it('applied: the function at old_addr is the one patched, whatever the name says', async () => {
    const agent = t.client.host(host.id);
    await agent.action('odd', 'apply');
    await agent.waitForAction('odd', { pollMs: 5, deadlineMs: 5_000 });
    const call = await get('/functions/xen_extra_version');
    expect(call.body).toMatchObject({ function: 'xen_extra_version', result: 'Odd', providedBy: { name: 'odd' } });
    expect((await get('/functions')).status).toBe(200);
  });
});
