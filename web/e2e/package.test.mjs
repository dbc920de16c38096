// The npm package in headless Chromium against a local server (server.mjs): streaming loads in a Web Worker and
// in the page give the same greedy text as a whole-file load; a GGUF file streams like its safetensors; a second
// load comes from Cache Storage; dropped connections resume; a model over the storage quota streams uncached with a
// warning; corrupted bytes fail the load with an integrity error and the next load succeeds; progress reports
// layers as they arrive; generate() stops early; attention maps come with tokens (softmax and a hybrid's implicit
// attention); ablated heads change the text; attention policies give the CLI's text; chat.completions streams
// and returns the same text; seeded sampling repeats exactly and equals the native CLI's; tuning in a worker is kept
// for later engines; no request leaves for anywhere the tests did not name.
// Run after web/build-pkg.sh: `node web/e2e/package.test.mjs`.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { launchBrowser, root, startServer } from './server.mjs';

// A GGUF file of the BitNet fixture, written by the native CLI (built by `cargo test`).
mkdirSync(join(root, 'target/e2e'), { recursive: true });
execFileSync(join(root, 'target/debug/ternlight'),
  ['convert', '--model', join(root, 'tests/fixtures/bitnet_packed'), '--out', join(root, 'target/e2e/bitnet.gguf')],
  { stdio: 'ignore' });

const server = await startServer();
const browser = await launchBrowser();
const page = await browser.newPage();
const logs = [];
page.on('console', (m) => logs.push(`${m.type()}: ${m.text()}`));
page.on('pageerror', (e) => logs.push(`pageerror: ${e}`));
// Every request the page and its workers make: the last test checks they all went to the sources tests chose.
const requests = [];
page.on('request', (r) => requests.push(r.url()));

const fixture = '/tests/fixtures/llama';
const weights = `${fixture}/model.safetensors`;
// Small cache blocks so that the 216 KB fixture spans many of them, as a real model does.
const block = 16 << 10;

/** Runs `body` (a function of `ternlight` and `args`) in the page. */
function inPage(body, args) {
  return page.evaluate(async ([source, args]) => {
    const run = new Function('ternlight', 'args', `return (${source})(ternlight, args);`);
    return run(window.ternlight, args);
  }, [body.toString(), args]);
}

async function greedy(source, options) {
  return inPage(async (t, { source, options }) => {
    const progress = [];
    const engine = await t.Engine.load(source, { ...options, onProgress: (p) => progress.push(p) });
    let text = '';
    for await (const piece of engine.generate('Hello', { maxTokens: 8 })) text += piece;
    const stats = await engine.stats();
    await engine.unload();
    return { text, stats, progress };
  }, { source, options });
}

const tests = {
  async 'a streamed load in a worker, in the page and a whole-file load give the same text'() {
    const o = server.origin;
    const whole = await greedy(undefined, { worker: false,
      files: { config: `${o}${fixture}/config.json`, weights: `${o}${weights}`, tokenizer: `${o}${fixture}/tokenizer.json` } });
    assert.ok(whole.text.length > 0);
    const worker = await greedy(`${o}${fixture}`, { cacheBlockBytes: block });
    assert.equal(worker.text, whole.text);
    assert.ok(worker.stats.downloadedBytes > 200_000, `downloaded ${worker.stats.downloadedBytes}`);
    assert.ok(worker.stats.decodeTokensPerSecond > 0 && worker.stats.ttftMs > 0);
    assert.ok(worker.stats.weightBytes > 0 && worker.stats.stateBytes > 0);
    // Streamed a tensor at a time: host memory held one tensor and one cache block, never a layer (this fixture's
    // layers are 2.3 times its largest tensor).
    const { loadPeakHostBytes: peak, largestTensorBytes: largest } = worker.stats;
    assert.ok(peak >= largest && peak <= largest + block, `peak ${peak} bytes, largest tensor ${largest}`);
    const inPage = await greedy(`${o}${fixture}/`, { cacheBlockBytes: block, worker: false });
    assert.equal(inPage.text, whole.text);
  },
  async 'a GGUF file streams into the same model as its safetensors checkpoint'() {
    const gguf = await greedy(`${server.origin}/target/e2e/bitnet.gguf`, { cacheBlockBytes: block });
    const safetensors = await greedy(`${server.origin}/tests/fixtures/bitnet_packed`, { cacheBlockBytes: block });
    assert.ok(gguf.text.length > 0);
    assert.equal(gguf.text, safetensors.text);
    assert.ok(gguf.stats.downloadedBytes > 0);
    assert.equal(gguf.progress.at(-1).layersReady, gguf.progress.at(-1).layersTotal);
  },
  async 'a second load reads the cache and downloads no weights'() {
    const before = server.sent.get(weights) ?? 0;
    const again = await greedy(`${server.origin}${fixture}`, { cacheBlockBytes: block });
    assert.equal(again.stats.downloadedBytes, 0);
    // Only the 1-byte probe of the file reached the server.
    assert.equal((server.sent.get(weights) ?? 0) - before, 1);
  },
  async 'dropped connections resume and give the same text'() {
    const plain = await greedy(`${server.origin}${fixture}`, { cacheBlockBytes: block });
    const dropped = await greedy(`${server.origin}/faulty/drop${fixture}`, { cacheBlockBytes: block });
    assert.ok(server.stats.drops > 0, 'the server dropped no connection');
    assert.equal(dropped.text, plain.text);
  },
  async 'corrupted bytes fail the load with an integrity error, and the next load succeeds'() {
    const source = `${server.origin}/faulty/corrupt-once${fixture}`;
    const failed = await inPage(async (t, { source, block }) => {
      try {
        await t.Engine.load(source, { cacheBlockBytes: block });
        return null;
      } catch (e) {
        return String(e.message);
      }
    }, { source, block });
    assert.equal(server.stats.corrupted, 1);
    assert.match(failed ?? 'loaded', /integrity check failed/);
    const plain = await greedy(`${server.origin}${fixture}`, { cacheBlockBytes: block });
    const retried = await greedy(source, { cacheBlockBytes: block });
    assert.equal(retried.text, plain.text);
  },
  async 'a model larger than the storage quota streams without caching, with a warning'() {
    const cdp = await page.context().newCDPSession(page);
    await cdp.send('Storage.overrideQuotaForOrigin', { origin: server.origin, quotaSize: 64 << 10 });
    try {
      const source = `${server.origin}/faulty/quota${fixture}`;
      const first = await greedy(source, { cacheBlockBytes: block });
      const second = await greedy(source, { cacheBlockBytes: block });
      const plain = await greedy(`${server.origin}${fixture}`, { cacheBlockBytes: block });
      assert.match(first.stats.warnings.join('\n'), /storage refused the model \(Quota exceeded.*streams without caching/);
      assert.equal(first.text, plain.text);
      assert.ok(second.stats.downloadedBytes > 200_000, 'the second load came from a cache it should not have');
    } finally {
      await cdp.send('Storage.overrideQuotaForOrigin', { origin: server.origin });
    }
  },
  async 'progress reports layers as a throttled download arrives'() {
    const { progress, stats } = await greedy(`${server.origin}/faulty/throttle${fixture}`, { cacheBlockBytes: block });
    const layers = [...new Set(progress.map((p) => p.layersReady))];
    const last = progress.at(-1);
    assert.ok(layers.length >= 3, `layers ready went ${layers}`);
    assert.equal(last.layersReady, last.layersTotal);
    assert.equal(last.bytesDone, last.bytesTotal);
    assert.ok(progress.every((p) => p.bytesPerSecond > 0));
    assert.ok(stats.downloadedBytes > 0);
  },
  async 'missing models, bad sources and malformed files get typed errors'() {
    const malformed = '/tests/fixtures/malformed/cases';
    const errors = await inPage(async (t, { origin, malformed }) => {
      const failure = (source, worker) => t.Engine.load(source, { worker }).then(() => null,
        (e) => ({ name: e.name, kind: e.kind, message: String(e.message) }));
      return [await failure(`${origin}/no/such/model`, false), await failure('not a model', false),
        await failure(`${origin}${malformed}/gguf_nan_weight/model.gguf`, true),
        await failure(`${origin}${malformed}/gguf_unknown_architecture/model.gguf`, false),
        await failure(`${origin}${malformed}/gguf_tensors_overlap/model.gguf`, true)];
    }, { origin: server.origin, malformed });
    const expected = [
      ['network', /config\.json.*404/],
      ['invalid-request', /neither an http\(s\):\/\/ base URL nor a Hugging Face repo id/],
      ['model-file', /q_proj\.weight`: expected finite values, found NaN or infinity/],
      ['unsupported', /unsupported model_type `gpt-9000`/],
      ['model-file', /tensors `.*` and `.*` overlap/],
    ];
    expected.forEach(([kind, message], i) => {
      assert.equal(errors[i]?.name, 'TernlightError', JSON.stringify(errors[i]));
      assert.equal(errors[i].kind, kind, JSON.stringify(errors[i]));
      assert.match(errors[i].message, message);
    });
  },
  async 'generate stops when the loop ends early or the signal aborts'() {
    const result = await inPage(async (t, { source, block }) => {
      const engine = await t.Engine.load(source, { cacheBlockBytes: block });
      let pieces = 0;
      for await (const _ of engine.generate('Hello', { maxTokens: 50 })) if (++pieces === 2) break;
      const early = (await engine.stats()).generatedTokens;
      const controller = new AbortController();
      let aborted = 0;
      for await (const _ of engine.generate('Hello', { maxTokens: 50, signal: controller.signal })) {
        if (++aborted === 3) controller.abort();
      }
      const afterAbort = (await engine.stats()).generatedTokens;
      await engine.unload();
      return { early, afterAbort };
    }, { source: `${server.origin}${fixture}`, block });
    assert.ok(result.early < 50, `generated ${result.early} after breaking out`);
    assert.ok(result.afterAbort < 50, `generated ${result.afterAbort} after aborting`);
  },
  async 'attention maps arrive with the tokens, rows sum to one, heads differ; the overview covers every layer'() {
    const r = await inPage(async (t, { source, block }) => {
      const engine = await t.Engine.load(source, { cacheBlockBytes: block });
      const maps = [];
      const attention = { layer: 1, head: 0, maxQueries: 8, onMap: (m) => maps.push(m) };
      for await (const _ of engine.generate('Hello there', { maxTokens: 5, attention }));
      const last = await engine.attention(1, 0, { maxQueries: 8 });
      const other = await engine.attention(1, 1, { maxQueries: 8 });
      const bad = await engine.attention(7, 0).then(() => 'answered', (e) => e.message);
      const overview = await engine.overview();
      const lastOverview = [];
      const overviewTap = { layer: 0, head: 0, overview: true, onMap: () => {}, onOverview: (o) => lastOverview.push(o) };
      for await (const _ of engine.generate('Hello there', { maxTokens: 3, attention: overviewTap }));
      await engine.unload();
      const row = (m, i) => Array.from(m.weights.slice(i * m.keys, (i + 1) * m.keys));
      return {
        keys: maps.map((m) => m.keys),
        last: { queries: last.queries, keys: last.keys, tokens: last.tokens.length, firstQuery: last.firstQuery },
        sums: Array.from({ length: last.queries }, (_, i) => row(last, i).reduce((a, b) => a + b, 0)),
        future: Array.from({ length: last.queries }, (_, i) => row(last, i).slice(last.firstQuery + i + 1)).flat(),
        differs: last.weights.some((w, i) => Math.abs(w - other.weights[i]) > 1e-6),
        bad,
        overview: overview.map((l) => ({ layer: l.layer, entropies: Array.from(l.entropies) })),
        live: lastOverview.length,
      };
    }, { source: `${server.origin}${fixture}`, block });
    assert.ok(r.keys.length >= 4, `maps after ${r.keys.length} tokens`);
    assert.ok(r.keys.every((k, i) => i === 0 || k === r.keys[i - 1] + 1), `keys went ${r.keys}`);
    assert.equal(r.last.queries, 8);
    assert.equal(r.last.tokens, r.last.keys);
    assert.ok(r.sums.every((x) => Math.abs(x - 1) < 1e-4), `row sums ${r.sums}`);
    assert.ok(r.future.every((w) => w === 0), 'weight on future keys');
    assert.ok(r.differs, 'heads 0 and 1 gave the same map');
    assert.match(r.bad, /past the model/);
    assert.deepEqual(r.overview.map((l) => l.layer), [0, 1]);
    assert.ok(r.overview.every((l) => l.entropies.length === 4 && l.entropies.every((e) => e >= 0 && e <= 1.00001)));
    assert.ok(r.live >= 2, `overviews during generation: ${r.live}`);
  },
  async 'a hybrid model maps its delta-rule layers (implicit attention) and its softmax layer'() {
    const r = await inPage(async (t, { source, block }) => {
      const engine = await t.Engine.load(source, { cacheBlockBytes: block });
      const layers = (await engine.stats()).layers;
      const maps = [];
      const attention = { layer: 0, head: 1, maxQueries: 8, onMap: (m) => maps.push(m) };
      for await (const _ of engine.generate('Hello there', { maxTokens: 4, attention }));
      const softmax = await engine.attention(3, 0, { maxQueries: 8 });
      const overview = await engine.overview();
      await engine.unload();
      const magnitude = (m) => Array.from(m.weights).reduce((a, w) => a + Math.abs(w), 0);
      return {
        kinds: layers.map((l) => `${l.kind}:${l.attentionHeads}`),
        switchable: layers.map((l) => l.switchableHeads),
        linear: maps.map(magnitude),
        softmaxRows: softmax.queries,
        overviewLayers: overview.map((l) => l.layer),
      };
    }, { source: `${server.origin}/tests/fixtures/qwen3_5`, block });
    assert.ok(r.kinds.every((k) => !k.endsWith(':0')), `every layer has maps: ${r.kinds}`);
    // Gated DeltaNet value heads and softmax heads can both be switched off.
    assert.deepEqual(r.switchable, [true, true, true, true]);
    assert.ok(r.linear.length >= 3 && r.linear.every((m) => m > 0), `implicit maps ${r.linear}`);
    assert.equal(r.softmaxRows, 8);
    assert.deepEqual(r.overviewLayers, [0, 1, 2, 3]);
  },
  async 'switching heads off changes the text and switching them back restores it'() {
    const r = await inPage(async (t, { source, block }) => {
      const engine = await t.Engine.load(source, { cacheBlockBytes: block });
      const text = async () => {
        let out = '';
        for await (const piece of engine.generate('Hello', { maxTokens: 8 })) out += piece;
        return out;
      };
      const intact = await text();
      const heads = [0, 1].flatMap((layer) => [0, 1, 2, 3].map((head) => [layer, head]));
      await engine.ablate(heads);
      const ablated = await text();
      await engine.ablate([]);
      const restored = await text();
      const bad = await engine.ablate([[0, 9]]).then(() => 'accepted', (e) => e.message);
      await engine.unload();
      return { intact, ablated, restored, bad };
    }, { source: `${server.origin}${fixture}`, block });
    assert.notEqual(r.ablated, r.intact);
    assert.equal(r.restored, r.intact);
    assert.match(r.bad, /past layer 0/);
  },
  async 'an attention policy at load or set later runs as the CLI runs it, and full restores the model'() {
    const policy = 'sliding:3+sinks:1';
    // Every layer routed to block-sparse after the prompt (a threshold above any normalised entropy).
    const routed = 'route:infllmv2@8+block:4+topk:2+local:1+entropy:1.01';
    const cli = (p) => execFileSync(join(root, 'target/debug/ternlight'), ['--quiet', 'run', '--model',
      join(root, 'tests/fixtures/llama'), '--prompt', 'Hello', '--max-tokens', '12', '--attention-policy', p],
    { stdio: ['ignore', 'pipe', 'ignore'] }).toString().replace(/\n$/, '');
    const r = await inPage(async (t, { source, block, policy, routed }) => {
      const engine = await t.Engine.load(source, { cacheBlockBytes: block, attentionPolicy: policy });
      const text = async () => {
        let out = '';
        for await (const piece of engine.generate('Hello', { maxTokens: 12 })) out += piece;
        return out;
      };
      const loaded = await text();
      const loadedPolicy = (await engine.stats()).attentionPolicy;
      await engine.setAttentionPolicy('full');
      const full = await text();
      const switchedPolicy = (await engine.setAttentionPolicy(policy)).attentionPolicy;
      const switched = await text();
      await engine.setAttentionPolicy(routed);
      const routedText = await text();
      const routes = (await engine.stats()).routes;
      const bad = await engine.setAttentionPolicy('sliding:0').then(() => 'accepted', (e) => e.message);
      await engine.unload();
      const refused = await t.Engine.load(source, { attentionPolicy: 'dense' }).then(() => 'accepted', (e) => e.message);
      return { loaded, loadedPolicy, full, switchedPolicy, switched, routedText, routes, bad, refused };
    }, { source: `${server.origin}${fixture}`, block, policy, routed });
    assert.equal(r.loaded, cli(policy));
    assert.equal(r.full, cli('full'));
    assert.notEqual(r.loaded, r.full);
    assert.equal(r.switched, r.loaded);
    assert.deepEqual([r.loadedPolicy, r.switchedPolicy], [policy, policy]);
    assert.equal(r.routedText, cli(routed));
    assert.deepEqual(r.routes.map((x) => [x.layer, x.sparse]), [[0, true], [1, true]]);
    assert.ok(r.routes.every((x) => x.entropy > 0 && x.entropy <= 1), JSON.stringify(r.routes));
    assert.match(r.bad, /at least one position/);
    assert.match(r.refused, /attention policy `dense`/);
  },
  async 'chat.completions streams chunks that add up to the whole reply'() {
    const result = await inPage(async (t, { source, block }) => {
      const engine = await t.Engine.load(source, { cacheBlockBytes: block });
      const request = { messages: [{ role: 'user', content: 'Hi' }], max_tokens: 6 };
      const whole = await engine.chat.completions.create(request);
      let streamed = '';
      let finish = null;
      for await (const chunk of await engine.chat.completions.create({ ...request, stream: true })) {
        streamed += chunk.choices[0].delta.content ?? '';
        finish = chunk.choices[0].finish_reason ?? finish;
      }
      await engine.unload();
      return { whole, streamed, finish };
    }, { source: `${server.origin}${fixture}`, block });
    assert.equal(result.whole.object, 'chat.completion');
    assert.equal(result.streamed, result.whole.choices[0].message.content);
    assert.equal(result.finish, result.whole.choices[0].finish_reason);
    assert.ok(result.whole.usage.completion_tokens > 0 && result.whole.usage.prompt_tokens > 0);
  },
  async 'sampling with a seed gives the same tokens on every run, in the browser as natively'() {
    const options = { maxTokens: 12, temperature: 0.8, topP: 0.95, seed: 7 };
    const texts = await inPage(async (t, { source, options }) => {
      const engine = await t.Engine.load(source, { worker: false });
      const runs = [];
      for (const seed of [options.seed, options.seed, options.seed + 1]) {
        let text = '';
        for await (const piece of engine.generate('Hello', { ...options, seed })) text += piece;
        runs.push(text);
      }
      await engine.unload();
      return runs;
    }, { source: `${server.origin}${fixture}`, options });
    const native = execFileSync(join(root, 'target/debug/ternlight'),
      ['run', '--model', join(root, 'tests/fixtures/llama'), '--prompt', 'Hello', '--max-tokens', '12',
        '--temperature', '0.8', '--top-p', '0.95', '--seed', '7'],
      { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).replace(/\n$/, '');
    assert.equal(texts[0], texts[1], 'the same seed twice');
    assert.equal(texts[0], native, 'the browser against the native CLI');
    assert.notEqual(texts[0], texts[2], 'another seed samples other tokens');
  },

  async 'tuning in a worker keeps the fastest sizes for the engines loaded afterwards'() {
    const { report, tuning } = await inPage(async (t, { source }) => {
      const report = await t.Engine.tune({ reps: 1 });
      const engine = await t.Engine.load(source);
      const { tuning } = await engine.stats();
      await engine.unload();
      return { report, tuning };
    }, { source: `${server.origin}${fixture}` });
    assert.equal(report.saved, true);
    assert.ok(report.trials.every((trial) => trial.ms > 0));
    // The kept sizes of each kernel are its fastest trial's (the ternary kernel is tried where the adapter has
    // packed integer dot products).
    const ternary = ['ternary_wg', 'ternary_nr', 'ternary_rows', 'ternary_swar'];
    const kinds = { matvec: ['wg', 'nr', 'vw'], matmul: ['tm', 'tn', 'wg_x', 'wg_y'], ternary_matvec: ternary };
    for (const [kind, sizes] of Object.entries(kinds)) {
      const trials = report.trials.filter((trial) => trial.kernel === kind);
      assert.ok(trials.length > 1 || kind === 'ternary_matvec', `${kind}: ${trials.length} trials`);
      if (trials.length === 0) continue;
      const fastest = trials.reduce((a, b) => (b.ms < a.ms ? b : a));
      for (const size of sizes) assert.equal(report.tuning[size], fastest.tuning[size], `${kind} ${size}`);
    }
    assert.equal(tuning.fromCache, true);
    for (const size of ['wg', 'nr', 'vw', ...ternary, 'tm', 'tn', 'wg_x', 'wg_y']) {
      assert.equal(tuning[size], report.tuning[size], size);
    }
  },

  async 'every request went to a source the tests chose'() {
    assert.ok(requests.length > 0);
    const foreign = requests.filter((u) => !u.startsWith(`${server.origin}/`) && !/^(data|blob):/.test(u));
    assert.deepEqual(foreign, []);
  },
};

let failed = 0;
try {
  await page.goto(`${server.origin}/web/e2e/harness.html`);
  await page.waitForSelector('body[data-ready]', { state: 'attached' });
  for (const [name, test] of Object.entries(tests)) {
    try {
      await test();
      console.log(`ok   ${name}`);
    } catch (e) {
      failed += 1;
      console.log(`FAIL ${name}\n${e.stack ?? e}`);
    }
  }
} finally {
  await browser.close();
  server.close();
}
if (failed) {
  console.error(logs.join('\n'));
  process.exit(1);
}
