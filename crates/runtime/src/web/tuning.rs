//! Kernel sizes per WebGPU adapter in the browser: [`tune_device`] (`tuneDevice` in JavaScript) times the candidates
//! ([`ternlight_gpu::tune::autotune`]) and keeps the fastest as a record in Cache Storage (there in pages and in
//! workers alike); every later engine on that adapter starts with them ([`stored`]).

use super::{cache, js_error, js_json};
use crate::tuning::{adapter_key, from_json, to_json, trials_json};
use ternlight_gpu::device::DeviceInfo;
use ternlight_gpu::kernels::Tuning;
use ternlight_gpu::Gpu;
use wasm_bindgen::prelude::*;

/// The tuning stored for `info`'s adapter, if there is a valid one.
pub async fn stored(info: &DeviceInfo) -> Option<Tuning> {
    let text = cache::record("tuning", &adapter_key(info)).await?;
    from_json(&serde_json::from_str(&text).ok()?)
}

/// Times every candidate kernel size on this browser's WebGPU adapter (`reps` dispatches of a 2048 x 2048 bf16
/// layer each, after a warm-up; seconds on a GPU, minutes on a CPU adapter) and keeps the fastest in Cache Storage,
/// so engines loaded afterwards on this adapter use them (`stats().tuning`). Returns `{adapter, tuning, saved,
/// trials: [{kernel, tuning, ms}]}`; `saved` is false where storage is unavailable or full.
#[wasm_bindgen(js_name = tuneDevice)]
pub async fn tune_device(reps: u32) -> Result<JsValue, JsValue> {
    let mut gpu = Gpu::new().await.map_err(js_error)?;
    let (best, trials) = ternlight_gpu::tune::autotune(&mut gpu, reps.max(1) as usize).await.map_err(js_error)?;
    let sizes = to_json(&best);
    let saved = cache::set_record("tuning", &adapter_key(&gpu.info), &sizes.to_string()).await;
    js_json(
        &serde_json::json!({ "adapter": gpu.info.name, "tuning": sizes, "saved": saved, "trials": trials_json(&trials) }),
    )
}
