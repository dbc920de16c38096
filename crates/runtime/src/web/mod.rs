//! The browser API (wasm-bindgen): an [`Engine`] streams a model by `fetch` into WebGPU and generates text a
//! token at a time. Works in a page or a Web Worker; the npm package's JavaScript (web/package) wraps it in a
//! worker with an async-iterator and OpenAI-style interface.
//!
//! - `net`: `fetch` with Range requests, resume, retries and backoff.
//! - `cache`: Cache Storage as a block store keyed by URL and ETag.
//! - `remote`: safetensors checkpoints behind URLs, fetched a tensor at a time while they upload.
//! - `tuning`: kernel sizes timed per adapter (`tuneDevice`) and kept in Cache Storage.

mod cache;
mod net;
mod remote;
mod tuning;

pub use tuning::tune_device;

use crate::bench::{measure, report, roofline, BenchOptions};
use crate::generate::{Generation, GenerationStats};
use crate::hub::model_base;
use crate::weights::{LoadProgress, OnDemand};
use crate::{RuntimeError, Session, SessionOptions};
use js_sys::{Function, Object, Reflect};
use std::sync::Arc;
use ternlight_core::attention_map::{map_heads, HeadLayout};
use ternlight_core::sampling::{Sampler, SamplingParams};
use ternlight_core::spec::{AttentionPolicy, ModelSpec};
use ternlight_core::tensors::{SafetensorsCheckpoint, TensorSource};
use ternlight_core::tokenizer::{ChatMessage, Tokenizer};
use ternlight_gpu::Gpu;
use wasm_bindgen::prelude::*;
use web_time::Instant;

fn js_error(e: impl Into<RuntimeError>) -> JsValue {
    let e = e.into();
    let error = js_sys::Error::new(&e.to_string());
    error.set_name("TernlightError");
    let _ = Reflect::set(&error, &"kind".into(), &e.kind().into());
    error.into()
}

/// The error for a config file that is not text.
fn not_text(url: &str) -> ternlight_core::CoreError {
    ternlight_core::CoreError::Json { path: url.to_string(), message: "not UTF-8 text".into() }
}

/// [`js_error`] for a request the engine cannot serve.
fn refused(message: String) -> JsValue {
    js_error(RuntimeError::Request(message))
}

/// `value` as the JavaScript value `JSON.parse` makes of it (reports built as serde JSON).
fn js_json(value: &serde_json::Value) -> Result<JsValue, JsValue> {
    js_sys::JSON::parse(&value.to_string())
}

/// A plain JavaScript object with the given number-valued fields.
fn object(fields: &[(&str, f64)]) -> Object {
    let out = Object::new();
    for &(name, value) in fields {
        let _ = Reflect::set(&out, &name.into(), &value.into());
    }
    out
}

/// The tokenizer in the model directory at `base`: `tokenizer.json` (required) and `tokenizer_config.json` (for
/// the chat template, when there is one).
async fn tokenizer_at(base: &str) -> Result<Tokenizer, JsValue> {
    let json = remote::required(base, "tokenizer.json").await.map_err(js_error)?;
    let config = net::fetch_whole(&format!("{base}/tokenizer_config.json")).await.map_err(js_error)?;
    Tokenizer::from_bytes(&json, config.as_deref()).map_err(js_error)
}

/// A load's progress as the object `onProgress` receives.
fn progress_object(p: &LoadProgress, seconds: f64) -> Object {
    let rate = p.bytes_done as f64 / seconds.max(1e-3);
    let eta = (p.bytes_total - p.bytes_done) as f64 / rate.max(1.0);
    object(&[
        ("bytesDone", p.bytes_done as f64),
        ("bytesTotal", p.bytes_total as f64),
        ("tensorsDone", p.tensors_done as f64),
        ("tensorsTotal", p.tensors_total as f64),
        ("layersReady", p.layers_ready as f64),
        ("layersTotal", p.layers_total as f64),
        ("bytesPerSecond", rate),
        ("etaSeconds", eta),
    ])
}

/// How the model was loaded, for `stats()`.
#[derive(Default)]
struct LoadReport {
    seconds: f64,
    downloaded_bytes: u64,
    /// The most checkpoint bytes the load held in host memory at once.
    peak_host_bytes: u64,
    /// The checkpoint's largest tensor, the unit that peak is measured against.
    largest_tensor_bytes: u64,
    warnings: Vec<String>,
    /// The kernel sizes came from a `tuneDevice` run on this adapter.
    tuned: bool,
}

/// The bytes of the largest tensor `spec` reads from `source`.
fn largest_tensor(spec: &ModelSpec, source: &dyn TensorSource) -> u64 {
    let sizes = spec.tensors().into_iter().map(|d| source.byte_len(&d.name).unwrap_or(0));
    sizes.max().unwrap_or(0) as u64
}

/// A generation in progress and the text already handed out.
struct Streaming {
    generation: Generation,
    emitted: usize,
}

/// A model on the GPU with its tokenizer, generating a token at a time.
#[wasm_bindgen]
pub struct Engine {
    session: Session,
    tokenizer: Tokenizer,
    stop_ids: Vec<u32>,
    current: Option<Streaming>,
    /// The context of the current or last generation (prompt and generated ids), to replay it.
    context: Vec<u32>,
    /// The text of each context token, decoded once, for attention-map labels.
    labels: Vec<String>,
    last: GenerationStats,
    load: LoadReport,
}

/// Session options under an attention policy string (`None`: the model's own attention).
fn session_options(attention_policy: Option<String>) -> Result<SessionOptions, JsValue> {
    let attention_policy = match attention_policy {
        Some(text) => AttentionPolicy::parse(&text).map_err(js_error)?,
        None => AttentionPolicy::full(),
    };
    Ok(SessionOptions { attention_policy, ..Default::default() })
}

/// The device with the kernel sizes stored for its adapter (if any, and whether there were), shared with sessions
/// through an Arc (natively across threads; the browser has one thread).
async fn device() -> Result<(Arc<Gpu>, bool), JsValue> {
    let mut gpu = Gpu::new().await.map_err(js_error)?;
    let stored = tuning::stored(&gpu.info).await;
    let tuned = stored.is_some();
    if let Some(t) = stored {
        gpu.tuning = t;
    }
    #[allow(clippy::arc_with_non_send_sync)]
    Ok((Arc::new(gpu), tuned))
}

#[wasm_bindgen]
impl Engine {
    /// Streams the model at `source` into WebGPU: an `http(s)://` base URL (holding `config.json`,
    /// `model.safetensors` or its index, `tokenizer.json`), a Hugging Face repo id `org/name[@revision]`, or the
    /// URL of a `.gguf` file (its tokenizer carried in it or in a `tokenizer.json` beside it).
    /// Tensors are fetched one at a time by Range requests through the browser cache and uploaded as they arrive,
    /// so host memory holds one tensor and one cache block. `on_progress`, if given, is called with `{bytesDone, bytesTotal, tensorsDone, tensorsTotal,
    /// layersReady, layersTotal, bytesPerSecond, etaSeconds}`. `cache_block_bytes` sets the size of the cached
    /// blocks (default 4 MiB; smaller suits tiny models). `attention_policy` (e.g. `sliding:4096+sinks:4`; see
    /// [`AttentionPolicy`]) is checked before anything downloads.
    pub async fn load(
        source: String,
        on_progress: Option<Function>,
        cache_block_bytes: Option<u32>,
        attention_policy: Option<String>,
    ) -> Result<Engine, JsValue> {
        let options = session_options(attention_policy)?;
        let base = model_base(&source).ok_or_else(|| {
            refused(format!("`{source}` is neither an http(s):// base URL nor a Hugging Face repo id org/name"))
        })?;
        let started = Instant::now();
        let block = cache_block_bytes.filter(|&b| b > 0).map_or(remote::DEFAULT_BLOCK, u64::from);
        let (files, checkpoint, spec, tokenizer): (_, Box<dyn remote::Checkpoint>, _, _) = match base.ends_with(".gguf")
        {
            true => {
                let (files, gguf) = remote::RemoteFiles::gguf(&base, block).await.map_err(js_error)?;
                let spec = ModelSpec::from_config_json(&gguf.config_json().map_err(js_error)?).map_err(js_error)?;
                let tokenizer = match gguf.tokenizer().map_err(js_error)? {
                    Some(tokenizer) => tokenizer,
                    None => tokenizer_at(&base[..base.rfind('/').unwrap_or(0)]).await?,
                };
                (files, Box::new(gguf), spec, tokenizer)
            }
            false => {
                let config = String::from_utf8(remote::required(&base, "config.json").await.map_err(js_error)?)
                    .map_err(|_| js_error(not_text(&format!("{base}/config.json"))))?;
                let spec = ModelSpec::from_config_json(&config).map_err(js_error)?;
                let tokenizer = tokenizer_at(&base).await?;
                let urls = remote::checkpoint_urls(&base).await.map_err(js_error)?;
                let (files, safetensors) = remote::RemoteFiles::safetensors(urls, block).await.map_err(js_error)?;
                (files, Box::new(safetensors), spec, tokenizer)
            }
        };
        tokenizer.check_vocab(spec.vocab).map_err(js_error)?;
        let mut report = |p: &LoadProgress| {
            if let Some(f) = &on_progress {
                let _ = f.call1(&JsValue::NULL, &progress_object(p, started.elapsed().as_secs_f64()));
            }
        };
        let largest_tensor_bytes = largest_tensor(&spec, checkpoint.as_ref());
        let mut prefetch = files.prefetch(checkpoint.as_ref());
        let (gpu, tuned) = device().await?;
        let session = Session::load(gpu, spec, checkpoint.as_ref(), &mut prefetch, &options, &mut report)
            .await
            .map_err(js_error)?;
        let load = LoadReport {
            seconds: started.elapsed().as_secs_f64(),
            downloaded_bytes: files.downloaded_bytes(),
            peak_host_bytes: files.peak_host_bytes(),
            largest_tensor_bytes,
            warnings: files.warnings(),
            tuned,
        };
        Ok(Engine::ready(session, tokenizer, load))
    }

    /// Loads the model whose `config.json`, `model.safetensors` and `tokenizer.json` are at these URLs (fetched
    /// whole: for blob URLs and small models), under `attention_policy` as [`Engine::load`].
    pub async fn load_files(
        config_url: String,
        weights_url: String,
        tokenizer_url: String,
        attention_policy: Option<String>,
    ) -> Result<Engine, JsValue> {
        let options = session_options(attention_policy)?;
        let started = Instant::now();
        let fetch = |url: String| async move {
            net::fetch_whole(&url).await.map_err(js_error)?.ok_or_else(|| refused(format!("{url}: not found")))
        };
        let config =
            String::from_utf8(fetch(config_url.clone()).await?).map_err(|_| js_error(not_text(&config_url)))?;
        let spec = ModelSpec::from_config_json(&config).map_err(js_error)?;
        let tokenizer = Tokenizer::from_bytes(&fetch(tokenizer_url).await?, None).map_err(js_error)?;
        tokenizer.check_vocab(spec.vocab).map_err(js_error)?;
        let weights = fetch(weights_url.clone()).await?;
        let downloaded_bytes = weights.len() as u64;
        let checkpoint = SafetensorsCheckpoint::from_files(vec![(weights_url, weights)]).map_err(js_error)?;
        let largest_tensor_bytes = largest_tensor(&spec, &checkpoint);
        let (gpu, tuned) = device().await?;
        let session =
            Session::load(gpu, spec, &checkpoint, &mut OnDemand, &options, &mut |_| {}).await.map_err(js_error)?;
        let load = LoadReport {
            seconds: started.elapsed().as_secs_f64(),
            downloaded_bytes,
            peak_host_bytes: downloaded_bytes,
            largest_tensor_bytes,
            warnings: Vec::new(),
            tuned,
        };
        Ok(Engine::ready(session, tokenizer, load))
    }

    /// The prompt for a chat, `messages` being `[{role, content}]`: rendered by the model's chat template from
    /// `tokenizer_config.json`, or in ChatML when it has none.
    pub fn render_chat(&self, messages: JsValue) -> Result<String, JsValue> {
        let field = |m: &JsValue, name: &str| Reflect::get(m, &name.into()).ok().and_then(|v| v.as_string());
        let mut chat = Vec::new();
        for m in js_sys::Array::from(&messages).iter() {
            let (Some(role), Some(content)) = (field(&m, "role"), field(&m, "content")) else {
                return Err(refused("each chat message needs a string `role` and `content`".into()));
            };
            chat.push(ChatMessage { role, content });
        }
        if self.tokenizer.has_chat_template() {
            return self.tokenizer.render_chat(&chat).map_err(js_error);
        }
        let turns: String = chat.iter().map(|m| format!("<|im_start|>{}\n{}<|im_end|>\n", m.role, m.content)).collect();
        Ok(format!("{turns}<|im_start|>assistant\n"))
    }

    /// Starts generating after `prompt` (a fresh context): up to `max_tokens`, at `temperature` (0: greedy) with
    /// nucleus `top_p` (1: off) and RNG `seed`. A `rendered` prompt (from [`render_chat`](Engine::render_chat))
    /// already holds its special tokens. Pull the text with [`next`](Engine::next).
    pub fn start(
        &mut self,
        prompt: String,
        max_tokens: usize,
        temperature: f32,
        top_p: f32,
        seed: u32,
        rendered: bool,
    ) -> Result<(), JsValue> {
        let ids = self.tokenizer.encode(&prompt, !rendered).map_err(js_error)?;
        if ids.is_empty() {
            return Err(refused("the prompt has no tokens".into()));
        }
        self.session.reset();
        let params = SamplingParams { temperature, top_p, seed: seed.into(), ..Default::default() };
        params.check().map_err(refused)?;
        let generation = Generation::new(&ids, Sampler::new(params), max_tokens, &self.stop_ids);
        self.labels = ids.iter().map(|&id| self.tokenizer.decode(&[id]).unwrap_or_default()).collect();
        self.context = ids;
        self.current = Some(Streaming { generation, emitted: 0 });
        Ok(())
    }

    /// The next piece of text of the generation [`start`](Engine::start) began, or `undefined` once it has ended.
    /// A piece may be empty while a multi-byte character is still incomplete.
    pub async fn next(&mut self) -> Result<Option<String>, JsValue> {
        let Some(current) = &mut self.current else { return Ok(None) };
        let token = current.generation.next(&mut self.session).await.map_err(js_error)?;
        self.last = current.generation.stats().clone();
        self.context.extend(token);
        self.labels.extend(token.map(|id| self.tokenizer.decode(&[id]).unwrap_or_default()));
        let text = self.tokenizer.decode(current.generation.tokens()).map_err(js_error)?;
        if token.is_none() && current.emitted >= text.len() {
            self.current = None;
            return Ok(None);
        }
        // Hold back a trailing replacement character while the next token may complete it.
        let ready = match token {
            Some(_) => text.trim_end_matches('\u{FFFD}'),
            None => &text,
        };
        let piece = ready.get(current.emitted..).unwrap_or_default().to_string();
        current.emitted = current.emitted.max(ready.len());
        Ok(Some(piece))
    }

    /// Chooses the layers whose attention maps are captured, softmax or delta-rule (empty stops capture, which then
    /// costs nothing). Capture of a newly chosen layer covers the generations started after the choice.
    pub fn set_attention_layers(&mut self, layers: Vec<u32>) -> Result<(), JsValue> {
        let layers: Vec<usize> = layers.into_iter().map(|l| l as usize).collect();
        self.session.set_attention_taps(&layers).map_err(js_error)
    }

    /// Times every forward on the GPU per layer from now on (`false` stops); returns whether it can (the adapter
    /// needs timestamp queries, and each plan at most 2048 dispatches). The times appear in `stats().stageSeconds`.
    pub fn set_profiling(&mut self, on: bool) -> bool {
        self.session.set_profiling(on)
    }

    /// Runs the softmax-attention layers under `policy` (`full`, `sliding:W[+sinks:S]`,
    /// `layers:0-5=full,6-23=sliding:512`) from the next generation on; the context starts afresh.
    pub fn set_attention_policy(&mut self, policy: String) -> Result<(), JsValue> {
        let policy = AttentionPolicy::parse(&policy).map_err(js_error)?;
        self.session.set_attention_policy(&policy).map_err(js_error)
    }

    /// Switches off attention heads for the following generations: `pairs` is `[layer, head, layer, head, …]`
    /// over softmax-attention layers (empty restores the model).
    pub fn set_ablation(&mut self, pairs: Vec<u32>) -> Result<(), JsValue> {
        if !pairs.len().is_multiple_of(2) {
            return Err(refused("ablation takes [layer, head] pairs".into()));
        }
        let heads: Vec<(usize, usize)> = pairs.chunks(2).map(|p| (p[0] as usize, p[1] as usize)).collect();
        self.session.set_ablation(&heads).map_err(js_error)
    }

    /// The layers whose attention maps are captured.
    #[wasm_bindgen(getter)]
    pub fn attention_layers(&self) -> Vec<u32> {
        self.session.attention_taps().map(|t| t.layer() as u32).collect()
    }

    /// The attention weights of `head` in captured layer `layer` over the last `max_queries` positions of the
    /// current or last generation: `{layer, head, firstQuery, queries, keys, weights, tokens}` with `weights` a
    /// `Float32Array` of `queries × keys` (row-major; masked keys 0) and `tokens` the text of each key position.
    /// `undefined` when the layer is not captured.
    pub fn attention(&self, layer: u32, head: u32, max_queries: u32) -> Result<JsValue, JsValue> {
        let Some(tap) = self.session.attention_tap(layer as usize) else { return Ok(JsValue::UNDEFINED) };
        let map = tap.map(head as usize, max_queries as usize).map_err(js_error)?;
        let out = object(&[
            ("layer", tap.layer() as f64),
            ("head", head as f64),
            ("firstQuery", map.first_query as f64),
            ("queries", map.queries as f64),
            ("keys", map.keys as f64),
        ]);
        let weights = js_sys::Float32Array::from(map.weights.as_slice());
        let tokens: js_sys::Array =
            self.labels[..map.keys.min(self.labels.len())].iter().map(|l| JsValue::from_str(l)).collect();
        let _ = Reflect::set(&out, &"weights".into(), &weights);
        let _ = Reflect::set(&out, &"tokens".into(), &tokens);
        Ok(out.into())
    }

    /// Each captured layer's head entropies at the last position (`[{layer, entropies}]`, entropies a
    /// `Float32Array` in [0, 1]: 0 when a head looks at one token, 1 when it spreads evenly).
    pub fn overview(&self) -> js_sys::Array {
        self.session
            .attention_taps()
            .map(|tap| {
                let out = object(&[("layer", tap.layer() as f64)]);
                let entropies = js_sys::Float32Array::from(tap.entropies().as_slice());
                let _ = Reflect::set(&out, &"entropies".into(), &entropies);
                JsValue::from(out)
            })
            .collect()
    }

    /// Runs the last generation's context (prompt and output) through the model again from a fresh start, so an
    /// attention layer chosen afterwards has its maps for that text.
    pub async fn replay(&mut self) -> Result<(), JsValue> {
        self.current = None;
        self.session.reset();
        if !self.context.is_empty() {
            self.session.prefill(&self.context, &[]).await.map_err(js_error)?;
        }
        Ok(())
    }

    /// Ends the current generation early.
    pub fn stop(&mut self) {
        self.current = None;
    }

    /// Generates up to `max_tokens` after `prompt` at `temperature` (0: greedy) and returns the new text.
    pub async fn generate(&mut self, prompt: String, max_tokens: usize, temperature: f32) -> Result<String, JsValue> {
        self.start(prompt, max_tokens, temperature, 1.0, 0, false)?;
        let mut text = String::new();
        while let Some(piece) = self.next().await? {
            text.push_str(&piece);
        }
        Ok(text)
    }

    /// Measures the model on this device as `ternlight bench` does natively and returns the same report (its JSON
    /// keys): prefill and decode at each of `contexts`, `decode_steps` timed steps (median), prefill of
    /// `compare_tokens` against stepping them, the best of `reps` prefills, the roofline (a streaming copy's
    /// bandwidth, the tiled matmul's throughput) and, where the adapter has timestamp queries, one decode step timed
    /// per layer and per kernel. The context starts fresh and ends empty.
    pub async fn bench(
        &mut self,
        contexts: Vec<u32>,
        decode_steps: u32,
        compare_tokens: u32,
        reps: u32,
    ) -> Result<JsValue, JsValue> {
        let options = BenchOptions {
            contexts: contexts.iter().map(|&c| c as usize).collect(),
            decode_steps: decode_steps as usize,
            compare_tokens: compare_tokens as usize,
            reps: reps as usize,
        };
        if options.longest() > self.session.max_context() {
            return Err(refused(format!(
                "bench needs {} positions; this session holds {}",
                options.longest(),
                self.session.max_context()
            )));
        }
        self.current = None;
        self.context.clear();
        self.labels.clear();
        let roofline = roofline(self.session.gpu()).await.map_err(js_error)?;
        let timings = measure(&mut self.session, &options).await.map_err(js_error)?;
        let mut out = report(&self.session, &roofline, &timings);
        out["trained_positions"] = self.session.spec().max_positions.into();
        out["load_s"] = self.load.seconds.into();
        out["device"]["tuning_from_cache"] = self.load.tuned.into();
        js_json(&out)
    }

    /// Speed, memory and load facts: `{promptTokens, generatedTokens, ttftMs, prefillTokensPerSecond,
    /// decodeTokensPerSecond, weightBytes, stateBytes (allocated), kvCacheBytes (filled by the context),
    /// recurrentBytes, contextTokens, maxContext, loadSeconds, downloadedBytes, loadPeakHostBytes (checkpoint bytes
    /// held at once while loading), largestTensorBytes, warnings, layers, contextMemory,
    /// stageSeconds}`. The generation figures are of the current or last generation; `layers` lists each layer's
    /// `{kind, attentionHeads, switchableHeads}`: heads with an attention map, softmax or the implicit attention of a
    /// recurrent layer, 0 for other mixers, and whether `ablate` can switch them off; `contextMemory` gives `{tokens, bytes}` of KV cache plus recurrent state from
    /// 256 to 128K tokens; `stageSeconds`, while profiling, the GPU time of the last forward by stage (embedding,
    /// each layer, head).
    pub fn stats(&self) -> JsValue {
        let s = &self.last;
        let memory = self.session.memory();
        let out = object(&[
            ("promptTokens", s.prompt_tokens as f64),
            ("generatedTokens", s.generated_tokens as f64),
            ("ttftMs", s.time_to_first_token * 1e3),
            ("prefillTokensPerSecond", s.prefill_rate()),
            ("decodeTokensPerSecond", s.decode_rate()),
            ("weightBytes", memory.weights as f64),
            ("stateBytes", memory.state as f64),
            ("kvCacheBytes", memory.kv_cache_live as f64),
            ("recurrentBytes", memory.recurrent as f64),
            ("contextTokens", self.session.position() as f64),
            ("maxContext", self.session.max_context() as f64),
            ("loadSeconds", self.load.seconds),
            ("downloadedBytes", self.load.downloaded_bytes as f64),
            ("loadPeakHostBytes", self.load.peak_host_bytes as f64),
            ("largestTensorBytes", self.load.largest_tensor_bytes as f64),
        ]);
        let warnings: js_sys::Array = self.load.warnings.iter().map(|w| JsValue::from_str(w)).collect();
        let _ = Reflect::set(&out, &"warnings".into(), &warnings);
        let _ = Reflect::set(&out, &"attentionPolicy".into(), &self.session.attention_policy().to_string().into());
        let tuning = js_json(&crate::tuning::to_json(&self.session.gpu().tuning)).unwrap_or(JsValue::NULL);
        let _ = Reflect::set(&tuning, &"fromCache".into(), &self.load.tuned.into());
        let _ = Reflect::set(&out, &"tuning".into(), &tuning);
        let routes: js_sys::Array = self
            .session
            .routes()
            .iter()
            .map(|r| {
                let route = object(&[("layer", r.layer as f64), ("entropy", r.entropy as f64)]);
                let _ = Reflect::set(&route, &"sparse".into(), &r.sparse.into());
                JsValue::from(route)
            })
            .collect();
        let _ = Reflect::set(&out, &"routes".into(), &routes);
        let spec = self.session.spec();
        let layers: js_sys::Array = spec
            .layers
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let layer = object(&[("attentionHeads", map_heads(spec, i) as f64)]);
                let _ = Reflect::set(&layer, &"kind".into(), &l.mixer.kind().into());
                let switchable = HeadLayout::of(spec, i, 0).is_ok();
                let _ = Reflect::set(&layer, &"switchableHeads".into(), &switchable.into());
                JsValue::from(layer)
            })
            .collect();
        let _ = Reflect::set(&out, &"layers".into(), &layers);
        let projection: js_sys::Array = [256usize, 1024, 4096, 16384, 32768, 65536, 131072]
            .into_iter()
            .map(|tokens| {
                let bytes = spec.context_bytes(tokens, ternlight_core::dtype::DType::F32);
                JsValue::from(object(&[("tokens", tokens as f64), ("bytes", bytes as f64)]))
            })
            .collect();
        let _ = Reflect::set(&out, &"contextMemory".into(), &projection);
        let stages = js_sys::Float64Array::from(&self.session.stage_times()[..]);
        let _ = Reflect::set(&out, &"stageSeconds".into(), &stages);
        out.into()
    }

    /// Prompt tokens per second of the last generation.
    #[wasm_bindgen(getter)]
    pub fn prefill_tokens_per_second(&self) -> f64 {
        self.last.prefill_rate()
    }

    /// Generated tokens per second of the last generation (decode steps).
    #[wasm_bindgen(getter)]
    pub fn decode_tokens_per_second(&self) -> f64 {
        self.last.decode_rate()
    }

    /// Releases the model's GPU memory; the engine cannot be used after.
    pub fn unload(self) {}
}

/// Whether the model at `source` (a base URL or hub id) has its weights in the browser cache from an earlier
/// load, so it opens without downloading them again (a single-file checkpoint; sharded ones report false).
#[wasm_bindgen]
pub async fn is_cached(source: String) -> bool {
    match model_base(&source) {
        Some(base) => remote::is_cached(&format!("{base}/model.safetensors")).await,
        None => false,
    }
}

impl Engine {
    fn ready(session: Session, tokenizer: Tokenizer, load: LoadReport) -> Engine {
        let stop_ids = session.spec().eos_token_ids.clone();
        let last = GenerationStats::default();
        Engine { session, tokenizer, stop_ids, current: None, context: Vec::new(), labels: Vec::new(), last, load }
    }
}
