// Gives the built page (trunk's index.html, rewritten in place) a Content Security Policy: scripts only from the
// site itself plus trunk's one inline loader (allowed by its SHA-256, computed here), WebAssembly compilation,
// workers from the site, requests only to the site and https model sources, and nothing framed, embedded or
// posted. Usage: node web/csp.mjs dist/index.html
import { createHash } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';

const file = process.argv[2];
let html = readFileSync(file, 'utf8');
const inline = [...html.matchAll(/<script(?![^>]*\bsrc=)[^>]*>([\s\S]*?)<\/script>/g)].map((m) => m[1]);
if (inline.length === 0) throw new Error(`${file}: no inline loader script found`);
const hashes = inline.map((s) => `'sha256-${createHash('sha256').update(s).digest('base64')}'`).join(' ');
const policy = [
  "default-src 'self'",
  `script-src 'self' 'wasm-unsafe-eval' ${hashes}`,
  "worker-src 'self'",
  "connect-src 'self' https:",
  "img-src 'self' data: blob:",
  "style-src 'self' 'unsafe-inline'",
  "object-src 'none'",
  "base-uri 'none'",
  "form-action 'none'",
].join('; ');
html = html.replace(/<meta http-equiv="Content-Security-Policy"[^>]*>\n?/, '');
const meta = `<meta http-equiv="Content-Security-Policy" content="${policy}">`;
if (!/<meta charset="utf-8">/.test(html)) throw new Error(`${file}: no <meta charset> to put the policy after`);
writeFileSync(file, html.replace('<meta charset="utf-8">', `<meta charset="utf-8">\n  ${meta}`));
