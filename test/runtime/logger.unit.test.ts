import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { createLogger } from '../../src/runtime/logger.ts';
import { maskSecrets } from '../../src/errors.ts';

function captured() {
  const lines: string[] = [];
  const destination = new Writable({
    write(chunk, _enc, done) {
      lines.push(String(chunk));
      done();
    },
  });
  return { lines, logger: createLogger('info', { destination }) };
}

describe('logs never show a password', () => {
  it('masks database URLs in messages, fields, nested fields and errors', () => {
    const { lines, logger } = captured();
    logger.info('connecting to postgres://fp:hunter2@db:5432/fleetpatch');
    logger.warn({ database: 'postgresql://fp:hunter2@db/x', nested: { url: 'postgres://a:hunter2@h/d' } }, 'retrying');
    logger.error({ err: new Error('cannot reach postgres://fp:hunter2@db/x') }, 'failed for postgres://fp:hunter2@db/x');
    logger.info({ password: 'hunter2' }, 'a password field');
    const all = lines.join('');
    expect(all).not.toContain('hunter2');
    expect(all).toContain('postgres://fp:***@db:5432/fleetpatch');
    expect(lines).toHaveLength(4);
  });

  it('maskSecrets: passwords with @ or : inside, password= parameters; leaves the rest alone', () => {
    expect(maskSecrets('postgres://u:p@ss:w@host/db and more')).toBe('postgres://u:***@host/db and more');
    expect(maskSecrets('host=db password=hunter2 user=fp')).toBe('host=db password=*** user=fp');
    expect(maskSecrets('postgres://db/x?user=fp&password=hunter2')).toBe('postgres://db/x?user=fp&password=***');
    expect(maskSecrets('http://127.0.0.1:9400/hosts/h')).toBe('http://127.0.0.1:9400/hosts/h');
    expect(maskSecrets('postgres://user@host/db')).toBe('postgres://user@host/db');
  });
});
