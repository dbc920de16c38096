// Collects the browser bench (web/examples/bench.html) from headless Chromium and the native `ternlight bench` of
// the same model and suite, writes both to target/bench/ and prints them side by side. Fails on a page error or a
// report without the native report's keys; speeds are only recorded. Run after web/build-pkg.sh and a build of
// target/debug/ternlight (or set TERNLIGHT_BIN): `node web/e2e/bench.mjs [model dir, default models/demo]`.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { inBrowser, root } from './server.mjs';

const modelDir = process.argv[2] ?? join(root, 'models/demo');
const suite = { contexts: '64,256', decode_steps: '16', compare_tokens: '256', reps: '2' };
const bin = process.env.TERNLIGHT_BIN ?? join(root, 'target/debug/ternlight');
const native = JSON.parse(execFileSync(bin, ['bench', '--model', modelDir, '--json', '--contexts', suite.contexts,
  '--decode-steps', suite.decode_steps, '--compare-tokens', suite.compare_tokens, '--reps', suite.reps],
{ encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }));

const browserReport = await inBrowser(async ({ server, browser }) => {
  const page = await browser.newPage();
  const query = new URLSearchParams({ model: `${server.origin}/${relative(root, modelDir)}`, ...suite });
  await page.goto(`${server.origin}/web/examples/bench.html?${query}`);
  await page.waitForSelector('body[data-state]', { timeout: 300_000 });
  const text = await page.getByTestId('bench-json').textContent();
  assert.equal(await page.getAttribute('body', 'data-state'), 'done', text);
  const report = JSON.parse(text);
  // The same report: every key the native bench prints, one row per context asked for.
  const keys = ['model_type', 'device', 'decode_dispatches_per_token', 'memory', 'roofline', 'contexts',
    'prefill_vs_stepping', 'decode_profile', 'prefill_profile'];
  for (const key of keys) {
    assert.ok(key in report, `the browser report lacks ${key}`);
    assert.equal(typeof report[key], typeof native[key], key);
  }
  assert.deepEqual(report.contexts.map((r) => r.context), native.contexts.map((r) => r.context));
  assert.deepEqual(Object.keys(report.contexts[0]).sort(), Object.keys(native.contexts[0]).sort());
  assert.deepEqual(Object.keys(report.roofline).sort(), Object.keys(native.roofline).sort());
  // The same graph, but fused products need storage buffers: an adapter that binds fewer per kernel than the native
  // one (SwiftShader: 10) splits some, never merging more.
  assert.ok(report.decode_dispatches_per_token >= native.decode_dispatches_per_token, 'browser dispatches');
  return report;
});
const dir = join(root, 'target/bench');
mkdirSync(dir, { recursive: true });
writeFileSync(join(dir, 'native.json'), JSON.stringify(native, null, 2));
writeFileSync(join(dir, 'browser.json'), JSON.stringify(browserReport, null, 2));
console.log(`${native.model_type}: native on ${native.device.name} / browser on ${browserReport.device.name}`);
for (const [i, n] of native.contexts.entries()) {
  const b = browserReport.contexts[i];
  console.log(`context ${n.context}: prefill ${n.prefill_tok_s.toFixed(0)} / ${b.prefill_tok_s.toFixed(0)} tok/s, `
    + `decode ${n.decode_ms_per_token.toFixed(2)} / ${b.decode_ms_per_token.toFixed(2)} ms/token`);
}
console.log(`copy bandwidth ${(native.roofline.copy_bytes_per_s / 1e9).toFixed(2)} / `
  + `${(browserReport.roofline.copy_bytes_per_s / 1e9).toFixed(2)} GB/s; reports in target/bench/`);
