/**
 * Passwords out of every text fleetpatch shows or keeps: error messages, log records, a webhook's
 * recorded attempt, a failure that travels through Temporal's history. One function for all of
 * them, so that a form fixed once is fixed everywhere.
 *
 * It works on text, not on parsed URLs, because the texts that leak are the ones that do not parse:
 * a DATABASE_URL with an unencoded `/`, `#`, `?` or `@` in its password is refused by the URL parser
 * and then shown in the refusal. So it errs on the side of hiding too much:
 * - `scheme://user:password@host`: everything between the first `:` after `//` and the last `@`
 *   of the URL (the run of text up to whitespace), whatever the password holds; a URL whose `@`
 *   never comes (`scheme://user:pass` that is no host:port) loses everything after the `:`;
 * - `user:password@host` without a scheme, as a whole word;
 * - key=value pairs whose key ends in password, passwd, secret, token or api_key (apiKey, api-key,
 *   TEMPORAL_API_KEY): URL query parameters
 *   (`?password=`, `&sslpassword=`), libpq conninfo strings (`password=...`, `password='...'` with
 *   `\'` inside), environment-style `PGPASSWORD=...`; the value runs to whitespace, or to the next
 *   `&name=` / `;name=`;
 * - JSON members of the same keys (`"password": "..."`).
 * What it cannot tell apart: whitespace inside a URL's password (an invalid URL: whitespace must be
 * percent-encoded) ends the URL, unless the text up to the `@` on the same line cannot be a
 * host:port. Pure: no I/O, no node module (src/errors.ts, which workflow code imports, uses it).
 */

export const MASK = '***';

/** What an earlier pass left: masking again changes nothing (the CLI masks a message that config masked). */
const ALREADY_MASKED = /^(?:\*\*\*|\(hidden\))["',;:.)\]}]*$/;

const SCHEME = /[A-Za-z][A-Za-z0-9+.-]*:\/\//g;
const SECRET_KEY = String.raw`[A-Za-z0-9_.\-]*(?:password|passwd|secret|token|api[_-]?key)`;
/** `key = value`; the value (quoted or not) is found by valueEnd. */
const KEY_VALUE = new RegExp(String.raw`(?<![A-Za-z0-9_.\-])${SECRET_KEY}(?![A-Za-z0-9_.\-])[ \t]*=[ \t]*`, 'gi');
const JSON_MEMBER = new RegExp(String.raw`("${SECRET_KEY}"\s*:\s*")((?:[^"\\]|\\.)*)"`, 'gi');
/** A word `user:password@host` (no scheme): its start, user name, and everything to its last `@`. */
const BARE_USERINFO = /(^|[\s="'(<,[])([A-Za-z0-9._%+-]*):(\S*)@/g;
/** Where an unquoted value ends besides whitespace: the next query or ODBC parameter. */
const NEXT_PARAMETER = /[&;][A-Za-z][A-Za-z0-9_.-]*=/g;

/** `text` with every password it holds replaced by `***`. */
export function maskSecrets(text: string): string {
  if (text.length === 0) return text;
  return maskBareUserinfo(maskUrlUserinfo(maskKeyValues(maskJsonMembers(text))));
}

function isSpace(c: string | undefined): boolean {
  return c === ' ' || c === '\t' || c === '\n' || c === '\r' || c === '\f' || c === '\v' || (c !== undefined && c > '\x7f' && /\s/.test(c));
}

/** The index of the first whitespace at or after `from` (or the end). */
function tokenEnd(text: string, from: number): number {
  let i = from;
  while (i < text.length && !isSpace(text[i])) i++;
  return i;
}

function lastIndexIn(text: string, ch: string, from: number, to: number): number {
  for (let i = to - 1; i >= from; i--) if (text[i] === ch) return i;
  return -1;
}

/** Replaces the spans [from, to) with MASK, spans sorted and apart. */
function replaceSpans(text: string, spans: readonly (readonly [number, number])[]): string {
  if (spans.length === 0) return text;
  let out = '';
  let copied = 0;
  for (const [from, to] of spans) {
    out += text.slice(copied, from) + MASK;
    copied = to;
  }
  return out + text.slice(copied);
}

function maskJsonMembers(text: string): string {
  return text.replace(JSON_MEMBER, (whole, head: string, value: string) => (value === '' || ALREADY_MASKED.test(value) ? whole : `${head}${MASK}"`));
}

/**
 * Where a key=value value that starts at `from` ends: a quoted one (conninfo: `'...'`, `\'`
 * inside) at its closing quote, unless the word goes on after it (a quote inside a URL's query
 * value quotes nothing); an unquoted one at whitespace or the next parameter.
 */
function valueEnd(text: string, from: number): number {
  const quote = text[from];
  if (quote === "'" || quote === '"') {
    for (let i = from + 1; i < text.length; i++) {
      if (text[i] === '\\') i++;
      else if (text[i] === quote) return i + 1 >= text.length || isSpace(text[i + 1]) ? i + 1 : unquotedEnd(text, i + 1);
    }
    // No closing quote: everything to the end of the line is the value.
    const nl = text.slice(from).search(/[\n\r]/);
    return nl < 0 ? text.length : from + nl;
  }
  return unquotedEnd(text, from);
}

function unquotedEnd(text: string, from: number): number {
  const end = tokenEnd(text, from);
  NEXT_PARAMETER.lastIndex = from;
  const next = NEXT_PARAMETER.exec(text);
  return next && next.index < end ? next.index : end;
}

function maskKeyValues(text: string): string {
  const spans: [number, number][] = [];
  let after = 0;
  for (const m of text.matchAll(KEY_VALUE)) {
    const from = m.index + m[0].length;
    if (m.index < after) continue;
    const to = valueEnd(text, from);
    if (to <= from || ALREADY_MASKED.test(text.slice(from, to))) continue;
    spans.push([from, to]);
    after = to;
  }
  return replaceSpans(text, spans);
}

/**
 * The `@` that ends a password holding whitespace: the last `@` of the first word that has one,
 * on the same line and before the next URL; null when there is none.
 */
function atBeyond(text: string, from: number): number | null {
  let limit = text.length;
  const nl = text.slice(from).search(/[\n\r]/);
  if (nl >= 0) limit = from + nl;
  SCHEME.lastIndex = from;
  const nextUrl = SCHEME.exec(text);
  if (nextUrl && nextUrl.index < limit) limit = nextUrl.index;
  const at = text.indexOf('@', from);
  if (at < 0 || at >= limit) return null;
  return lastIndexIn(text, '@', at, tokenEnd(text, at));
}

function maskUrlUserinfo(text: string): string {
  const spans: [number, number][] = [];
  let after = 0;
  for (const m of text.matchAll(SCHEME)) {
    if (m.index < after) continue;
    const start = m.index + m[0].length;
    const end = tokenEnd(text, start);
    const lastAt = lastIndexIn(text, '@', start, end);
    let from = -1;
    let to = -1;
    if (lastAt >= 0) {
      const colon = text.indexOf(':', start);
      if (colon >= 0 && colon < lastAt) [from, to] = [colon + 1, lastAt];
    } else {
      let authorityEnd = start;
      while (authorityEnd < end && !'/?#'.includes(text[authorityEnd]!)) authorityEnd++;
      const authority = text.slice(start, authorityEnd);
      const colon = authority.indexOf(':');
      // host:port, [v6]:port and host: are no passwords; anything else after the colon is.
      if (colon >= 0 && !authority.slice(0, colon).includes('[') && !/^\d*$/.test(authority.slice(colon + 1))) {
        [from, to] = [start + colon + 1, atBeyond(text, end) ?? end];
      }
    }
    if (from < 0 || to <= from || ALREADY_MASKED.test(text.slice(from, to))) continue;
    spans.push([from, to]);
    after = to;
  }
  return replaceSpans(text, spans);
}

function maskBareUserinfo(text: string): string {
  return text.replace(BARE_USERINFO, (whole, before: string, user: string, secret: string) => {
    // `scheme://user@host` is a URL without a password (the URL pass saw it), not user:password.
    if (secret.startsWith('//') || secret === '' || ALREADY_MASKED.test(secret)) return whole;
    return `${before}${user}:${MASK}@`;
  });
}
