//! The CPU reference reproduces the transformers logits of every fixture, prefill and token by token.

use std::path::PathBuf;
use ternlight_core::oracle::{max_abs_diff, Oracle};
use ternlight_core::reference::model::ReferenceModel;
use ternlight_core::spec::ModelSpec;
use ternlight_core::tensors::SafetensorsCheckpoint;

/// A fixture's directory; `demo` is the shipped demo model, whose oracle comes from the PyTorch code that trained it.
fn fixture(arch: &str) -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    match arch {
        "demo" => root.join("models/demo"),
        _ => root.join("tests/fixtures").join(arch),
    }
}

fn check(arch: &str) {
    let dir = fixture(arch);
    let spec = ModelSpec::from_config_json(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let vocab = spec.vocab;
    let ck = SafetensorsCheckpoint::open_dir(&dir).unwrap();
    let oracle = Oracle::open(&dir).unwrap();
    let mut model = ReferenceModel::new(spec, &ck).unwrap();

    let logits = model.forward(&oracle.input_ids).unwrap();
    let d = max_abs_diff(&logits, &oracle.logits);
    assert!(d < 1e-3, "{arch} prefill: max abs diff {d}");

    model.reset();
    let t = oracle.input_ids.len();
    let mut stepped = model.forward(&oracle.input_ids[..1]).unwrap();
    for &id in &oracle.input_ids[1..] {
        stepped.extend(model.forward(&[id]).unwrap());
    }
    let d = max_abs_diff(&stepped, &oracle.logits);
    assert!(d < 1e-3, "{arch} token-by-token: max abs diff {d}");

    let n = oracle.gen_logits.len() / vocab;
    let mut gen = stepped[(t - 1) * vocab..].to_vec();
    for &id in &oracle.gen_ids[t..t + n - 1] {
        gen.extend(model.forward(&[id]).unwrap());
    }
    let d = max_abs_diff(&gen, &oracle.gen_logits);
    eprintln!("{arch}: {n} generated rows, max abs diff {d}");
    assert!(d < 1e-3, "{arch} generation: max abs diff {d}");
}

#[test]
fn llama_matches_transformers() {
    check("llama");
}

#[test]
fn qwen3_matches_transformers() {
    check("qwen3");
}

#[test]
fn gemma3_matches_transformers() {
    check("gemma3");
}

#[test]
fn fla_gated_deltanet_matches_fla() {
    check("gated_deltanet");
}

#[test]
fn fla_gated_deltanet_hybrid_matches_fla() {
    check("gated_deltanet_hybrid");
}

#[test]
fn qwen3_5_matches_transformers() {
    check("qwen3_5");
}

#[test]
fn fla_deltanet_matches_fla() {
    check("deltanet");
}

#[test]
fn fla_gla_matches_fla() {
    check("gla");
}

#[test]
fn fla_hgrn2_matches_fla() {
    check("hgrn2");
}

#[test]
fn lfm2_matches_transformers() {
    check("lfm2");
}

#[test]
fn fla_linear_attn_matches_fla() {
    check("linear_attn");
}

#[test]
fn qwen3_next_matches_transformers() {
    check("qwen3_next");
}

#[test]
fn minimax_matches_transformers() {
    check("minimax");
}

#[test]
fn olmo_hybrid_matches_transformers() {
    check("olmo_hybrid");
}

#[test]
fn fla_kda_matches_fla() {
    check("kda");
}

#[test]
fn kimi_linear_matches_transformers() {
    check("kimi_linear");
}

#[test]
fn falcon_h1_matches_transformers() {
    check("falcon_h1");
}

#[test]
fn fla_gsa_matches_fla() {
    check("gsa");
}

#[test]
fn bitnet_packed_matches_transformers() {
    check("bitnet_packed");
}

#[test]
fn bitnet_online_matches_transformers() {
    check("bitnet_online");
}

#[test]
fn fla_bitnet_matches_fla() {
    check("fla_bitnet");
}

#[test]
fn bitnet_hgf_matches_its_numpy_generator() {
    check("bitnet_hgf");
}

/// The shipped demo model (Qwen3.5 layout, ternary projections with HGF corrections, a gated q_proj whose ternary
/// rows are split between query and gate) against the PyTorch model that trained it.
#[test]
fn demo_model_matches_its_training_framework() {
    check("demo");
}

#[test]
fn rwkv7_matches_fla() {
    check("rwkv7");
}
