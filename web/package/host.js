// The engine's side of the message protocol, shared by the Web Worker (worker.js) and the in-page mode: it owns
// the wasm Engine, answers {id, op, ...} requests and posts {id, op: 'progress' | 'token' | 'result' | 'error'}.
import init, { Engine } from './ternlight_runtime.js';

let ready = null;
let engine = null;
let busy = false;
let lastStats = null;
const stopped = new Set();

/** Captures `layer` (if it is not already) and returns `head`'s map over the last `maxQueries` positions. */
function attentionMap({ layer, head, maxQueries = 64 }) {
  if (engine.attention_layer !== layer) engine.set_attention_layer(layer);
  return engine.attention(head, maxQueries);
}

async function run(msg, post) {
  switch (msg.op) {
    case 'load': {
      engine?.unload();
      engine = null;
      const onProgress = (progress) => post({ id: msg.id, op: 'progress', progress });
      engine = msg.files
        ? await Engine.load_files(msg.files.config, msg.files.weights, msg.files.tokenizer)
        : await Engine.load(msg.source, onProgress, msg.cacheBlockBytes);
      lastStats = engine.stats();
      return lastStats;
    }
    case 'generate': {
      if (!engine) throw new Error('no model is loaded');
      if (busy) throw new Error('a generation is already running');
      busy = true;
      try {
        if (msg.attention) engine.set_attention_layer(msg.attention.layer);
        const prompt = msg.messages ? engine.render_chat(msg.messages) : msg.prompt;
        engine.start(prompt, msg.maxTokens, msg.temperature, msg.topP, msg.seed, Boolean(msg.messages));
        for (;;) {
          if (stopped.delete(msg.id)) {
            engine.stop();
            break;
          }
          const piece = await engine.next();
          lastStats = engine.stats();
          if (piece === undefined) break;
          const map = msg.attention ? attentionMap(msg.attention) : undefined;
          if (piece || map) post({ id: msg.id, op: 'token', text: piece, stats: lastStats, map });
        }
      } finally {
        busy = false;
      }
      return lastStats;
    }
    case 'stop':
      if (busy) stopped.add(msg.target);
      return null;
    case 'attention':
      if (!engine) throw new Error('no model is loaded');
      if (busy) throw new Error('attention maps during a generation come through its `attention` option');
      return attentionMap(msg);
    case 'stats':
      if (!engine) throw new Error('no model is loaded');
      return busy ? lastStats : engine.stats();
    case 'unload':
      engine?.unload();
      engine = null;
      return null;
    default:
      throw new Error(`unknown request ${msg.op}`);
  }
}

/** Handles one request, posting its progress, tokens and result (or error) through `post`. */
export async function handle(msg, post) {
  try {
    ready ??= init();
    await ready;
    post({ id: msg.id, op: 'result', value: await run(msg, post) });
  } catch (e) {
    post({ id: msg.id, op: 'error', message: String(e?.message ?? e) });
  }
}
