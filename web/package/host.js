// The engine's side of the message protocol, shared by the Web Worker (worker.js) and the in-page mode: it owns
// the wasm Engine, answers {id, op, ...} requests and posts {id, op: 'progress' | 'token' | 'result' | 'error'}.
import init, { Engine, is_cached as isCached, tuneDevice } from './ternlight_runtime.js';

let ready = null;
let engine = null;
let busy = false;
let lastStats = null;
const stopped = new Set();

/** `head`'s map over the last `maxQueries` positions of `layer` (which must be captured). */
function attentionMap({ layer, head, maxQueries = 64 }) {
  return engine.attention(layer, head, maxQueries);
}

/** The layers of the loaded model with attention maps (softmax, or the implicit attention of delta-rule layers). */
function attentionLayers() {
  return engine.stats().layers.flatMap((l, i) => (l.attentionHeads > 0 ? [i] : []));
}

/** Captures exactly `layers`; returns whether that changed anything. */
function capture(layers) {
  const now = Array.from(engine.attention_layers);
  if (now.length === layers.length && now.every((l, i) => l === layers[i])) return false;
  engine.set_attention_layers(new Uint32Array(layers));
  return true;
}

async function run(msg, post) {
  switch (msg.op) {
    case 'load': {
      engine?.unload();
      engine = null;
      const onProgress = (progress) => post({ id: msg.id, op: 'progress', progress });
      engine = msg.files
        ? await Engine.load_files(msg.files.config, msg.files.weights, msg.files.tokenizer, msg.attentionPolicy)
        : await Engine.load(msg.source, onProgress, msg.cacheBlockBytes, msg.attentionPolicy);
      lastStats = engine.stats();
      return lastStats;
    }
    case 'generate': {
      if (!engine) throw new Error('no model is loaded');
      if (busy) throw new Error('a generation is already running');
      busy = true;
      try {
        // Capture costs nothing unless asked for, and then covers one layer (every attention layer for the overview).
        const tap = msg.attention;
        capture(!tap ? [] : tap.overview ? attentionLayers() : [tap.layer]);
        engine.set_profiling(Boolean(msg.profile));
        const prompt = msg.messages ? engine.render_chat(msg.messages) : msg.prompt;
        engine.start(prompt, msg.maxTokens, msg.temperature, msg.topP, msg.seed, Boolean(msg.messages));
        let mapKeys = -1;
        for (;;) {
          if (stopped.delete(msg.id)) {
            engine.stop();
            break;
          }
          const piece = await engine.next();
          lastStats = engine.stats();
          if (piece === undefined) break;
          // A map per new position (the last piece of text may come without one).
          let map = tap ? attentionMap(tap) : undefined;
          if (map?.keys === mapKeys) map = undefined;
          mapKeys = map?.keys ?? mapKeys;
          const overview = map && tap.overview ? engine.overview() : undefined;
          if (piece || map) post({ id: msg.id, op: 'token', text: piece, stats: lastStats, map, overview });
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
      if (!Array.from(engine.attention_layers).includes(msg.layer)) {
        // A newly chosen layer sees the last text again, so its maps are there at once.
        capture([msg.layer]);
        await engine.replay();
      }
      return attentionMap(msg);
    case 'overview':
      if (!engine) throw new Error('no model is loaded');
      if (busy) throw new Error('the overview during a generation comes through its `attention` option');
      if (capture(attentionLayers())) await engine.replay();
      return engine.overview();
    case 'ablate':
      if (!engine) throw new Error('no model is loaded');
      if (busy) throw new Error('heads cannot be switched off during a generation');
      engine.set_ablation(new Uint32Array(msg.heads.flat()));
      return null;
    case 'policy':
      if (!engine) throw new Error('no model is loaded');
      if (busy) throw new Error('the attention policy cannot change during a generation');
      engine.set_attention_policy(msg.policy);
      return engine.stats();
    case 'cached':
      return Promise.all(msg.sources.map((s) => isCached(s)));
    case 'bench':
      if (!engine) throw new Error('no model is loaded');
      if (busy) throw new Error('the bench cannot run during a generation');
      return engine.bench(new Uint32Array(msg.contexts), msg.decodeSteps, msg.compareTokens, msg.reps);
    case 'tune':
      if (busy) throw new Error('tuning cannot run during a generation');
      return tuneDevice(msg.reps);
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
    // A trap (a Rust panic) leaves the module's memory unknown, and a lost device leaves nothing to run on: the
    // engine is dropped (its buffers with it) and the next load starts afresh on a new device.
    const trapped = e instanceof WebAssembly.RuntimeError;
    if (trapped || e?.kind === 'device-lost') {
      try {
        engine?.unload();
      } catch {
        // After a trap the module cannot be trusted to unload; dropping the reference is all that is left.
      }
      engine = null;
    }
    const message = trapped ? `the engine crashed (${e.message}); load the model again` : String(e?.message ?? e);
    post({ id: msg.id, op: 'error', message, kind: trapped ? 'internal' : (e?.kind ?? 'invalid-request') });
  }
}
