/**
 * maskSecrets, the one masking function: no generated password survives into what fleetpatch
 * shows, in any URL form, in any of the places it shows text (a config refusal, the CLI's error
 * line, a log record). Passwords are made of the characters that break URL parsing and regexes
 * plus letters that appear nowhere else (µ, ç, €): any of those in the output is a leaked piece.
 */
import { Writable } from 'node:stream';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { maskSecrets } from '../../src/secrets.ts';
import { loadConfig } from '../../src/runtime/config.ts';
import { createLogger } from '../../src/runtime/logger.ts';
import { redactUrl } from '../../src/runtime/database.ts';
import { FleetpatchError } from '../../src/errors.ts';
import { memoryIO } from '../../src/cli/io.ts';
import { reportError } from '../../src/cli/main.ts';
import { toActivityFailure } from '../../activities/failure.ts';

const SECRET_LETTERS = ['µ', 'ç', '€'];
const LEAK = /[µç€]/;
const SPECIALS = [...`/#?@:&=%"'\\;,+!$*()[]{}<>|^~\`.-_`];

/** A password without whitespace: what a URL, a query or an unquoted conninfo value can hold. */
const word = fc
  .array(fc.oneof(fc.constantFrom(...SPECIALS), fc.constantFrom(...SECRET_LETTERS)), { minLength: 1, maxLength: 24 })
  .filter((cs) => cs.some((c) => SECRET_LETTERS.includes(c)))
  .map((cs) => cs.join(''));
/** A password with spaces too, for the quoted conninfo form. */
const phrase = fc
  .array(fc.oneof(fc.constantFrom(...SPECIALS, ' ', '  '), fc.constantFrom(...SECRET_LETTERS)), { minLength: 1, maxLength: 24 })
  .filter((cs) => cs.some((c) => SECRET_LETTERS.includes(c)))
  .map((cs) => cs.join(''));

const userinfoUrl = fc
  .record({
    scheme: fc.constantFrom('postgres', 'postgresql', 'http', 'https', 'mysql'),
    user: fc.constantFrom('', 'u', 'fleet_patch', 'a.b-c', 'x%40y'),
    host: fc.constantFrom('db', '127.0.0.1', '[::1]', '', 'db.internal'),
    port: fc.constantFrom('', ':5432', ':1'),
    path: fc.constantFrom('', '/', '/x', '/fleetpatch'),
    query: fc.constantFrom('', '?sslmode=require', '?application_name=a@b', '#frag'),
    password: word,
  })
  .map((r) => ({ text: `${r.scheme}://${r.user}:${r.password}@${r.host}${r.port}${r.path}${r.query}`, password: r.password }));

const queryUrl = fc
  .record({
    base: fc.constantFrom('postgres://db/x', 'postgres://fp@db:5432/x', 'postgresql://[::1]/x', 'postgres://db:5432/'),
    before: fc.constantFrom('?', '?user=fp&', '?sslmode=require&'),
    key: fc.constantFrom('password', 'sslpassword', 'PASSWORD', 'SslPassword'),
    after: fc.constantFrom('', '&sslmode=require', '&application_name=fp'),
    password: word,
  })
  .map((r) => ({ text: `${r.base}${r.before}${r.key}=${r.password}${r.after}`, password: r.password }));

const conninfo = fc
  .record({
    key: fc.constantFrom('password', 'sslpassword'),
    spaced: fc.boolean(),
    password: word.filter((w) => w[0] !== "'" && w[0] !== '"'),
  })
  .map((r) => ({ text: `host=db port=5432 ${r.key}${r.spaced ? ' = ' : '='}${r.password} user=fp dbname=x`, password: r.password }));

const quotedConninfo = fc
  .record({ key: fc.constantFrom('password', 'sslpassword'), password: phrase })
  .map((r) => ({ text: `host=db ${r.key}='${r.password.replace(/[\\']/g, (c) => `\\${c}`)}' user=fp`, password: r.password }));

const bareUserinfo = fc
  // `u://x@h` is a URL with user x: a password cannot start with // here.
  .record({ user: fc.constantFrom('u', 'fleet', 'a.b'), host: fc.constantFrom('db:5432/x', 'h', '127.0.0.1:7233'), password: word.filter((w) => !w.startsWith('//')) })
  .map((r) => ({ text: `${r.user}:${r.password}@${r.host}`, password: r.password }));

const jsonMember = word.map((password) => ({ text: JSON.stringify({ user: 'fp', password, host: 'db' }), password }));

const anyForm = fc.oneof(userinfoUrl, queryUrl, conninfo, quotedConninfo, bareUserinfo, jsonMember);
/** Forms whose text may be JSON-quoted (as a config refusal shows a value). */
const quotableForm = fc.oneof(userinfoUrl, queryUrl, conninfo, bareUserinfo);

const contexts = [
  (s: string) => s,
  (s: string) => `cannot reach PostgreSQL at ${s}: connect ECONNREFUSED 127.0.0.1:5432`,
  (s: string) => `${s}\nsecond line`,
  (s: string) => `(${s}) and http://127.0.0.1:9400/hosts/h1`,
];

describe('maskSecrets: no generated password survives', () => {
  it('in any URL form, alone or in a sentence', () => {
    fc.assert(
      fc.property(anyForm, fc.constantFrom(...contexts), ({ text }, context) => {
        const out = maskSecrets(context(text));
        expect(out).not.toMatch(LEAK);
        expect(out).toContain('***');
        // Masking again changes nothing.
        expect(maskSecrets(out)).toBe(out);
      }),
      { numRuns: 2000 },
    );
  });

  it('in a JSON-quoted value, as a refusal shows one', () => {
    fc.assert(
      fc.property(quotableForm, ({ text }) => {
        expect(maskSecrets(`DATABASE_URL=${JSON.stringify(text)}: must be a URL like postgres://user@host:5432/database`)).not.toMatch(LEAK);
      }),
      { numRuns: 1000 },
    );
  });

  it('in a DATABASE_URL that config refuses, in the error and on the CLI line (in-process)', () => {
    fc.assert(
      fc.property(anyForm, ({ text }) => {
        let error: unknown = null;
        try {
          loadConfig({ DATABASE_URL: text, LOG_LEVEL: 'loud' });
        } catch (e) {
          error = e;
        }
        expect(error).toBeInstanceOf(FleetpatchError);
        const e = error as FleetpatchError;
        expect(e.code).toBe('CONFIG_INVALID');
        expect(e.message + JSON.stringify(e.details)).not.toMatch(LEAK);
        const io = memoryIO();
        reportError(e, io, { json: true });
        expect(io.stderr.join('\n') + io.stdout.join('\n')).not.toMatch(LEAK);
      }),
      { numRuns: 500 },
    );
  });

  it('in log records: messages, fields, errors and child bindings', () => {
    const lines: string[] = [];
    const destination = new Writable({
      write(chunk, _enc, done) {
        lines.push(String(chunk));
        done();
      },
    });
    const logger = createLogger('info', { destination });
    fc.assert(
      fc.property(anyForm, ({ text }) => {
        lines.length = 0;
        logger.info(`connecting to ${text}`);
        logger.warn({ database: text, nested: { url: [text] } }, 'retrying');
        logger.error({ err: new Error(`failed: ${text}`) }, 'failed');
        logger.child({ database: text }).info('child');
        expect(lines).toHaveLength(4);
        expect(lines.join('')).not.toMatch(LEAK);
      }),
      { numRuns: 300 },
    );
  });

  it('in what an activity failure carries into Temporal', () => {
    fc.assert(
      fc.property(anyForm, ({ text }) => {
        const own = toActivityFailure(new FleetpatchError('DATABASE_UNAVAILABLE', `cannot reach ${text}`)) as Error;
        const other = toActivityFailure(new Error(`connect to ${text} failed`)) as Error;
        expect(`${own.message} ${own.stack} ${other.message} ${other.stack}`).not.toMatch(LEAK);
      }),
      { numRuns: 300 },
    );
  });
});

describe('maskSecrets: the forms the issue names, and what it leaves alone', () => {
  it.each([
    ['postgres://u:ab/cdSECRET@127.0.0.1:1/x', 'postgres://u:***@127.0.0.1:1/x'],
    ['postgres://u:ab#cdSECRET@127.0.0.1:1/x', 'postgres://u:***@127.0.0.1:1/x'],
    ['postgres://u:ab?cdSECRET@127.0.0.1:1/x', 'postgres://u:***@127.0.0.1:1/x'],
    ['postgres://u:p@ss:w@host/db and more', 'postgres://u:***@host/db and more'],
    ['postgres://db/x?user=fp&sslpassword=SECRET&sslmode=require', 'postgres://db/x?user=fp&sslpassword=***&sslmode=require'],
    ['postgres://db/x?user=fp&password=hunter2', 'postgres://db/x?user=fp&password=***'],
    ['host=db password=hunter2 user=fp', 'host=db password=*** user=fp'],
    ["host=db password='a \\' SECRET' user=fp", 'host=db password=*** user=fp'],
    ['PGPASSWORD=hunter2 psql', 'PGPASSWORD=*** psql'],
    ['fp:SECRET@db:5432/x', 'fp:***@db:5432/x'],
    ['postgres://u:my SECRET@db/x', 'postgres://u:***@db/x'],
    ['{"password":"SECRET"}', '{"password":"***"}'],
  ])('%s -> %s', (text, masked) => {
    expect(maskSecrets(text)).toBe(masked);
  });

  it.each([
    'http://127.0.0.1:9400/hosts/h1: HOST_UNREACHABLE; event host-h1@7',
    'postgres://user@host/db',
    'http://[::1]:8080/x',
    'file:///etc/passwd',
    'rollout-r1@6: expected hash 00ff',
    'FLEETPATCH_WEBHOOK_SECRET=(hidden): must be at least 16 characters',
    '',
  ])('leaves %j alone', (text) => {
    expect(maskSecrets(text)).toBe(text);
  });

  it('is what redactUrl does (one function)', () => {
    expect(redactUrl('postgres://u:ab/cdSECRET@db/x')).toBe('postgres://u:***@db/x');
  });
});
