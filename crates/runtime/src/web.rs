//! The browser API (wasm-bindgen): an [`Engine`] loads a model from the URLs of its files with `fetch` and
//! generates text on WebGPU. Works in a page or a Web Worker.

use crate::generate::{generate, GenerationStats};
use crate::{Session, SessionOptions};
use std::sync::Arc;
use ternlight_core::sampling::{Sampler, SamplingParams};
use ternlight_core::spec::ModelSpec;
use ternlight_core::tensors::SafetensorsCheckpoint;
use ternlight_core::tokenizer::Tokenizer;
use ternlight_gpu::Gpu;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;

/// The bytes at `url`, fetched from the page or the worker this runs in.
async fn fetch_bytes(url: &str) -> Result<Vec<u8>, JsError> {
    let global = js_sys::global();
    let promise = match global.dyn_ref::<web_sys::Window>() {
        Some(window) => window.fetch_with_str(url),
        None => global.unchecked_ref::<web_sys::WorkerGlobalScope>().fetch_with_str(url),
    };
    let failed = |e: JsValue| JsError::new(&format!("cannot fetch {url}: {e:?}"));
    let response: web_sys::Response = JsFuture::from(promise).await.map_err(failed)?.unchecked_into();
    if !response.ok() {
        return Err(JsError::new(&format!("cannot fetch {url}: HTTP status {}", response.status())));
    }
    let buffer = JsFuture::from(response.array_buffer().map_err(failed)?).await.map_err(failed)?;
    Ok(js_sys::Uint8Array::new(&buffer).to_vec())
}

fn js_error(e: impl std::fmt::Display) -> JsError {
    JsError::new(&e.to_string())
}

/// A model on the GPU with its tokenizer, ready to generate.
#[wasm_bindgen]
pub struct Engine {
    session: Session,
    tokenizer: Tokenizer,
    stop_ids: Vec<u32>,
    stats: GenerationStats,
}

#[wasm_bindgen]
impl Engine {
    /// Loads the model whose `config.json`, `model.safetensors` and `tokenizer.json` are at these URLs.
    pub async fn load(config_url: String, weights_url: String, tokenizer_url: String) -> Result<Engine, JsError> {
        let config = String::from_utf8(fetch_bytes(&config_url).await?).map_err(js_error)?;
        let spec = ModelSpec::from_config_json(&config).map_err(js_error)?;
        let tokenizer = Tokenizer::from_bytes(&fetch_bytes(&tokenizer_url).await?, None).map_err(js_error)?;
        let weights = fetch_bytes(&weights_url).await?;
        let checkpoint = SafetensorsCheckpoint::from_files(vec![(weights_url, weights)]).map_err(js_error)?;
        // Sessions share their device through an Arc (natively across threads); the browser has one thread.
        #[allow(clippy::arc_with_non_send_sync)]
        let gpu = Arc::new(Gpu::new().await.map_err(js_error)?);
        let stop_ids = spec.eos_token_ids.clone();
        let session =
            Session::new(gpu, spec, &checkpoint, &SessionOptions::default(), &mut |_| {}).map_err(js_error)?;
        Ok(Engine { session, tokenizer, stop_ids, stats: GenerationStats::default() })
    }

    /// Generates up to `max_tokens` after `prompt` (a fresh context) at `temperature` (0: greedy) and returns the
    /// new text.
    pub async fn generate(&mut self, prompt: String, max_tokens: usize, temperature: f32) -> Result<String, JsError> {
        let ids = self.tokenizer.encode(&prompt, true).map_err(js_error)?;
        if ids.is_empty() {
            return Err(JsError::new("the prompt has no tokens"));
        }
        self.session.reset();
        let mut sampler = Sampler::new(SamplingParams { temperature, ..Default::default() });
        let (out, stats) = generate(&mut self.session, &ids, &mut sampler, max_tokens, &self.stop_ids, |_| true)
            .await
            .map_err(js_error)?;
        self.stats = stats;
        self.tokenizer.decode(&out).map_err(js_error)
    }

    /// Prompt tokens per second of the last generation.
    #[wasm_bindgen(getter)]
    pub fn prefill_tokens_per_second(&self) -> f64 {
        self.stats.prefill_rate()
    }

    /// Generated tokens per second of the last generation (decode steps).
    #[wasm_bindgen(getter)]
    pub fn decode_tokens_per_second(&self) -> f64 {
        self.stats.decode_rate()
    }
}
