/**
 * `fleetpatch agent` and `fleetpatch agent journal` in this process: the refusals before it
 * listens (one line each, the exit code of its kind) and the journal printed for people and as
 * JSON. Writes files, hence this tier.
 */
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { main } from '../../src/cli/main.ts';
import { memoryIO } from '../../src/cli/io.ts';
import { parseListen } from '../../src/cli/agent.ts';
import { HostJournal } from '../../src/host/host-journal.ts';

let root: string;
beforeAll(async () => {
  root = await mkdtemp(path.join(os.tmpdir(), 'fp-cli-agent-'));
});
afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

async function run(args: string[]) {
  const io = memoryIO();
  const code = await main(args, io);
  return { code, out: io.stdout, err: io.stderr };
}

describe('fleetpatch agent', () => {
  it('refuses, before listening, what it cannot run with', async () => {
    const dir = path.join(root, 'empty');
    await mkdir(dir);
    const noTls = await run(['agent', '--dir', dir, '--listen', '127.0.0.1:0']);
    expect(noTls.code).toBe(1);
    expect(noTls.err).toEqual([expect.stringMatching(/^fleetpatch: TLS_INVALID: cannot read .*tls\/key\.pem: ENOENT/)]);
    const noId = await run(['agent', '--dir', dir, '--insecure-http']);
    expect(noId.code).toBe(2);
    expect(noId.err[0]).toMatch(/--insecure-http needs --host-id/);
    await writeFile(path.join(dir, 'agent-token'), 'x'.repeat(32));
    const wide = await run(['agent', '--dir', dir, '--insecure-http', '--host-id', 'h1', '--listen', '0.0.0.0:0']);
    expect(wide.code).toBe(2);
    expect(wide.err[0]).toMatch(/loopback only/);
    expect((await run(['agent', '--listen', 'nonsense'])).err[0]).toMatch(/--listen must be HOST:PORT/);
    expect(parseListen('[::1]:9443', '0.0.0.0')).toEqual({ host: '::1', port: 9443 });
    expect(parseListen('9443', '0.0.0.0')).toEqual({ host: '0.0.0.0', port: 9443 });
  });

  it('prints the host journal for people, as JSON, and from a time on', async () => {
    const dir = path.join(root, 'j');
    await mkdir(dir);
    const j = await HostJournal.open(path.join(dir, 'journal.jsonl'));
    await j.append({ kind: 'request', at: '2026-12-08T01:00:00.000Z', req: 1, who: 'worker:w1', method: 'POST', path: '/hosts/h1/livepatch/hello' });
    await j.append({ kind: 'tool', at: '2026-12-08T01:00:01.000Z', req: 1, argv: ['/usr/sbin/xen-livepatch', 'upload', 'hello', '/tmp/p'], exitCode: 0, stdout: 'Uploading /tmp/p... completed\n', stderr: '', ms: 20 });
    await j.close();
    await writeFile(path.join(dir, 'journal.jsonl'), '{"torn', { flag: 'a' });
    const people = await run(['agent', 'journal', '--dir', dir]);
    expect(people.code).toBe(0);
    expect(people.out).toEqual([
      '2026-12-08T01:00:00.000Z #1 POST /hosts/h1/livepatch/hello by worker:w1',
      '2026-12-08T01:00:01.000Z #1   /usr/sbin/xen-livepatch upload hello /tmp/p -> exit 0 (20 ms): Uploading /tmp/p... completed',
      'line 3: not a journal entry: "{\\"torn"',
    ]);
    const json = await run(['agent', 'journal', '--dir', dir, '--json', '--since', '2026-12-08T01:00:01Z']);
    expect(json.out.map((l) => JSON.parse(l).kind)).toEqual(['tool', 'unreadable']);
    expect((await run(['agent', 'journal', '--dir', dir, '--since', 'yesterday'])).code).toBe(2);
    expect((await run(['agent', 'journal', '--dir', path.join(root, 'none')])).code).toBe(2);
  });
});
