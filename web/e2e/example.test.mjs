// The embedding example in headless Chromium (WebGPU on its SwiftShader adapter): the page streams the fixture
// model from a local server and must generate text. Run after web/build-pkg.sh: `node web/e2e/example.test.mjs`.
import assert from 'node:assert/strict';
import { inBrowser } from './server.mjs';

const logs = [];
await inBrowser(async ({ server, browser }) => {
  const page = await browser.newPage();
  page.on('console', (m) => logs.push(`${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => logs.push(`pageerror: ${e}`));
  await page.goto(`${server.origin}/web/examples/index.html`);
  await page.waitForSelector('body[data-state]', { timeout: 180_000 });
  const state = await page.getAttribute('body', 'data-state');
  const text = await page.textContent('#out');
  assert.ok(state === 'done' && text, `example page ended in state ${state}: ${text}`);
  const rate = await page.getAttribute('body', 'data-tokens-per-second');
  console.log(`example page generated ${JSON.stringify(text)} (${rate} tok/s decode)`);
}, () => logs);
