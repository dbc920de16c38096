// Ternlight in the browser: Engine.load(source, options) streams a model into WebGPU (in a Web Worker by default)
// and returns an engine with generate() as an async iterator of text, an OpenAI-style chat.completions.create(),
// stats() and unload(). See README.md.

/**
 * The error every engine call rejects with: an `Error` named `TernlightError` whose `kind` says what failed
 * (`network`, `model-file`, `unsupported`, `invalid-input`, `invalid-request`, `no-gpu`, `device-lost`,
 * `device-limit`, `gpu` or `internal`) and whose message names the file, tensor or limit at fault.
 */
function ternlightError({ message, kind }) {
  const error = new Error(message);
  error.name = 'TernlightError';
  error.kind = kind;
  return error;
}

/** Requests to the engine host and their replies, matched by id. */
class Port {
  #pending = new Map();
  #next = 1;

  constructor(post) {
    this.post = post;
  }

  receive(reply) {
    const pending = this.#pending.get(reply.id);
    if (!pending) return;
    if (reply.op === 'progress' || reply.op === 'token') {
      pending.onMessage?.(reply);
      return;
    }
    this.#pending.delete(reply.id);
    if (reply.op === 'error') pending.reject(ternlightError(reply));
    else pending.resolve(reply.value);
  }

  fail(error) {
    for (const pending of this.#pending.values()) pending.reject(error);
    this.#pending.clear();
  }

  call(request, onMessage) {
    const id = this.#next++;
    const done = new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject, onMessage });
      this.post({ ...request, id });
    });
    return { id, done };
  }
}

async function openPort(worker) {
  if (worker) {
    const w = new Worker(new URL('./worker.js', import.meta.url), { type: 'module' });
    const port = new Port((m) => w.postMessage(m));
    w.onmessage = (e) => port.receive(e.data);
    w.onerror = (e) => port.fail(ternlightError({ message: `engine worker failed: ${e.message ?? e}`, kind: 'internal' }));
    return { port, close: () => w.terminate() };
  }
  const { handle } = await import('./host.js');
  const port = new Port((m) => handle(m, (reply) => port.receive(reply)));
  return { port, close: () => {} };
}

export class Engine {
  #port;
  #close;
  #model;

  constructor(port, close, model) {
    this.#port = port;
    this.#close = close;
    this.#model = model;
    /** OpenAI-style chat: `engine.chat.completions.create({messages, stream, temperature, max_tokens, top_p, seed})`. */
    this.chat = { completions: { create: (request) => this.#complete(request) } };
  }

  /**
   * Streams the model at `source` (an http(s) base URL holding config.json, model.safetensors or its index and
   * tokenizer.json, or a Hugging Face repo id `org/name[@revision]`) into WebGPU.
   * Options: onProgress({bytesDone, bytesTotal, tensorsDone, tensorsTotal, layersReady, layersTotal,
   * bytesPerSecond, etaSeconds}); worker (default true: run in a Web Worker; false: in this page);
   * files ({config, weights, tokenizer} URLs fetched whole instead of a source); cacheBlockBytes;
   * attentionPolicy (see setAttentionPolicy; checked before anything downloads).
   */
  static async load(source, options = {}) {
    const { onProgress, worker = true, files, cacheBlockBytes, attentionPolicy } = options;
    const { port, close } = await openPort(worker);
    try {
      const request = { op: 'load', source, files, cacheBlockBytes, attentionPolicy };
      await port.call(request, (m) => onProgress?.(m.progress)).done;
    } catch (e) {
      close();
      throw e;
    }
    return new Engine(port, close, source ?? files?.weights);
  }

  /**
   * Times candidate kernel sizes on this browser's WebGPU adapter (where engines run: in a Web Worker unless
   * `worker: false`) and keeps the fastest in Cache Storage: engines loaded afterwards on this adapter start with
   * them (stats().tuning.fromCache). Resolves to {adapter, tuning, saved, trials: [{kernel, tuning, ms}]}. Options:
   * reps (3 timed dispatches per candidate), worker (true). Seconds on a GPU, minutes on a CPU adapter.
   */
  static async tune({ reps = 3, worker = true } = {}) {
    const { port, close } = await openPort(worker);
    try {
      return await port.call({ op: 'tune', reps }).done;
    } finally {
      close();
    }
  }

  /**
   * Generates after `prompt` (a fresh context), yielding pieces of text as tokens arrive. Options: maxTokens
   * (256), temperature (0: greedy), topP (1), seed (0), signal (an AbortSignal that stops the generation),
   * attention ({layer, head, maxQueries, onMap, overview, onOverview}: onMap receives that head's attention map
   * after every token; with `overview`, onOverview receives every attention layer's head entropies too), profile
   * (time each layer on the GPU, where the adapter has timestamp queries: see stats().stageSeconds).
   * Leaving the loop early stops it too.
   */
  generate(prompt, options = {}) {
    return this.#stream({ prompt }, options);
  }

  /** Generation after `prompt` or, given `messages`, after the chat they make (the model's chat template). */
  async *#stream(input, options) {
    const { maxTokens = 256, temperature = 0, topP = 1, seed = 0, signal, attention, profile = false } = options;
    const { onMap, onOverview, ...tap } = attention ?? {};
    const queue = [];
    let wake = null;
    let finished = false;
    let failure = null;
    const { id, done } = this.#port.call(
      { op: 'generate', ...input, maxTokens, temperature, topP, seed, attention: attention ? tap : undefined, profile },
      (m) => {
        if (m.map) onMap?.(m.map);
        if (m.overview) onOverview?.(m.overview);
        if (m.text) queue.push(m.text);
        wake?.();
      },
    );
    const stop = () => this.#port.call({ op: 'stop', target: id });
    signal?.addEventListener('abort', stop, { once: true });
    done.then(
      () => { finished = true; wake?.(); },
      (e) => { failure = e; finished = true; wake?.(); },
    );
    try {
      for (;;) {
        if (queue.length) {
          yield queue.shift();
        } else if (finished) {
          if (failure) throw failure;
          return;
        } else {
          await new Promise((resolve) => { wake = resolve; });
          wake = null;
        }
      }
    } finally {
      signal?.removeEventListener('abort', stop);
      if (!finished) stop();
      await done.catch(() => {});
    }
  }

  async #complete({ messages, stream = false, temperature = 0, max_tokens = 256, top_p = 1, seed = 0 }) {
    const options = { maxTokens: max_tokens, temperature, topP: top_p, seed };
    const id = `chatcmpl-${Date.now().toString(36)}`;
    const created = Math.floor(Date.now() / 1000);
    const model = this.#model;
    const finishReason = async () => ((await this.stats()).generatedTokens >= max_tokens ? 'length' : 'stop');
    if (stream) {
      const engine = this;
      return (async function* chunks() {
        for await (const content of engine.#stream({ messages }, options)) {
          yield { id, object: 'chat.completion.chunk', created, model,
            choices: [{ index: 0, delta: { role: 'assistant', content }, finish_reason: null }] };
        }
        yield { id, object: 'chat.completion.chunk', created, model,
          choices: [{ index: 0, delta: {}, finish_reason: await finishReason() }] };
      })();
    }
    let content = '';
    for await (const piece of this.#stream({ messages }, options)) content += piece;
    const stats = await this.stats();
    return {
      id, object: 'chat.completion', created, model,
      choices: [{ index: 0, message: { role: 'assistant', content }, finish_reason: await finishReason() }],
      usage: { prompt_tokens: stats.promptTokens, completion_tokens: stats.generatedTokens,
        total_tokens: stats.promptTokens + stats.generatedTokens },
    };
  }

  /**
   * The attention weights of `head` in `layer` (softmax, or a delta-rule layer's implicit attention, whose weights
   * may be negative) over the last `maxQueries` (64) positions of
   * the last generation: {layer, head, firstQuery, queries, keys, weights (Float32Array, queries × keys), tokens}.
   * Capture costs nothing until a layer is asked for and covers only that layer; it starts with the next
   * generation, so ask before generating (or pass generate's `attention` option for live maps).
   */
  attention(layer, head, { maxQueries = 64 } = {}) {
    return this.#port.call({ op: 'attention', layer, head, maxQueries }).done;
  }

  /**
   * Head entropies of every layer with attention maps (softmax and delta-rule) at the last position of the last
   * generation ([{layer, entropies}], each in [0, 1]: 0 when a head looks at one token, 1 when it spreads evenly).
   * Captures every such layer from then on, until a generation asks for less.
   */
  overview() {
    return this.#port.call({ op: 'overview' }).done;
  }

  /**
   * Measures the model on this device as the native `ternlight bench` does and resolves to the same report (its
   * JSON keys): prefill and decode at each context, prefill against stepping, and a streaming copy's bandwidth as the
   * roofline. Options: contexts ([64, 256]), decodeSteps (16), compareTokens (256), reps (2). Starts a fresh context.
   */
  bench({ contexts = [64, 256], decodeSteps = 16, compareTokens = 256, reps = 2 } = {}) {
    return this.#port.call({ op: 'bench', contexts, decodeSteps, compareTokens, reps }).done;
  }

  /**
   * Switches off attention heads for the following generations, `heads` being [layer, head] pairs of
   * softmax-attention layers (an empty list restores the model): see how the output changes without them.
   */
  ablate(heads) {
    return this.#port.call({ op: 'ablate', heads }).done;
  }

  /**
   * Runs the model's softmax-attention layers under a cheaper policy from the next generation on:
   * 'full' (the model's own), 'sliding:W' or 'sliding:W+sinks:S' (a window with attention sinks and
   * StreamingLLM positions: bounded memory, generation past the trained context), or per layer
   * 'layers:0-5=full,6-23=sliding:512'. Resolves to stats(), whose attentionPolicy then names it.
   */
  setAttentionPolicy(policy) {
    return this.#port.call({ op: 'policy', policy }).done;
  }

  /**
   * Speed, memory and load facts: {promptTokens, generatedTokens, ttftMs, prefillTokensPerSecond,
   * decodeTokensPerSecond, weightBytes, stateBytes, kvCacheBytes, recurrentBytes, contextTokens, maxContext,
   * loadSeconds, downloadedBytes, loadPeakHostBytes, largestTensorBytes, warnings, attentionPolicy, layers: [{kind, attentionHeads}], contextMemory,
   * stageSeconds, tuning: {fromCache, wg, nr, rpl, rpl_row_bytes, vw, ternary_wg, ternary_nr, ternary_rows,
   * ternary_swar, tm, tn, wg_x, wg_y, attn_kv_tile, attn_splits, attn_split_from}}.
   */
  stats() {
    return this.#port.call({ op: 'stats' }).done;
  }

  /** Frees the model's GPU memory and ends the worker. */
  async unload() {
    await this.#port.call({ op: 'unload' }).done;
    this.#close();
  }
}
