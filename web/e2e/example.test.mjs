// The embedding example in headless Chromium (WebGPU on its SwiftShader adapter): the page loads the fixture model
// from a local server and must generate text. Run after web/build-pkg.sh: `node web/e2e/example.test.mjs`.
import { createServer } from 'node:http';
import { readFile } from 'node:fs/promises';
import { extname, join, normalize } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const root = normalize(join(fileURLToPath(import.meta.url), '../../..'));
const types = { '.html': 'text/html', '.js': 'text/javascript', '.wasm': 'application/wasm', '.json': 'application/json' };

const server = createServer(async (req, res) => {
  const path = normalize(join(root, decodeURIComponent(new URL(req.url, 'http://x').pathname)));
  if (!path.startsWith(root)) {
    res.writeHead(403).end();
    return;
  }
  try {
    const body = await readFile(path);
    res.writeHead(200, { 'Content-Type': types[extname(path)] ?? 'application/octet-stream' }).end(body);
  } catch {
    res.writeHead(404).end();
  }
});
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
const port = server.address().port;

const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  headless: true,
  args: ['--enable-unsafe-webgpu', '--use-webgpu-adapter=swiftshader', '--no-sandbox', '--disable-gpu-sandbox',
    '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
const logs = [];
let failure = null;
try {
  const page = await browser.newPage();
  page.on('console', (m) => logs.push(`${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => logs.push(`pageerror: ${e}`));
  await page.goto(`http://127.0.0.1:${port}/web/examples/index.html`);
  await page.waitForSelector('body[data-state]', { timeout: 180_000 });
  const state = await page.getAttribute('body', 'data-state');
  const text = await page.textContent('#out');
  if (state !== 'done' || !text) {
    failure = `example page ended in state ${state}: ${text}`;
  } else {
    const rate = await page.getAttribute('body', 'data-tokens-per-second');
    console.log(`example page generated ${JSON.stringify(text)} (${rate} tok/s decode)`);
  }
} catch (e) {
  failure = String(e);
} finally {
  await browser.close();
  server.close();
}
if (failure) {
  console.error(failure);
  console.error(logs.join('\n'));
  process.exit(1);
}
