/**
 * `fleetpatch payload`: inspect, check, build, sign and verify live-patch payloads.
 *
 * Xen refusals print as `EINVAL (22): <reason>` (the sentence Xen keeps on its console) and exit 1.
 */
import { writeFile, chmod, stat } from 'node:fs/promises';
import path from 'node:path';
import { parse as parseYaml } from 'yaml';
import { FleetpatchError, XenError } from '../errors.ts';
import {
  DEFAULT_IMAGE, buildPayload, cannotTell, checkUpload, constantReturnOf, generateSigningKey, parsePayload, publicKeyToFile,
  readImage, readPublicKey, readSignature, readSigningKey, signPayload, signingKeyToFile, verifyPayload,
  type CheckedPayload, type HypervisorImage, type LivepatchPayload, type LoadedPayload,
} from '../payload/index.ts';
import { boundedText, parseCommandArgs, requirePositional } from './args.ts';
import { withServices } from '../app/context.ts';
import { EventStore } from '../events/store.ts';
import { PayloadStore } from '../events/payload-store.ts';
import type { CliIO, Command } from './io.ts';
import { readInputFile, type FileKind } from '../runtime/files.ts';
import { describeAddress, hex, payloadToJson } from '../payload/inspect-json.ts';

export { payloadToJson };

const USAGE = `Usage: fleetpatch payload <command>

Commands:
  inspect <file> [--json]                 what a payload contains (format, build-ids, functions, ...)
  check <file> --image <xen-syms|default> [--name N] [--loaded <payload>]...
                                          Xen's upload checks against that hypervisor
  build --spec <spec.yaml> --out <file> [--image <xen-syms|default>] [--on <payload>]
                                          write a payload from a spec (see docs/payloads.md)
  keygen --out <prefix>                   write <prefix>.key (ed25519 signing key) and <prefix>.pub
  sign <file> --key <file.key> [--out <file.sig>]
                                          detached ed25519 signature over the payload bytes
  verify <file> --trust <file.pub>... [--sig <file.sig>]
                                          check a signature against trusted public keys
  store <file> [--sig <file.sig>] [--by WHO]
                                          keep the payload's bytes in the payload store, so a
                                          rollback can upload it again after a REPLACE reverted it
                                          (payloads loaded outside fleetpatch)`;

const KIND = { payload: 'payload', 'hypervisor image': 'image', spec: 'spec', 'signing key': 'key', 'public key': 'key', signature: 'signature' } as const satisfies Record<string, FileKind>;

/** A file named on the command line: stat first, regular files only, bounded by its kind (files.ts). */
async function readBytes(file: string, what: keyof typeof KIND): Promise<Uint8Array> {
  return readInputFile(file, KIND[what]);
}

async function readText(file: string, what: keyof typeof KIND): Promise<string> {
  return new TextDecoder().decode(await readBytes(file, what));
}

/** xen-livepatch's rule: the name is the file name without its last extension. */
function payloadName(file: string): string {
  const base = path.basename(file);
  const dot = base.lastIndexOf('.');
  return dot > 0 ? base.slice(0, dot) : base;
}

async function loadImage(spec: string): Promise<HypervisorImage> {
  if (spec === 'default') return DEFAULT_IMAGE;
  return readImage(await readBytes(spec, 'hypervisor image'), path.basename(spec));
}

function printPayload(io: CliIO, file: string, p: LivepatchPayload): void {
  io.out(`${file}: ${p.format} payload, ${p.size} bytes`);
  io.out(`  build-id     ${p.buildIdHex}`);
  io.out(`  depends      ${p.dependsHex}`);
  io.out(`  xen_depends  ${p.xenDependsHex ?? '(none: Xen 4.14+ refuses the upload)'}`);
  io.out(`  functions    ${p.funcs.length}`);
  for (const f of p.funcs) {
    const target = describeAddress(f.oldAddress) ?? `${f.name ?? '?'} (looked up by name)`;
    if (f.nop) {
      io.out(`    ${f.name ?? '(no name)'}: NOP ${f.newSize} of ${f.oldSize} bytes at ${target}  [v${f.version}]`);
    } else {
      const r = constantReturnOf(p, f.newAddress);
      const returns = r.kind === 'undefined' ? `; ${cannotTell(f.newSymbol ?? 'the replacement', r.why)}` : `, returns ${r.kind === 'string' ? JSON.stringify(r.value) : r.value}`;
      io.out(`    ${f.name ?? '(no name)'}: patch ${target} (${f.oldSize} bytes) with ${describeAddress(f.newAddress)} (${f.newSize} bytes)${returns}  [v${f.version}]`);
    }
  }
  const h = p.hooks;
  const single = (['preApply', 'apply', 'postApply', 'preRevert', 'revert', 'postRevert'] as const).filter((k) => h[k] !== null);
  const hooks = [h.load.length ? `load ${h.load.length}` : '', h.unload.length ? `unload ${h.unload.length}` : '', ...single].filter(Boolean);
  io.out(`  hooks        ${hooks.length ? hooks.join(', ') : 'none'}`);
  io.out(`  modinfo      ${p.modinfo.length ? p.modinfo.map((m) => m.raw).join('; ') : 'none'}`);
  io.out(`  re-apply     ${p.canReapply ? 'yes, after a revert' : `no: writable data in ${p.writableSections.filter((s) => s !== p.funcsSection).join(', ') || p.writableSections.join(', ')}`}`);
}

/** Runs fn; a Xen refusal becomes "EINVAL (22): reason" on stderr and exit status 1. */
async function xenRefusals(io: CliIO, json: boolean, fn: () => Promise<number>): Promise<number> {
  try {
    return await fn();
  } catch (e) {
    if (!(e instanceof XenError)) throw e;
    io.err(e.describe());
    if (json) io.out(JSON.stringify({ ok: false, error: { errno: e.errno, errnoName: e.errnoName, message: e.message, details: e.details } }));
    return 1;
  }
}

const inspect: Command = async (args, io) => {
  const { values, positionals } = parseCommandArgs(args, { json: { type: 'boolean' } }, 'payload inspect');
  const file = requirePositional(positionals, 0, 'payload file', 'payload inspect');
  const bytes = await readBytes(file, 'payload');
  return xenRefusals(io, !!values.json, async () => {
    const p = parsePayload(bytes, { name: payloadName(file) });
    if (values.json) io.out(JSON.stringify(payloadToJson(p, file), null, 2));
    else printPayload(io, file, p);
    return 0;
  });
};

const check: Command = async (args, io) => {
  const { values, positionals } = parseCommandArgs(
    args,
    { image: { type: 'string' }, name: { type: 'string' }, loaded: { type: 'string', multiple: true }, json: { type: 'boolean' } },
    'payload check',
  );
  const file = requirePositional(positionals, 0, 'payload file', 'payload check');
  if (!values.image) throw new FleetpatchError('USAGE', 'payload check: --image <xen-syms|default> is required');
  const image = await loadImage(values.image);
  const loaded: LoadedPayload[] = [];
  const bytes = await readBytes(file, 'payload');
  return xenRefusals(io, !!values.json, async () => {
    for (const other of values.loaded ?? []) {
      let c: CheckedPayload;
      try {
        c = checkUpload({ name: payloadName(other), bytes: await readBytes(other, 'payload'), image, loaded });
      } catch (e) {
        if (e instanceof XenError) io.err(`(the already-loaded payload ${other} does not load itself)`);
        throw e;
      }
      loaded.push({ name: c.name, buildId: c.payload.buildId, symbols: c.exportedSymbols, loadAddress: c.loadAddress, pages: c.pages });
    }
    const c = checkUpload({ name: values.name ?? payloadName(file), bytes, image, loaded });
    if (values.json) {
      io.out(JSON.stringify({
        ok: true,
        name: c.name,
        image: { name: image.name, buildId: image.buildIdHex },
        loadAddress: hex(c.loadAddress),
        funcs: c.funcs.map((f) => ({ name: f.func.name, oldAddress: hex(f.oldAddress), newAddress: hex(f.newAddress), oldResolvedBy: f.oldResolvedBy, oldFrom: f.oldFrom })),
        newSymbols: c.exportedSymbols.map((s) => s.name),
      }, null, 2));
    } else {
      io.out(`${c.name}: passes Xen's upload checks against ${image.name} (build-id ${image.buildIdHex})`);
      for (const f of c.funcs) {
        const how = f.oldResolvedBy === 'name' ? ' (found by name)' : f.oldResolvedBy === 'absolute' ? ' (absolute)' : '';
        io.out(`  ${f.func.name ?? '(no name)'}: ${hex(f.oldAddress)}${how} -> ${f.func.nop ? `NOP ${f.func.newSize} bytes` : hex(f.newAddress)}`);
      }
    }
    return 0;
  });
};

const build: Command = async (args, io) => {
  const { values } = parseCommandArgs(
    args,
    { spec: { type: 'string' }, out: { type: 'string', short: 'o' }, image: { type: 'string' }, on: { type: 'string' } },
    'payload build',
  );
  if (!values.spec) throw new FleetpatchError('USAGE', 'payload build: --spec <spec.yaml|json> is required');
  if (!values.out) throw new FleetpatchError('USAGE', 'payload build: --out <file> is required');
  let spec: unknown;
  try {
    spec = parseYaml(await readText(values.spec, 'spec'));
  } catch (e) {
    if (e instanceof FleetpatchError) throw e;
    throw new FleetpatchError('PAYLOAD_SPEC_INVALID', `${values.spec} is not YAML or JSON: ${(e as Error).message}`);
  }
  const image = values.image ? await loadImage(values.image) : undefined;
  return xenRefusals(io, false, async () => {
    if (values.on) {
      const below = parsePayload(await readBytes(values.on, 'payload'), { name: payloadName(values.on) });
      if (typeof spec !== 'object' || spec === null) throw new FleetpatchError('PAYLOAD_SPEC_INVALID', 'the spec must be an object');
      spec = { ...(spec as Record<string, unknown>), depends: below.buildIdHex };
    }
    const bytes = buildPayload(spec as never, image ? { image } : {});
    const p = parsePayload(bytes, { name: payloadName(values.out!) });
    await writeFile(values.out!, bytes);
    io.out(`wrote ${values.out} (${bytes.length} bytes, build-id ${p.buildIdHex}, depends ${p.dependsHex})`);
    return 0;
  });
};

const keygen: Command = async (args, io) => {
  const { values } = parseCommandArgs(args, { out: { type: 'string', short: 'o' } }, 'payload keygen');
  if (!values.out) throw new FleetpatchError('USAGE', 'payload keygen: --out <prefix> is required');
  const key = generateSigningKey();
  await writeFile(`${values.out}.key`, JSON.stringify(signingKeyToFile(key), null, 2) + '\n', { mode: 0o600 });
  await chmod(`${values.out}.key`, 0o600);
  await writeFile(`${values.out}.pub`, JSON.stringify(publicKeyToFile(key), null, 2) + '\n');
  io.out(`wrote ${values.out}.key (keep it secret) and ${values.out}.pub, key id ${key.keyId}`);
  return 0;
};

const signCommand: Command = async (args, io) => {
  const { values, positionals } = parseCommandArgs(args, { key: { type: 'string' }, out: { type: 'string', short: 'o' } }, 'payload sign');
  const file = requirePositional(positionals, 0, 'payload file', 'payload sign');
  if (!values.key) throw new FleetpatchError('USAGE', 'payload sign: --key <file.key> is required');
  const key = readSigningKey(await readText(values.key, 'signing key'));
  const bytes = await readBytes(file, 'payload');
  return xenRefusals(io, false, async () => {
    // Only well-formed payloads get signed: a signature vouches for something Xen would read.
    const p = parsePayload(bytes, { name: payloadName(file) });
    const out = values.out ?? `${file}.sig`;
    await writeFile(out, JSON.stringify(signPayload(bytes, key, p.buildIdHex), null, 2) + '\n');
    io.out(`wrote ${out}: ${payloadName(file)} (build-id ${p.buildIdHex}) signed by key ${key.keyId}`);
    return 0;
  });
};

const verifyCommand: Command = async (args, io) => {
  const { values, positionals } = parseCommandArgs(args, { trust: { type: 'string', multiple: true }, sig: { type: 'string' } }, 'payload verify');
  const file = requirePositional(positionals, 0, 'payload file', 'payload verify');
  if (!values.trust?.length) throw new FleetpatchError('USAGE', 'payload verify: at least one --trust <file.pub> is required');
  const trusted = await Promise.all(values.trust.map(async (t) => readPublicKey(await readText(t, 'public key'))));
  const signature = readSignature(await readText(values.sig ?? `${file}.sig`, 'signature'));
  const key = verifyPayload(await readBytes(file, 'payload'), signature, trusted);
  io.out(`${file}: good signature by trusted key ${key.keyId}${signature.buildId ? ` (build-id ${signature.buildId})` : ''}`);
  return 0;
};

/**
 * Stores a payload loaded outside fleetpatch (by hand, by another tool): Xen cannot hand payload
 * bytes back, so without them a rollback could not put it back after a REPLACE reverted it.
 */
const store: Command = async (args, io) => {
  const { values, positionals } = parseCommandArgs(args, { sig: { type: 'string' }, by: { type: 'string' } }, 'payload store');
  const file = requirePositional(positionals, 0, 'payload file', 'payload store');
  const bytes = await readBytes(file, 'payload');
  const sigFile = values.sig ?? `${file}.sig`;
  const signature = values.sig !== undefined || (await fileExists(sigFile)) ? readSignature(await readText(sigFile, 'signature')) : null;
  return xenRefusals(io, false, async () => {
    const p = parsePayload(bytes, { name: payloadName(file) });
    return withServices({ database: true, temporal: false }, async ({ services }) => {
      const by = { kind: 'user' as const, id: boundedText(values.by ?? (process.env.USER || 'operator'), '--by', 200, 'payload store') ?? 'operator' };
      const r = await new PayloadStore(new EventStore(services.pool)).put(
        { name: payloadName(file), buildId: p.buildIdHex, bytes, depends: p.dependsHex, xenDepends: p.xenDependsHex, ...(signature ? { signature } : {}) },
        { actor: by },
      );
      io.out(`${r.created ? 'stored' : 'already stored'}: ${r.payload.name} (build-id ${p.buildIdHex}), ${bytes.length} bytes, sha256 ${r.payload.sha256.slice(0, 16)}…${signature ? `, signed by key ${signature.keyId}` : ', unsigned'}`);
      io.out('fleetpatch can now upload it again wherever a restore needs it.');
      return 0;
    });
  });
};

async function fileExists(file: string): Promise<boolean> {
  return stat(file).then(
    (s) => s.isFile(),
    () => false,
  );
}

const SUBCOMMANDS: Record<string, Command> = { inspect, check, build, keygen, sign: signCommand, verify: verifyCommand, store };

export const payloadCommand: Command = async (args, io) => {
  const [sub, ...rest] = args;
  if (!sub || sub === '--help' || sub === '-h' || sub === 'help') {
    io.out(USAGE);
    if (!sub) throw new FleetpatchError('USAGE', 'payload: missing command (inspect, check, build, keygen, sign, verify, store)');
    return 0;
  }
  const command = Object.hasOwn(SUBCOMMANDS, sub) ? SUBCOMMANDS[sub] : undefined;
  if (!command) throw new FleetpatchError('USAGE', `payload: unknown command "${sub}" (inspect, check, build, keygen, sign, verify, store)`);
  return command(rest, io);
};
