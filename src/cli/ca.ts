/**
 * `fleetpatch ca init`: the fleet CA in <data dir>/ca (made once, never replaced).
 * `fleetpatch ca issue --worker NAME [--out DIR]`: a worker's key and certificate (clientAuth,
 * SAN URI fleetpatch://worker/NAME) with the CA beside them, as key.pem (0600), cert.pem, ca.pem:
 * the directory a worker reads (FLEETPATCH_WORKER_TLS_DIR, default <data dir>/worker-tls).
 */
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { FleetpatchError } from '../errors.ts';
import { loadConfig } from '../runtime/config.ts';
import { caFiles, initCa, issueWorkerCertificate, loadCa } from '../pki/ca.ts';
import { parseCommandArgs } from './args.ts';
import type { CliIO, Command } from './io.ts';

const WORKER_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;

function usage(io: CliIO): void {
  io.out('Usage: fleetpatch ca init [--name CN]');
  io.out('       fleetpatch ca issue --worker NAME [--out DIR]');
  io.out('');
  io.out('  init    make the fleet CA in <data dir>/ca (ca.pem, ca.key.pem 0600); never replaces one');
  io.out('  issue   a worker\'s client certificate for mutual TLS with the agents: key.pem, cert.pem, ca.pem');
  io.out('          in DIR (default FLEETPATCH_WORKER_TLS_DIR or <data dir>/worker-tls)');
}

export const caCommand: Command = async (args, io) => {
  const [sub, ...rest] = args;
  const { values, positionals } = parseCommandArgs(rest, { name: { type: 'string' }, worker: { type: 'string' }, out: { type: 'string' }, json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } }, `ca ${sub ?? ''}`.trim());
  if (!sub || sub === '--help' || sub === '-h' || values.help) {
    usage(io);
    if (!sub) throw new FleetpatchError('USAGE', 'ca: missing command (init, issue)');
    return 0;
  }
  if (positionals.length) throw new FleetpatchError('USAGE', `ca ${sub}: unexpected argument "${positionals[0]!.slice(0, 60)}"`);
  const config = loadConfig();
  switch (sub) {
    case 'init': {
      if (values.name !== undefined && (values.name.length === 0 || values.name.length > 64)) throw new FleetpatchError('USAGE', 'ca init: --name must be 1 to 64 characters');
      const ca = await initCa(config.dataDir, values.name ? { name: values.name } : {});
      const files = caFiles(config.dataDir);
      if (values.json) io.out(JSON.stringify({ cert: files.cert, key: files.key, fingerprint: ca.fingerprint, notAfter: new Date(ca.cert.validTo).toISOString() }));
      else {
        io.out(`Fleet CA made: ${files.cert} (key ${files.key}, 0600)`);
        io.out(`sha256 ${ca.fingerprint}, valid until ${new Date(ca.cert.validTo).toISOString()}`);
        io.out('Next: fleetpatch ca issue --worker NAME (for each worker), then fleetpatch hosts enroll <id> (for each host)');
      }
      return 0;
    }
    case 'issue': {
      const name = values.worker;
      if (!name) throw new FleetpatchError('USAGE', 'ca issue: --worker NAME is required');
      if (!WORKER_NAME.test(name)) throw new FleetpatchError('USAGE', `ca issue: --worker must be 1 to 63 letters, digits, ".", "_" or "-", starting with a letter or digit, not ${JSON.stringify(name.slice(0, 40))}`);
      const ca = await loadCa(config.dataDir);
      const issued = await issueWorkerCertificate(ca, name);
      const out = path.resolve(values.out ?? config.workerTlsDir);
      await mkdir(out, { recursive: true, mode: 0o700 });
      // The key first and private; the certificate and CA are public.
      await writeFile(path.join(out, 'key.pem'), issued.keyPem, { mode: 0o600 });
      await writeFile(path.join(out, 'cert.pem'), issued.certPem, { mode: 0o644 });
      await writeFile(path.join(out, 'ca.pem'), ca.certPem, { mode: 0o644 });
      if (values.json) io.out(JSON.stringify({ worker: name, dir: out, fingerprint: issued.fingerprint, notAfter: issued.notAfter }));
      else io.out(`Worker ${name}: ${out}/{key,cert,ca}.pem (certificate sha256 ${issued.fingerprint.slice(0, 16)}…, valid until ${issued.notAfter})`);
      return 0;
    }
    default:
      throw new FleetpatchError('USAGE', `ca: unknown command "${sub.slice(0, 40)}" (init, issue)`);
  }
};
