// The embedding example in headless Chromium (WebGPU on its SwiftShader adapter): the page streams the fixture
// model from a local server and must generate text. Run after web/build-pkg.sh: `node web/e2e/example.test.mjs`.
import { launchBrowser, startServer } from './server.mjs';

const server = await startServer();
const browser = await launchBrowser();
const logs = [];
let failure = null;
try {
  const page = await browser.newPage();
  page.on('console', (m) => logs.push(`${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => logs.push(`pageerror: ${e}`));
  await page.goto(`${server.origin}/web/examples/index.html`);
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
