// Ternlight in the browser: Engine.load(source, options) streams a model into WebGPU (in a Web Worker by default)
// and returns an engine with generate() as an async iterator of text, an OpenAI-style chat.completions.create(),
// stats() and unload(). See README.md.

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
    if (reply.op === 'error') pending.reject(new Error(reply.message));
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
    w.onerror = (e) => port.fail(new Error(`engine worker failed: ${e.message ?? e}`));
    return { port, close: () => w.terminate() };
  }
  const { handle } = await import('./host.js');
  const port = new Port((m) => handle(m, (reply) => port.receive(reply)));
  return { port, close: () => {} };
}

/** ChatML, the chat format of Qwen, SmolLM2 and LFM2 (and a sane default for base models). */
function chatPrompt(messages) {
  const turns = messages.map((m) => `<|im_start|>${m.role}\n${m.content}<|im_end|>\n`).join('');
  return `${turns}<|im_start|>assistant\n`;
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
   * files ({config, weights, tokenizer} URLs fetched whole instead of a source); cacheBlockBytes.
   */
  static async load(source, options = {}) {
    const { onProgress, worker = true, files, cacheBlockBytes } = options;
    const { port, close } = await openPort(worker);
    try {
      await port.call({ op: 'load', source, files, cacheBlockBytes }, (m) => onProgress?.(m.progress)).done;
    } catch (e) {
      close();
      throw e;
    }
    return new Engine(port, close, source ?? files?.weights);
  }

  /**
   * Generates after `prompt` (a fresh context), yielding pieces of text as tokens arrive. Options: maxTokens
   * (256), temperature (0: greedy), topP (1), seed (0), signal (an AbortSignal that stops the generation).
   * Leaving the loop early stops it too.
   */
  async *generate(prompt, options = {}) {
    const { maxTokens = 256, temperature = 0, topP = 1, seed = 0, signal } = options;
    const queue = [];
    let wake = null;
    let finished = false;
    let failure = null;
    const { id, done } = this.#port.call(
      { op: 'generate', prompt, maxTokens, temperature, topP, seed },
      (m) => {
        queue.push(m.text);
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
    const prompt = chatPrompt(messages);
    const options = { maxTokens: max_tokens, temperature, topP: top_p, seed };
    const id = `chatcmpl-${Date.now().toString(36)}`;
    const created = Math.floor(Date.now() / 1000);
    const model = this.#model;
    const finishReason = async () => ((await this.stats()).generatedTokens >= max_tokens ? 'length' : 'stop');
    if (stream) {
      const engine = this;
      return (async function* chunks() {
        for await (const content of engine.generate(prompt, options)) {
          yield { id, object: 'chat.completion.chunk', created, model,
            choices: [{ index: 0, delta: { role: 'assistant', content }, finish_reason: null }] };
        }
        yield { id, object: 'chat.completion.chunk', created, model,
          choices: [{ index: 0, delta: {}, finish_reason: await finishReason() }] };
      })();
    }
    let content = '';
    for await (const piece of this.generate(prompt, options)) content += piece;
    const stats = await this.stats();
    return {
      id, object: 'chat.completion', created, model,
      choices: [{ index: 0, message: { role: 'assistant', content }, finish_reason: await finishReason() }],
      usage: { prompt_tokens: stats.promptTokens, completion_tokens: stats.generatedTokens,
        total_tokens: stats.promptTokens + stats.generatedTokens },
    };
  }

  /**
   * Speed, memory and load facts: {promptTokens, generatedTokens, ttftMs, prefillTokensPerSecond,
   * decodeTokensPerSecond, weightBytes, stateBytes, contextTokens, maxContext, loadSeconds, downloadedBytes,
   * warnings}.
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
