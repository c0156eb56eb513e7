import { copyFileSync, mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { inspect } from 'node:util';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/runtime/config.ts';
import { connectionOptions, describeTemporalSecurity, explainConnectFailure, resolveTemporalSettings, type TemporalTls } from '../../src/runtime/temporal-connection.ts';
import { refusal } from '../support/refusal.ts';

const TLS = path.resolve(import.meta.dirname, '..', 'fixtures', 'tls');
const f = (n: string) => path.join(TLS, n);
const API_KEY = 'tmprl-SECRET-api-key-0123456789';

function toml(text: string): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'fp-envconfig-'));
  const file = path.join(dir, 'temporal.toml');
  writeFileSync(file, text);
  return file;
}

const PROFILES = `
[profile.default]
address = "file-default.example:7233"
namespace = "from-file"

[profile.prod]
address = "prod.a1b2c.tmprl.cloud:7233"
namespace = "prod.a1b2c"
api_key = "${API_KEY}"

[profile.mtls]
address = "temporal.internal:7233"
[profile.mtls.tls]
server_name = "temporal.internal"
server_ca_cert_path = "${f('ca.crt')}"
client_cert_path = "${f('client.crt')}"
client_key_path = "${f('client.key')}"
`;

describe('Temporal connection settings (envconfig profile + environment)', () => {
  it('is plain gRPC with only TEMPORAL_ADDRESS and TEMPORAL_NAMESPACE', () => {
    const s = resolveTemporalSettings({ TEMPORAL_ADDRESS: 'temporal.internal:7233', TEMPORAL_NAMESPACE: 'patching' });
    expect(s).toMatchObject({ address: 'temporal.internal:7233', addressOrigin: 'TEMPORAL_ADDRESS', namespace: 'patching', security: { tls: false } });
    expect(connectionOptions({ address: s.address!, security: s.security })).toEqual({ address: 'temporal.internal:7233', tls: false });
  });

  it('reads the default profile of TEMPORAL_CONFIG_FILE, and the environment wins setting by setting', () => {
    const file = toml(PROFILES);
    expect(resolveTemporalSettings({ TEMPORAL_CONFIG_FILE: file })).toMatchObject({ address: 'file-default.example:7233', namespace: 'from-file', profile: `profile "default" of ${file}` });
    const s = resolveTemporalSettings({ TEMPORAL_CONFIG_FILE: file, TEMPORAL_ADDRESS: 'env.example:7233' });
    expect(s.address).toBe('env.example:7233');
    expect(s.namespace).toBe('from-file');
  });

  it('finds the file in $XDG_CONFIG_HOME/temporalio/temporal.toml, then ~/.config, when TEMPORAL_CONFIG_FILE is unset', () => {
    const file = toml(PROFILES);
    const xdg = mkdtempSync(path.join(os.tmpdir(), 'fp-xdg-'));
    mkdirSync(path.join(xdg, 'temporalio'));
    copyFileSync(file, path.join(xdg, 'temporalio', 'temporal.toml'));
    expect(resolveTemporalSettings({ XDG_CONFIG_HOME: xdg }).address).toBe('file-default.example:7233');
    // No default file: nothing read, no error.
    expect(resolveTemporalSettings({ HOME: mkdtempSync(path.join(os.tmpdir(), 'fp-home-')) })).toEqual({ security: { tls: false } });
  });

  it('selects a profile with TEMPORAL_PROFILE; an API key turns TLS on with the system CAs', () => {
    const s = resolveTemporalSettings({ TEMPORAL_CONFIG_FILE: toml(PROFILES), TEMPORAL_PROFILE: 'prod' });
    expect(s.address).toBe('prod.a1b2c.tmprl.cloud:7233');
    expect(s.namespace).toBe('prod.a1b2c');
    expect(s.security.apiKey).toBe(API_KEY);
    expect(s.security.tls).toMatchObject({ origins: {} });
    expect(connectionOptions({ address: s.address!, security: s.security })).toEqual({ address: s.address, tls: {}, apiKey: API_KEY });
    // The key is readable where it is used, and nowhere else: not in JSON, logs, inspect or descriptions.
    expect(JSON.stringify(s)).not.toContain(API_KEY);
    expect(inspect(s, { depth: 9 })).not.toContain(API_KEY);
    expect(describeTemporalSecurity(s.security)).toBe("TLS, the system's CAs, API key set (not shown)");
  });

  it('loads mTLS from a profile (CA, client certificate and key), and from TEMPORAL_TLS_* env', () => {
    const fromFile = resolveTemporalSettings({ TEMPORAL_CONFIG_FILE: toml(PROFILES), TEMPORAL_PROFILE: 'mtls' });
    const tls = fromFile.security.tls as TemporalTls;
    expect(tls.serverName).toBe('temporal.internal');
    expect(tls.serverRootCA?.toString()).toContain('BEGIN CERTIFICATE');
    expect(tls.clientCert?.toString()).toContain('BEGIN CERTIFICATE');
    expect(tls.clientKey?.toString()).toContain('PRIVATE KEY');
    expect(JSON.stringify(fromFile)).not.toContain('PRIVATE KEY');
    const opts = connectionOptions({ address: fromFile.address!, security: fromFile.security });
    expect(opts.tls).toMatchObject({ serverNameOverride: 'temporal.internal', serverRootCACertificate: tls.serverRootCA, clientCertPair: { crt: tls.clientCert, key: tls.clientKey } });

    const fromEnv = resolveTemporalSettings({
      TEMPORAL_ADDRESS: 'temporal.internal:7233',
      TEMPORAL_TLS_SERVER_CA_CERT_PATH: f('ca.crt'),
      TEMPORAL_TLS_CLIENT_CERT_PATH: f('client.crt'),
      TEMPORAL_TLS_CLIENT_KEY_PATH: f('client.key'),
    });
    expect((fromEnv.security.tls as TemporalTls).origins).toEqual({
      serverRootCA: `TEMPORAL_TLS_SERVER_CA_CERT_PATH=${f('ca.crt')}`,
      clientCert: `TEMPORAL_TLS_CLIENT_CERT_PATH=${f('client.crt')}`,
      clientKey: `TEMPORAL_TLS_CLIENT_KEY_PATH=${f('client.key')}`,
    });
    expect(describeTemporalSecurity(fromEnv.security)).toBe(`TLS, CA from TEMPORAL_TLS_SERVER_CA_CERT_PATH=${f('ca.crt')}, client certificate TEMPORAL_TLS_CLIENT_CERT_PATH=${f('client.crt')}`);
    // TEMPORAL_TLS=false beats a profile's TLS.
    expect(resolveTemporalSettings({ TEMPORAL_CONFIG_FILE: toml(PROFILES), TEMPORAL_PROFILE: 'mtls', TEMPORAL_TLS: 'false' }).security.tls).toBe(false);
    expect(resolveTemporalSettings({ TEMPORAL_ADDRESS: 'h:1', TEMPORAL_TLS: 'true' }).security.tls).toEqual({ origins: {} });
  });

  it.each([
    [{ TEMPORAL_ADDRESS: 'h:1', TEMPORAL_TLS_SERVER_CA_CERT_PATH: '/nonexistent/ca.pem' }, 'TLS_MATERIAL_INVALID', 'TEMPORAL_TLS_SERVER_CA_CERT_PATH=/nonexistent/ca.pem: the server CA certificate file: no such file'],
    [{ TEMPORAL_ADDRESS: 'h:1', TEMPORAL_TLS_SERVER_CA_CERT_PATH: TLS }, 'TLS_MATERIAL_INVALID', 'it is a directory'],
    [{ TEMPORAL_ADDRESS: 'h:1', TEMPORAL_TLS_SERVER_CA_CERT_DATA: 'hello' }, 'TLS_MATERIAL_INVALID', 'TEMPORAL_TLS_SERVER_CA_CERT_DATA: not a PEM certificate'],
    [{ TEMPORAL_ADDRESS: 'h:1', TEMPORAL_TLS_SERVER_CA_CERT_DATA: '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----' }, 'TLS_MATERIAL_INVALID', 'certificate 1 of the file is not a valid X.509 certificate'],
    [{ TEMPORAL_ADDRESS: 'h:1', TEMPORAL_TLS_CLIENT_CERT_PATH: f('client.crt') }, 'TLS_MATERIAL_INVALID', 'a client certificate needs its private key too'],
    [{ TEMPORAL_ADDRESS: 'h:1', TEMPORAL_TLS_CLIENT_KEY_PATH: f('client.key') }, 'TLS_MATERIAL_INVALID', 'a client private key needs its certificate too'],
    [{ TEMPORAL_ADDRESS: 'h:1', TEMPORAL_TLS_CLIENT_CERT_PATH: f('client.crt'), TEMPORAL_TLS_CLIENT_KEY_PATH: f('foreign-client.key') }, 'TLS_MATERIAL_INVALID', `TEMPORAL_TLS_CLIENT_KEY_PATH=${f('foreign-client.key')}: this private key does not belong to the client certificate`],
    [{ TEMPORAL_ADDRESS: 'h:1', TEMPORAL_TLS_CLIENT_CERT_PATH: f('client.crt'), TEMPORAL_TLS_CLIENT_KEY_PATH: f('client.crt') }, 'TLS_MATERIAL_INVALID', 'not a PEM private key'],
    [{ TEMPORAL_ADDRESS: 'h:1', TEMPORAL_TLS: 'maybe' }, 'CONFIG_INVALID', 'TEMPORAL_TLS="maybe": must be true, false, 1 or 0'],
    [{ TEMPORAL_ADDRESS: 'h:1', TEMPORAL_TLS_DISABLE_HOST_VERIFICATION: 'true' }, 'CONFIG_INVALID', 'TEMPORAL_TLS_DISABLE_HOST_VERIFICATION: not supported'],
    [{ TEMPORAL_ADDRESS: 'h:1', TEMPORAL_TLS: 'false', TEMPORAL_API_KEY: API_KEY }, 'CONFIG_INVALID', "TEMPORAL_TLS turns TLS off, but an API key is set"],
    [{ TEMPORAL_ADDRESS: 'h:1', TEMPORAL_API_KEY: `${API_KEY}\nX-Injected: 1` }, 'CONFIG_INVALID', 'TEMPORAL_API_KEY: must be printable ASCII without spaces'],
    [{ TEMPORAL_ADDRESS: 'h:1', TEMPORAL_TLS_SERVER_NAME: 'bad name\u0000' }, 'CONFIG_INVALID', 'TEMPORAL_TLS_SERVER_NAME='],
    [{ TEMPORAL_ADDRESS: 'h:1', TEMPORAL_API_KEY: 'k'.repeat(20_000) }, 'CONFIG_INVALID', 'at most 16 KiB'],
    [{ TEMPORAL_ADDRESS: 'h:1', TEMPORAL_API_KEY: `${API_KEY}\ud800` }, 'CONFIG_INVALID', 'TEMPORAL_API_KEY: must be printable ASCII'],
    [{ TEMPORAL_ADDRESS: 'h:1', TEMPORAL_TLS_SERVER_CA_CERT_DATA: '\u0000'.repeat(10) }, 'TLS_MATERIAL_INVALID', 'not a PEM certificate'],
    [{ TEMPORAL_ADDRESS: 'h:1', TEMPORAL_TLS_CLIENT_CERT_PATH: '', TEMPORAL_TLS_CLIENT_KEY_PATH: f('client.key') }, 'TLS_MATERIAL_INVALID', 'a client private key needs its certificate too'],
    [{ TEMPORAL_CONFIG_FILE: '/nonexistent/temporal.toml' }, 'CONFIG_INVALID', 'TEMPORAL_CONFIG_FILE=/nonexistent/temporal.toml: no such file'],
    [{ TEMPORAL_PROFILE: 'prod' }, 'CONFIG_INVALID', 'TEMPORAL_PROFILE=prod: no such profile (no Temporal config file: set TEMPORAL_CONFIG_FILE)'],
  ] as [Record<string, string>, string, string][])('refuses %j with one clear error', (env, code, message) => {
    const e = refusal(() => resolveTemporalSettings(env));
    expect(e.code).toBe(code);
    expect(e.message).toContain(message);
    expect(e.message).not.toContain(API_KEY);
    expect(e.message).not.toContain('PRIVATE KEY');
  });

  it('names the certificate that expired or is not valid yet', () => {
    const env = { TEMPORAL_ADDRESS: 'h:1', TEMPORAL_TLS_CLIENT_CERT_PATH: f('client.crt'), TEMPORAL_TLS_CLIENT_KEY_PATH: f('client.key') };
    const expired = refusal(() => resolveTemporalSettings(env, new Date('2200-01-01')));
    expect(expired.code).toBe('TLS_MATERIAL_INVALID');
    expect(expired.message).toMatch(new RegExp(`^TEMPORAL_TLS_CLIENT_CERT_PATH=${f('client.crt').replace(/[.]/g, '\\.')}: the certificate "CN=client" expired on 2126-`));
    const early = refusal(() => resolveTemporalSettings({ TEMPORAL_ADDRESS: 'h:1', TEMPORAL_TLS_SERVER_CA_CERT_PATH: f('ca.crt') }, new Date('2000-01-01')));
    expect(early.message).toContain('the certificate "CN=ca" is not valid before');
  });

  it("refuses a bad profile file with its name and position, never quoting the line (it may hold the API key)", () => {
    const broken = toml(`[profile.default]\napi_key = "${API_KEY}\naddress = "x:1"\n`);
    const e = refusal(() => resolveTemporalSettings({ TEMPORAL_CONFIG_FILE: broken }));
    expect(e.code).toBe('CONFIG_INVALID');
    expect(e.message).toContain(broken);
    expect(e.message).toMatch(/line \d+, column \d+/);
    expect(e.message).not.toContain(API_KEY);
    const unknown = refusal(() => resolveTemporalSettings({ TEMPORAL_CONFIG_FILE: toml('[profile.default]\nadress = "x:1"\n') }));
    expect(unknown.message).toContain('key(s) unrecognized in profile.default: adress');
    const both = refusal(() => resolveTemporalSettings({ TEMPORAL_CONFIG_FILE: toml(`[profile.default]\naddress = "x:1"\n[profile.default.tls]\nclient_cert_path = "a"\nclient_cert_data = "b"\n`) }));
    expect(both.message).toContain('Cannot specify both client_cert_path and client_cert_data');
    const badAddress = refusal(() => resolveTemporalSettings({ TEMPORAL_CONFIG_FILE: toml('[profile.default]\naddress = "no-port"\n') }));
    expect(badAddress.message).toMatch(/^profile "default" of .* \(address\)="no-port": must be host:port/);
    const missingProfile = refusal(() => resolveTemporalSettings({ TEMPORAL_CONFIG_FILE: toml(PROFILES), TEMPORAL_PROFILE: 'staging' }));
    expect(missingProfile.message).toMatch(/^TEMPORAL_PROFILE=staging: no such profile in /);
  });

  it('loadConfig: the profile supplies address and namespace; TLS without an address is refused', () => {
    const c = loadConfig({ TEMPORAL_CONFIG_FILE: toml(PROFILES), TEMPORAL_PROFILE: 'mtls', TEMPORAL_NAMESPACE: 'ops' });
    expect(c.temporal.address).toBe('temporal.internal:7233');
    expect(c.temporal.namespace).toBe('ops');
    expect(c.temporal.security.tls).not.toBe(false);
    expect(c.webhooks.services).toContainEqual({ port: 7233, service: "Temporal's (TEMPORAL_ADDRESS)" });
    const e = refusal(() => loadConfig({ TEMPORAL_API_KEY: API_KEY }));
    expect(e.code).toBe('CONFIG_INVALID');
    expect(e.message).toContain('TEMPORAL_API_KEY without TEMPORAL_ADDRESS');
    expect(e.message).not.toContain(API_KEY);
    expect(refusal(() => loadConfig({ TEMPORAL_TLS_SERVER_CA_CERT_PATH: f('ca.crt') })).message).toContain('TEMPORAL_TLS settings without TEMPORAL_ADDRESS');
  });
});

describe('explaining a failed Temporal connect', () => {
  const mtls = resolveTemporalSettings({ TEMPORAL_ADDRESS: 'h:7233', TEMPORAL_TLS_SERVER_CA_CERT_PATH: f('ca.crt') });
  const endpoint = { address: 'h:7233', security: mtls.security };
  it.each([
    ['TransportError: Failed to connect: transport error: invalid peer certificate: UnknownIssuer', 'TLS_REFUSED', `the server's certificate is not signed by the CA of TEMPORAL_TLS_SERVER_CA_CERT_PATH=${f('ca.crt')}`],
    ['invalid peer certificate: NotValidForName', 'TLS_REFUSED', "the server's certificate is not for h (set TEMPORAL_TLS_SERVER_NAME"],
    ['received fatal alert: CertificateRequired', 'TLS_REFUSED', 'the server refused the TLS handshake with no client certificate'],
    ['connection refused (os error 111)', 'TEMPORAL_UNAVAILABLE', 'cannot reach Temporal at h:7233 (TLS)'],
  ])('%s -> %s', (message, code, words) => {
    const e = explainConnectFailure(new Error(message), endpoint);
    expect(e.code).toBe(code);
    expect(e.message).toContain(words);
  });
  it('masks a secret that a server error echoes', () => {
    const e = explainConnectFailure(new Error('bad request token=abcdef123'), { address: 'h:1', security: { tls: false } });
    expect(e.message).not.toContain('abcdef123');
  });
});

describe('maskSecrets and API keys', () => {
  it('masks an API key in env, TOML and JSON forms', async () => {
    const { maskSecrets } = await import('../../src/secrets.ts');
    for (const text of [`TEMPORAL_API_KEY=${API_KEY}`, `api_key = "${API_KEY}"`, `{"apiKey": "${API_KEY}"}`, `?api-key=${API_KEY}&x=1`]) {
      expect(maskSecrets(text)).not.toContain(API_KEY);
    }
  });
});
