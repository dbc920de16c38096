// Ternlight beside transformers.js (onnxruntime-web), the browser runtime people use today, on the same model in the
// same headless Chromium: a random-init Llama written by tools/peer/llama.py as safetensors (Ternlight) and ONNX
// (transformers.js). Each runtime prefills the same prompt and greedily decodes the same tokens, after a warm-up run;
// two rounds alternate the runtimes. Fails when the two greedy continuations differ (not the same computation);
// speeds are only recorded (target/bench/peer.json). Run after web/build-pkg.sh and `npm install --ignore-scripts`
// here: `node web/peer/peer.mjs [model dir under target/peer, default llama-6x256] [tokens, default 32]`.
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { inBrowser, root } from '../e2e/server.mjs';

const name = process.argv[2] ?? 'llama-6x256';
const tokens = Number(process.argv[3] ?? 32);
const prompt = 'run (verb): to move swiftly on foot';

/** Ternlight's npm package in the page: load, then one greedy generation; speeds from engine.stats(). */
async function ternlight(t, { model, prompt, tokens }) {
  const engine = await t.Engine.load(model, { worker: false });
  const run = async (n) => {
    let text = '';
    for await (const piece of engine.generate(prompt, { maxTokens: n, temperature: 0 })) text += piece;
    return text;
  };
  await run(2);
  const text = await run(tokens);
  const s = await engine.stats();
  await engine.unload();
  return { text, promptTokens: s.promptTokens, generated: s.generatedTokens, ttftMs: s.ttftMs,
    prefillTokS: s.prefillTokensPerSecond, decodeTokS: s.decodeTokensPerSecond };
}

/** transformers.js on `device`: the same prompt and greedy tokens, timed by a streamer's per-token calls. */
async function transformersJs(_, { name, prompt, tokens, device }) {
  const tf = await import('/web/peer/node_modules/@huggingface/transformers/dist/transformers.js');
  tf.env.allowRemoteModels = false;
  tf.env.allowLocalModels = true;
  tf.env.localModelPath = "/target/peer/";
  tf.env.backends.onnx.wasm.wasmPaths = '/web/peer/node_modules/onnxruntime-web/dist/';
  const tokenizer = await tf.AutoTokenizer.from_pretrained(name);
  const model = await tf.AutoModelForCausalLM.from_pretrained(name, { device, dtype: 'fp32' });
  const inputs = tokenizer(prompt);
  const run = async (n) => {
    const stamps = [];
    const streamer = { put: () => stamps.push(performance.now()), end: () => {} };
    const start = performance.now();
    const out = await model.generate({ ...inputs, max_new_tokens: n, min_new_tokens: n, do_sample: false, streamer });
    return { start, stamps, out };
  };
  await run(2);
  const { start, stamps, out } = await run(tokens);
  const promptTokens = inputs.input_ids.dims[1];
  const ids = Array.from(out.data).slice(promptTokens).map(Number);
  // The streamer's first call carries the prompt; each later one a new token.
  const first = stamps[1];
  const last = stamps[stamps.length - 1];
  await model.dispose();
  return { text: tokenizer.decode(ids, { skip_special_tokens: true }), promptTokens, generated: ids.length,
    ttftMs: first - start, prefillTokS: promptTokens / ((first - start) / 1e3),
    decodeTokS: (ids.length - 1) / ((last - first) / 1e3) };
}

const report = await inBrowser(async ({ server, browser }) => {
  const page = await browser.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  await page.goto(`${server.origin}/web/e2e/harness.html`);
  await page.waitForFunction(() => window.ternlight);
  const inPage = (body, args) => page.evaluate(async ([source, args]) => {
    const run = new Function('t', 'args', `return (${source})(t, args);`);
    return run(window.ternlight, args);
  }, [body.toString(), args]);
  const args = { name, model: `${server.origin}/target/peer/${name}`, prompt, tokens };
  const rounds = [];
  for (let round = 1; round <= 2; round++) {
    const row = { round, ternlight: await inPage(ternlight, args) };
    for (const device of ['webgpu', 'wasm']) {
      row[`transformers.js ${device}`] = await inPage(transformersJs, { ...args, device })
        .catch((e) => ({ error: String(e.message ?? e) }));
    }
    rounds.push(row);
  }
  assert.deepEqual(errors, []);
  return { model: name, prompt, tokens, rounds };
});

for (const row of report.rounds) {
  for (const [runtime, r] of Object.entries(row).filter(([k]) => k !== 'round')) {
    if (r.error) {
      console.log(`round ${row.round} ${runtime}: ${r.error}`);
      continue;
    }
    assert.equal(r.text, row.ternlight.text, `${runtime} continued differently from Ternlight`);
    console.log(`round ${row.round} ${runtime}: prompt ${r.promptTokens} tokens, TTFT ${r.ttftMs.toFixed(1)} ms, `
      + `prefill ${r.prefillTokS.toFixed(1)} tok/s, decode ${r.decodeTokS.toFixed(1)} tok/s (${r.generated} tokens)`);
  }
}
mkdirSync(join(root, 'target/bench'), { recursive: true });
writeFileSync(join(root, 'target/bench/peer.json'), JSON.stringify(report, null, 2));
