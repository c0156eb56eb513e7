/**
 * The dashboard: three static files (HTML, CSS, one plain ES module), read once and served with a
 * strict content security policy. It needs no token to load; every request it makes for data
 * sends the token the person gave it (kept in the tab's sessionStorage only).
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Api } from './schemas.ts';

const DIR = path.join(path.dirname(fileURLToPath(import.meta.url)), 'dashboard');
const FILES = {
  '/': { file: 'index.html', type: 'text/html; charset=utf-8' },
  '/dashboard.css': { file: 'dashboard.css', type: 'text/css; charset=utf-8' },
  '/dashboard.js': { file: 'dashboard.js', type: 'text/javascript; charset=utf-8' },
} as const;

const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

export function dashboardRoutes(app: Api): void {
  for (const [url, { file, type }] of Object.entries(FILES)) {
    const body = readFileSync(path.join(DIR, file));
    app.get(url, { config: { role: 'public' }, schema: { hide: true } }, async (_request, reply) =>
      reply.type(type).header('content-security-policy', CSP).header('cache-control', 'no-cache').send(body),
    );
  }
}
