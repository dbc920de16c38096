// The web app in headless Chromium (WebGPU on SwiftShader), built by `trunk build --release` in crates/web:
// autorun on the embedded default model must finish with the same text the native CLI generates greedily for
// the same prompt and seed; speed and memory (with the context-memory curve) show; the attention map has pixels
// and changes with the head, the layer and a click in the layers × heads overview; switching a head off
// regenerates and keeps the earlier text; two attention policies side by side give the CLI's text under each; an
// override changes the reader state and the layout; a second visit
// marks the model cached; the console stays free of errors (Content Security Policy violations included); every
// request goes to the page's own server; a browser without WebGPU gets a clear error. Saves
// screenshots under target/e2e/. Run: `node web/e2e/app.test.mjs` (after the trunk build and `cargo test`, which
// builds target/debug/ternlight).
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { inBrowser, root } from './server.mjs';

const prompt = 'lighthouse (noun):';
// The embedded default model is the demo model (models/demo); the CLI runs the same files.
const demo = join(root, 'models/demo');
const layers = JSON.parse(readFileSync(join(demo, 'config.json'), 'utf8')).num_hidden_layers;
const maxTokens = 12;
const seed = 3;
const cliText = (policy) => execFileSync(join(root, 'target/debug/ternlight'),
  ['run', '--model', demo, '--prompt', prompt, '--max-tokens', String(maxTokens),
    '--seed', String(seed), '--attention-policy', policy],
  { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).replace(/\n$/, '');
const cli = cliText('full');
const streaming = 'sliding:3+sinks:1';

const shots = join(root, 'target/e2e');
mkdirSync(shots, { recursive: true });
const errors = [];
await inBrowser(async ({ server, browser }) => {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
  page.on('pageerror', (e) => errors.push(String(e)));
  // Every request the page and its worker make, to check that nothing leaves for anywhere but the model source.
  const requests = [];
  page.on('request', (r) => requests.push(r.url()));
  const query = new URLSearchParams({ autorun: '1', prompt, max_tokens: String(maxTokens), seed: String(seed) });
  await page.goto(`${server.origin}/crates/web/dist/index.html?${query}`);
  const status = page.getByTestId('status');
  await page.waitForFunction(() => /done|error/.test(document.querySelector('[data-testid=status]')?.textContent),
    null, { timeout: 240_000 });
  assert.equal(await status.textContent(), 'done');
  assert.equal(await page.getByTestId('generated-text').textContent(), cli);
  assert.ok(Number(await page.getByTestId('tokens-per-second').textContent()) > 0);
  assert.ok(Number(await page.getByTestId('ttft-ms').textContent()) > 0);
  assert.match(await page.getByTestId('memory').textContent(), /weights \d+\.\d MiB.*at 4K tokens: \d+\.\d MiB · 32K tokens/);
  // The context-memory curve is drawn.
  const curve = await page.evaluate(() => {
    const c = document.querySelector('[data-testid=memory-growth]');
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    let drawn = 0;
    for (let i = 3; i < d.length; i += 4) if (d[i] > 0) drawn += 1;
    return drawn;
  });
  assert.ok(curve > 50, `memory curve has ${curve} pixels`);
  // Per-layer GPU time where the adapter has timestamp queries (embedding, each layer, head), else a note saying so.
  const times = page.getByTestId('layer-times');
  const timed = (await times.textContent()).includes('GPU time of the last forward');
  assert.ok(timed ? (await times.locator('li').count()) === layers + 2 : /timestamp queries/.test(await times.textContent()));
  console.log(`per-layer GPU time: ${timed ? 'shown' : 'not available on this adapter'}`);
  await page.screenshot({ path: join(shots, 'app.png'), fullPage: true });

  const pixels = () => page.evaluate(() => {
    const c = document.querySelector('[data-testid=attention-map]');
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    let lit = 0;
    let hash = 0;
    for (let i = 0; i < d.length; i += 4) {
      if (d[i] + d[i + 1] + d[i + 2] > 3 * 40) lit += 1;
      hash = (hash * 31 + d[i] + 7 * d[i + 1] + 13 * d[i + 2]) >>> 0;
    }
    return { lit, hash };
  });
  const changed = async (before) => {
    for (let i = 0; i < 100; i += 1) {
      const now = await pixels();
      if (now.hash !== before.hash) return now;
      await page.waitForTimeout(100);
    }
    return null;
  };
  const first = await pixels();
  assert.ok(first.lit > 100, `attention map has ${first.lit} lit pixels`);
  await page.getByTestId('head-select').selectOption('1');
  const otherHead = await changed(first);
  assert.ok(otherHead && otherHead.lit > 100, 'the map did not change with the head');
  await page.getByTestId('layer-select').selectOption('0');
  const otherLayer = await changed(otherHead);
  assert.ok(otherLayer && otherLayer.lit > 100, 'the map did not change with the layer');

  await page.getByText('layers × heads overview').click();
  // One row per layer (linear-attention layers show their implicit maps' heads).
  await page.waitForFunction((n) => document.querySelectorAll('[data-testid=attention-overview] tr').length === n,
    layers, { timeout: 60_000 });
  await page.getByTestId('attention-overview').locator('button[aria-label^="layer 1 head 2,"]').click();
  const fromOverview = await changed(otherLayer);
  assert.ok(fromOverview && fromOverview.lit > 100, 'choosing layer 1 head 2 in the overview did not redraw the map');
  assert.equal(await page.getByTestId('layer-select').inputValue(), '1');
  assert.equal(await page.getByTestId('head-select').inputValue(), '2');
  await page.getByTestId('layer-select').selectOption('0');
  await changed(fromOverview);

  // One prompt under two attention policies, side by side: each gives the CLI's text under that policy, and the
  // policy in force before comes back; a policy applied from the panel is in force until changed.
  await page.getByTestId('compare-a').fill('full');
  await page.getByTestId('compare-b').fill(streaming);
  await page.getByTestId('compare').click();
  await page.waitForFunction(() => document.querySelectorAll('[data-testid=comparison] tbody tr').length === 2
    && /done|error/.test(document.querySelector('[data-testid=status]')?.textContent), null, { timeout: 120_000 });
  assert.equal(await status.textContent(), 'done');
  const compared = await page.locator('[data-testid=comparison] td.text').allTextContents();
  assert.deepEqual(compared, [cli, cliText(streaming)]);
  assert.notEqual(compared[0], compared[1]);
  assert.equal(await page.getByTestId('policy').textContent(), 'full');
  await page.screenshot({ path: join(shots, 'app-policies.png'), fullPage: true });
  await page.getByTestId('policy-input').fill(streaming);
  await page.getByTestId('policy-apply').click();
  await page.waitForFunction((p) => document.querySelector('[data-testid=policy]')?.textContent === p, streaming);
  await page.getByTestId('policy-input').fill('full');
  await page.getByTestId('policy-apply').click();
  await page.waitForFunction(() => document.querySelector('[data-testid=policy]')?.textContent === 'full');

  const intact = await page.getByTestId('generated-text').textContent();
  await page.getByTestId('ablate').click();
  await page.waitForFunction(() => /^error/.test(document.querySelector('[data-testid=status]')?.textContent)
    || (document.querySelector('[data-testid=status]')?.textContent === 'done'
      && document.querySelector('[data-testid=text-before]')), null, { timeout: 120_000 });
  assert.equal(await status.textContent(), 'done');
  assert.equal(await page.getByTestId('text-before').textContent(), intact);
  assert.match(await page.locator('.ablated').textContent(), /^off: L0H0$/);

  assert.equal(await page.getByTestId('ui-state').textContent(), 'focused');
  assert.ok(await page.locator('.speed').isVisible());
  await page.getByTestId('ui-state-override').selectOption('fatigued');
  assert.equal(await page.getByTestId('ui-state').textContent(), 'fatigued');
  assert.ok(!(await page.locator('.speed').isVisible()), 'the fatigued layout still shows the speed panel');
  await page.screenshot({ path: join(shots, 'app-fatigued.png'), fullPage: true });
  await page.getByTestId('ui-state-override').selectOption('auto');
  assert.ok(await page.locator('.speed').isVisible());
  // A second visit marks the embedded model cached (its weights are in Cache Storage from the first).
  await page.goto(`${server.origin}/crates/web/dist/index.html`);
  await page.waitForFunction(() => document.querySelector('option[value=embedded]')?.textContent.includes('cached'),
    null, { timeout: 60_000 });
  assert.deepEqual(errors, []);
  // The page runs under its Content Security Policy (a violation would have been a console error above), and
  // every request went to the site serving the page and its model: no analytics, no interaction signals, no CDN.
  const csp = await page.evaluate(() => document.querySelector('meta[http-equiv=Content-Security-Policy]')?.content);
  assert.match(csp ?? '', /script-src 'self' 'wasm-unsafe-eval' 'sha256-/);
  assert.ok(requests.some((u) => u.endsWith('/models/default/model.safetensors')), 'the model was requested');
  assert.deepEqual(requests.filter((u) => !u.startsWith(`${server.origin}/`) && !/^(data|blob):/.test(u)), []);

  // Without WebGPU the page says so instead of failing somewhere deeper.
  const bare = await browser.newPage();
  await bare.addInitScript(() => Object.defineProperty(Navigator.prototype, 'gpu', { get: () => undefined }));
  await bare.goto(`${server.origin}/crates/web/dist/index.html?autorun=1`);
  await bare.waitForFunction(() => document.querySelector('[data-testid=status]')?.textContent.startsWith('error'),
    null, { timeout: 60_000 });
  assert.match(await bare.getByTestId('status').textContent(), /^error: WebGPU is not available in this browser/);
  console.log(`app generated ${JSON.stringify(cli)} like the CLI; maps and reader states respond`);
}, () => errors);
