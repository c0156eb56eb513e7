/**
 * A throw-away PKI made by `openssl` for TLS tests: a CA, a server certificate for the names
 * given, a client certificate, all signed by that CA, and a second, foreign CA that signs nothing
 * the servers use. int tests make one per run; test/fixtures/tls holds one made by this same code
 * (valid until 2126) for unit tests, which spawn nothing.
 */
import { execFile } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

export interface TestPki {
  dir: string;
  caCert: string;
  serverCert: string;
  serverKey: string;
  clientCert: string;
  clientKey: string;
  /** A CA that signed nothing here: the "wrong CA". */
  foreignCaCert: string;
  /** A client certificate signed by the foreign CA. */
  foreignClientCert: string;
  foreignClientKey: string;
}

async function openssl(args: string[], cwd: string): Promise<void> {
  await run('openssl', args, { cwd });
}

async function makeCa(dir: string, name: string, days: number): Promise<void> {
  await openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', `${name}.key`, '-out', `${name}.crt`, '-days', String(days), '-subj', `/CN=${name}`, '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign'], dir);
}

async function makeLeaf(dir: string, name: string, ca: string, ext: string, days: number): Promise<void> {
  await openssl(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${name}`], dir);
  await writeFile(path.join(dir, `${name}.ext`), ext);
  await openssl(['x509', '-req', '-in', `${name}.csr`, '-CA', `${ca}.crt`, '-CAkey', `${ca}.key`, '-CAcreateserial', '-out', `${name}.crt`, '-days', String(days), '-extfile', `${name}.ext`], dir);
}

/** `serverNames`: DNS names and IP addresses the server certificate carries (e.g. ['localhost', '127.0.0.1']). */
export async function makeTestPki(dir: string, serverNames: string[], days = 2): Promise<TestPki> {
  await mkdir(dir, { recursive: true });
  await makeCa(dir, 'ca', days);
  await makeCa(dir, 'foreign-ca', days);
  const san = serverNames.map((n) => (/^[\d.]+$|:/.test(n) ? `IP:${n}` : `DNS:${n}`)).join(',');
  await makeLeaf(dir, 'server', 'ca', `basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\nsubjectAltName=${san}\n`, days);
  await makeLeaf(dir, 'client', 'ca', 'basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n', days);
  await makeLeaf(dir, 'foreign-client', 'foreign-ca', 'basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n', days);
  const f = (n: string) => path.join(dir, n);
  return {
    dir,
    caCert: f('ca.crt'),
    serverCert: f('server.crt'),
    serverKey: f('server.key'),
    clientCert: f('client.crt'),
    clientKey: f('client.key'),
    foreignCaCert: f('foreign-ca.crt'),
    foreignClientCert: f('foreign-client.crt'),
    foreignClientKey: f('foreign-client.key'),
  };
}
