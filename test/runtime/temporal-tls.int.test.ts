/**
 * fleetpatch's Temporal connection over mutual TLS, for real: a TLS-terminating proxy (node:tls,
 * a CA made by openssl for this run, client certificates required) in front of the shared
 * Temporal dev server. The client (CLI/API side) and a worker connect through it with
 * TEMPORAL_TLS_* settings, through the same loadConfig -> startServices path the commands use;
 * a wrong CA, no client certificate and a foreign client certificate are each refused with words.
 */
import net from 'node:net';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import tls from 'node:tls';
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { loadConfig } from '../../src/runtime/config.ts';
import { createLogger } from '../../src/runtime/logger.ts';
import { startServices } from '../../src/runtime/services.ts';
import { Shutdown } from '../../src/runtime/shutdown.ts';
import { connectTemporalClient, connectTemporalWorker, resolveTemporalSettings } from '../../src/runtime/temporal-connection.ts';
import { startWorker } from '../../src/runtime/worker.ts';
import { tempDir } from '../support/rollout.ts';
import { makeTestPki, type TestPki } from '../support/tls.ts';
import { refusalOf as refusal } from '../support/refusal.ts';

let pki: TestPki;
let proxy: tls.Server;
let proxyAddress: string;
const sockets = new Set<net.Socket>();
const logger = createLogger('error', { pretty: false, name: 'temporal-tls' });

function mtlsEnv(over: Record<string, string | undefined> = {}): Record<string, string> {
  const env: Record<string, string | undefined> = {
    TEMPORAL_ADDRESS: proxyAddress,
    TEMPORAL_NAMESPACE: inject('temporalNamespace'),
    TEMPORAL_TLS_SERVER_CA_CERT_PATH: pki.caCert,
    TEMPORAL_TLS_CLIENT_CERT_PATH: pki.clientCert,
    TEMPORAL_TLS_CLIENT_KEY_PATH: pki.clientKey,
    ...over,
  };
  return Object.fromEntries(Object.entries(env).filter((e): e is [string, string] => e[1] !== undefined));
}

function endpoint(env: Record<string, string>) {
  const s = resolveTemporalSettings(env);
  return { address: s.address!, namespace: inject('temporalNamespace'), security: s.security };
}

describe('Temporal over mutual TLS (a TLS-terminating proxy in front of the dev server)', () => {
  beforeAll(async () => {
    pki = await makeTestPki(path.join(await tempDir('temporal-tls'), 'pki'), ['localhost', '127.0.0.1']);
    const [host, port] = [inject('temporalAddress').replace(/:\d+$/, ''), Number(inject('temporalAddress').split(':').pop())];
    proxy = tls.createServer(
      { cert: readFileSync(pki.serverCert), key: readFileSync(pki.serverKey), ca: readFileSync(pki.caCert), requestCert: true, rejectUnauthorized: true, ALPNProtocols: ['h2'] },
      (client) => {
        const upstream = net.connect(port, host);
        for (const s of [client, upstream]) {
          sockets.add(s);
          s.on('close', () => sockets.delete(s));
          s.on('error', () => undefined);
        }
        client.pipe(upstream).pipe(client);
      },
    );
    proxy.on('tlsClientError', () => undefined);
    await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', r));
    proxyAddress = `127.0.0.1:${(proxy.address() as net.AddressInfo).port}`;
  }, 120_000);
  afterAll(async () => {
    for (const s of sockets) s.destroy();
    await new Promise((r) => proxy?.close(r));
  });

  it('the CLI/API client and a worker connect with TEMPORAL_TLS_* settings; the worker polls through TLS', async () => {
    const config = loadConfig({ ...mtlsEnv(), FLEETPATCH_DATA_DIR: await tempDir('temporal-tls-data') });
    const shutdown = new Shutdown(logger);
    try {
      const services = await startServices(config, logger, shutdown, { database: false, temporal: true });
      expect(services.temporal.address).toBe(proxyAddress);
      expect(services.temporal.security.tls).not.toBe(false);
      const taskQueue = `tls-${randomBytes(4).toString('hex')}`;
      const worker = await startWorker({ address: services.temporal.address, security: services.temporal.security, namespace: services.namespace, taskQueue, logger, activities: {}, workflowBundlePath: inject('workflowBundlePath') });
      const client = await connectTemporalClient(services.temporal);
      try {
        // The server sees the worker's poll: it came through the proxy, over mTLS.
        let pollers = 0;
        for (let i = 0; i < 100 && pollers === 0; i++) {
          const r = await client.workflowService.describeTaskQueue({ namespace: services.namespace, taskQueue: { name: taskQueue }, taskQueueType: 1 });
          pollers = r.pollers?.length ?? 0;
          if (pollers === 0) await new Promise((res) => setTimeout(res, 200));
        }
        expect(pollers).toBeGreaterThan(0);
      } finally {
        await client.close();
        await worker.shutdown();
      }
    } finally {
      await shutdown.run();
    }
  });

  it('refuses a CA that did not sign the server certificate: client, worker and start-up', async () => {
    const env = mtlsEnv({ TEMPORAL_TLS_SERVER_CA_CERT_PATH: pki.foreignCaCert });
    const client = await refusal(connectTemporalClient(endpoint(env), { connectTimeout: 10_000 }));
    expect(client.code).toBe('TLS_REFUSED');
    expect(client.message).toContain(`the server's certificate is not signed by the CA of TEMPORAL_TLS_SERVER_CA_CERT_PATH=${pki.foreignCaCert}`);
    const worker = await refusal(connectTemporalWorker(endpoint(env)));
    expect(worker.code).toBe('TLS_REFUSED');
    expect(worker.message).toContain("the server's certificate is not signed by the CA of");
    // At start-up it is not waited out as an outage: one clear error.
    const shutdown = new Shutdown(logger);
    try {
      const e = await refusal(startServices(loadConfig({ ...env, FLEETPATCH_DATA_DIR: await tempDir('temporal-tls-data') }), logger, shutdown, { database: false, temporal: true, waitWhileDown: () => undefined }));
      expect(e.code).toBe('TLS_REFUSED');
    } finally {
      await shutdown.run();
    }
  });

  it('is refused by the server without a client certificate, and with one it does not trust', async () => {
    const none = mtlsEnv({ TEMPORAL_TLS_CLIENT_CERT_PATH: undefined, TEMPORAL_TLS_CLIENT_KEY_PATH: undefined });
    for (const e of [await refusal(connectTemporalWorker(endpoint(none))), await refusal(connectTemporalClient(endpoint(none), { connectTimeout: 10_000 }))]) {
      expect(e.code).toBe('TLS_REFUSED');
      expect(e.message).toContain('the server refused the TLS handshake with no client certificate');
    }
    const foreign = mtlsEnv({ TEMPORAL_TLS_CLIENT_CERT_PATH: pki.foreignClientCert, TEMPORAL_TLS_CLIENT_KEY_PATH: pki.foreignClientKey });
    const e = await refusal(connectTemporalWorker(endpoint(foreign)));
    expect(e.code).toBe('TLS_REFUSED');
    expect(e.message).toContain(`the server refused the TLS handshake with the client certificate TEMPORAL_TLS_CLIENT_CERT_PATH=${pki.foreignClientCert}`);
    expect(e.message).not.toContain('PRIVATE KEY');
  });
});
