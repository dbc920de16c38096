//! The runtime in a browser: fixture models on WebGPU (in CI, headless Chromium's SwiftShader adapter) match their
//! reference logits on the prefill and the token-by-token paths. Runs under `wasm-bindgen-test-runner`
//! (`scripts/test.sh`); natively this file is empty.
#![cfg(target_arch = "wasm32")]

use std::sync::Arc;
use ternlight_core::oracle::{max_abs_diff, Oracle};
use ternlight_core::spec::ModelSpec;
use ternlight_core::tensors::SafetensorsCheckpoint;
use ternlight_gpu::Gpu;
use ternlight_runtime::{Session, SessionOptions};
use wasm_bindgen_test::{wasm_bindgen_test, wasm_bindgen_test_configure};

wasm_bindgen_test_configure!(run_in_browser);

macro_rules! fixture {
    ($name:literal) => {
        (
            include_str!(concat!("../../../tests/fixtures/", $name, "/config.json")),
            include_bytes!(concat!("../../../tests/fixtures/", $name, "/model.safetensors")).as_slice(),
            include_bytes!(concat!("../../../tests/fixtures/", $name, "/oracle.safetensors")).as_slice(),
        )
    };
}

async fn check(name: &str, (config, model, oracle): (&str, &[u8], &[u8])) {
    // Sessions share their device through an Arc (natively across threads); the browser has one thread.
    #[allow(clippy::arc_with_non_send_sync)]
    let gpu = Arc::new(Gpu::new().await.expect("a WebGPU adapter"));
    let spec = ModelSpec::from_config_json(config).unwrap();
    let ck = SafetensorsCheckpoint::from_files(vec![("model.safetensors".into(), model.to_vec())]).unwrap();
    let oracle = Oracle::from_bytes("oracle.safetensors", oracle.to_vec()).unwrap();
    let mut s = Session::new(gpu, spec, &ck, &SessionOptions::default(), &mut |_| {}).unwrap();
    let t = oracle.input_ids.len();
    let all: Vec<usize> = (0..t).collect();
    let logits = s.prefill(&oracle.input_ids, &all).await.unwrap();
    let d = max_abs_diff(&logits, &oracle.logits);
    assert!(d < 1e-3, "{name} prefill on WebGPU: max abs diff {d}");
    s.reset();
    let mut stepped = s.prefill(&oracle.input_ids[..1], &[0]).await.unwrap();
    for &id in &oracle.input_ids[1..] {
        stepped.extend(s.step(id).await.unwrap());
    }
    let d = max_abs_diff(&stepped, &oracle.logits);
    assert!(d < 1e-3, "{name} token by token on WebGPU: max abs diff {d}");
}

#[wasm_bindgen_test]
async fn llama_matches_transformers_on_webgpu() {
    check("llama", fixture!("llama")).await;
}

#[wasm_bindgen_test]
async fn gated_deltanet_matches_fla_on_webgpu() {
    check("gated_deltanet", fixture!("gated_deltanet")).await;
}

#[wasm_bindgen_test]
async fn rwkv7_matches_fla_on_webgpu() {
    check("rwkv7", fixture!("rwkv7")).await;
}

#[wasm_bindgen_test]
async fn ternary_bitnet_matches_transformers_on_webgpu() {
    check("bitnet_packed", fixture!("bitnet_packed")).await;
}

/// A blob URL holding `bytes`, standing in for a file on a server.
fn blob_url(bytes: &[u8]) -> String {
    let parts = js_sys::Array::of1(&js_sys::Uint8Array::from(bytes));
    let blob = web_sys::Blob::new_with_u8_array_sequence(&parts).unwrap();
    web_sys::Url::create_object_url_with_blob(&blob).unwrap()
}

/// The browser API end to end: `Engine.load` fetches the model's files, `generate` returns the greedy text the
/// session's own generation loop gives for the same prompt.
#[wasm_bindgen_test]
async fn engine_loads_by_fetch_and_generates_the_greedy_text() {
    use ternlight_core::sampling::{Sampler, SamplingParams};
    use ternlight_core::tokenizer::Tokenizer;
    use ternlight_runtime::web::Engine;
    let (config, model, _) = fixture!("llama");
    let tokenizer_json = include_bytes!("../../../tests/fixtures/llama/tokenizer.json");
    let urls = [blob_url(config.as_bytes()), blob_url(model), blob_url(tokenizer_json)];
    let mut engine = Engine::load_files(urls[0].clone(), urls[1].clone(), urls[2].clone(), None).await.unwrap();
    let text = engine.generate("Hello from the browser".into(), 6, 0.0).await.unwrap();

    #[allow(clippy::arc_with_non_send_sync)]
    let gpu = Arc::new(Gpu::new().await.unwrap());
    let spec = ModelSpec::from_config_json(config).unwrap();
    let stop = spec.eos_token_ids.clone();
    let ck = SafetensorsCheckpoint::from_files(vec![("model.safetensors".into(), model.to_vec())]).unwrap();
    let mut s = Session::new(gpu, spec, &ck, &SessionOptions::default(), &mut |_| {}).unwrap();
    let tokenizer = Tokenizer::from_bytes(tokenizer_json, None).unwrap();
    let ids = tokenizer.encode("Hello from the browser", true).unwrap();
    let mut sampler = Sampler::new(SamplingParams::default());
    let (want, _) =
        ternlight_runtime::generate::generate(&mut s, &ids, &mut sampler, 6, &stop, |_| true).await.unwrap();
    assert!(!want.is_empty());
    assert_eq!(text, tokenizer.decode(&want).unwrap());
    assert!(engine.decode_tokens_per_second() > 0.0 || want.len() == 1);
}

/// A device destroyed mid-generation (as a browser does when it reclaims the GPU) fails the next step with the
/// loss named, and a new device loads the model again and matches the reference.
#[wasm_bindgen_test]
async fn a_lost_device_is_reported_and_a_new_one_runs_the_model() {
    let (config, model, oracle_bytes) = fixture!("llama");
    let oracle = Oracle::from_bytes("oracle.safetensors", oracle_bytes.to_vec()).unwrap();
    let ids = &oracle.input_ids;
    #[allow(clippy::arc_with_non_send_sync)]
    let gpu = Arc::new(Gpu::new().await.expect("a WebGPU adapter"));
    let spec = ModelSpec::from_config_json(config).unwrap();
    let ck = SafetensorsCheckpoint::from_files(vec![("model.safetensors".into(), model.to_vec())]).unwrap();
    let mut s = Session::new(gpu.clone(), spec, &ck, &SessionOptions::default(), &mut |_| {}).unwrap();
    s.prefill(&ids[..4], &[3]).await.unwrap();
    gpu.device.destroy();
    let e = s.step(ids[4]).await.unwrap_err().to_string();
    assert!(e.contains("device was lost") && gpu.is_lost(), "{e}");
    drop(s);
    drop(gpu);
    check("llama after a lost device", fixture!("llama")).await;
}

/// `tuneDevice` times every candidate on this adapter and stores the fastest; an engine loaded afterwards starts
/// with those sizes and says so in its stats.
#[wasm_bindgen_test]
async fn tuned_sizes_are_stored_and_used_by_later_engines() {
    use js_sys::Reflect;
    use wasm_bindgen::JsValue;
    let get = |v: &JsValue, k: &str| Reflect::get(v, &k.into()).unwrap();
    let gpu = Gpu::new().await.unwrap();
    let candidates = ternlight_gpu::tune::candidates(&gpu.tuning, gpu.info.packed_dot).len();
    drop(gpu);
    let report = ternlight_runtime::web::tune_device(1).await.unwrap();
    assert_eq!(get(&report, "saved"), JsValue::TRUE);
    // Every candidate, then decode attention split and unsplit at shorter contexts (where splitting starts).
    let trials = js_sys::Array::from(&get(&report, "trials"));
    let split_from = trials.iter().filter(|t| get(t, "kernel") == "split_from").count();
    assert!(split_from > 0 && trials.length() as usize == candidates + split_from);
    let (config, model, _) = fixture!("llama");
    let tokenizer_json = include_bytes!("../../../tests/fixtures/llama/tokenizer.json");
    let urls = [blob_url(config.as_bytes()), blob_url(model), blob_url(tokenizer_json)];
    let engine = ternlight_runtime::web::Engine::load_files(urls[0].clone(), urls[1].clone(), urls[2].clone(), None)
        .await
        .unwrap();
    let (tuned, used) = (get(&report, "tuning"), get(&engine.stats(), "tuning"));
    assert_eq!(get(&used, "fromCache"), JsValue::TRUE);
    for size in ["wg", "nr", "tm", "tn", "wg_x", "wg_y"] {
        assert_eq!(get(&used, size), get(&tuned, size), "{size}");
    }
    // Later tests start from the defaults again.
    let caches = get(&js_sys::global(), "caches");
    let delete: js_sys::Function = get(&caches, "delete").into();
    let deleted = delete.call1(&caches, &"ternlight-v1".into()).unwrap();
    wasm_bindgen_futures::JsFuture::from(js_sys::Promise::from(deleted)).await.unwrap();
}
