// The browser tests' web server and browser (web/serve.mjs serves the app with it): serves files over HTTP with Range requests and ETags, and
// under /faulty/<mode>/ the same files with a fault injected into responses for model weights:
//   drop          every other ranged response is cut off half way (the client must resume);
//   corrupt-once  the first large response has its last byte flipped, and the file's true SHA-256 is published
//                 as its ETag (the client must fail the load with an integrity error, then succeed);
//   throttle      bodies trickle out in small chunks (the client must report progress as layers arrive).
// It counts the weight bytes it sent per URL path, so tests can tell cached loads from downloads.
import { createServer } from 'node:http';
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { extname, join, normalize } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

export const root = normalize(join(fileURLToPath(import.meta.url), '../../..'));
const types = { '.html': 'text/html', '.css': 'text/css', '.js': 'text/javascript', '.mjs': 'text/javascript', '.wasm': 'application/wasm',
  '.json': 'application/json' };
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Serves `dir` (default: the repository) on `port` (default: any free one) of 127.0.0.1. */
export async function startServer({ dir = root, port = 0 } = {}) {
  const sent = new Map();
  const stats = { drops: 0, corrupted: 0, responses: 0 };
  const corruptedPaths = new Set();
  let dropToggle = false;
  const server = createServer(async (req, res) => {
    let path = decodeURIComponent(new URL(req.url, 'http://x').pathname);
    let mode = null;
    const faulty = path.match(/^\/faulty\/([a-z-]+)(\/.*)$/);
    if (faulty) [, mode, path] = faulty;
    const file = normalize(join(dir, path.endsWith('/') ? `${path}index.html` : path));
    if (!file.startsWith(dir)) return res.writeHead(403).end();
    let body;
    try {
      body = await readFile(file);
    } catch {
      return res.writeHead(404).end();
    }
    const weights = file.endsWith('.safetensors');
    const etag = mode && weights ? createHash('sha256').update(body).digest('hex') : `${body.length}-${path.length}`;
    const headers = { 'Content-Type': types[extname(file)] ?? 'application/octet-stream', 'Accept-Ranges': 'bytes',
      ETag: `"${etag}"`, 'Cache-Control': 'no-store' };
    let status = 200;
    const range = req.headers.range?.match(/^bytes=(\d+)-(\d*)$/);
    if (range) {
      const start = Number(range[1]);
      const end = Math.min(range[2] ? Number(range[2]) : body.length - 1, body.length - 1);
      if (start > end) return res.writeHead(416, { 'Content-Range': `bytes */${body.length}` }).end();
      headers['Content-Range'] = `bytes ${start}-${end}/${body.length}`;
      body = body.subarray(start, end + 1);
      status = 206;
    }
    if (weights) {
      stats.responses += 1;
      sent.set(path, (sent.get(path) ?? 0) + body.length);
    }
    if (mode === 'corrupt-once' && weights && body.length > 1024 && !corruptedPaths.has(path)) {
      corruptedPaths.add(path);
      stats.corrupted += 1;
      body = Buffer.from(body);
      body[body.length - 1] ^= 0xff;
    }
    headers['Content-Length'] = body.length;
    res.writeHead(status, headers);
    if (mode === 'drop' && weights && range && body.length > 64 && (dropToggle = !dropToggle)) {
      stats.drops += 1;
      res.write(body.subarray(0, body.length >> 1), () => res.socket.destroy());
      return;
    }
    if (mode === 'throttle' && weights) {
      for (let at = 0; at < body.length; at += 4096) {
        res.write(body.subarray(at, at + 4096));
        await sleep(2);
      }
      return res.end();
    }
    res.end(body);
  });
  await new Promise((resolve) => server.listen(port, '127.0.0.1', resolve));
  const origin = `http://127.0.0.1:${server.address().port}`;
  return { origin, sent, stats, close: () => server.close() };
}

/** Headless Debian Chromium with WebGPU on SwiftShader (flags: ../shared/browser.md). */
export function launchBrowser() {
  return chromium.launch({
    executablePath: '/usr/bin/chromium',
    headless: true,
    args: ['--enable-unsafe-webgpu', '--use-webgpu-adapter=swiftshader', '--no-sandbox', '--disable-gpu-sandbox',
      '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update',
      '--disable-sync'],
  });
}

/**
 * Runs `body({ server, browser })` against a fresh local server and headless Chromium, closes both, and returns
 * what `body` returned. On a failure it prints the error and `details()` (lines the script gathered) and exits 1.
 */
export async function inBrowser(body, details = () => []) {
  const server = await startServer();
  const browser = await launchBrowser();
  try {
    return await body({ server, browser });
  } catch (e) {
    console.error(e);
    for (const line of details()) console.error(line);
    process.exit(1);
  } finally {
    await browser.close();
    server.close();
  }
}
