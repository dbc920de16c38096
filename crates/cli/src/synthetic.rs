//! Random-weight models with the shapes of real checkpoints, built in memory for `ternlight bench --synthetic`:
//! speed depends on shapes and dtypes, not on trained values. Each starts from a fixture's `config.json` (so the
//! same parser reads it) with the sizes of the public checkpoint's config written over it.

use anyhow::{anyhow, Result};
use serde_json::{json, Value};
use std::borrow::Cow;
use std::collections::HashMap;
use ternlight_core::dtype::DType;
use ternlight_core::spec::ModelSpec;
use ternlight_core::tensors::{TensorInfo, TensorSource};

/// The models `--synthetic` knows, with the fixture each starts from and the public config's sizes.
fn recipe(name: &str) -> Option<(&'static str, Value)> {
    let pattern = |unit: &[&str], times: usize| json!(unit.repeat(times));
    Some(match name {
        "smollm2-135m" => (
            include_str!("../../../tests/fixtures/llama/config.json"),
            json!({"hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30, "num_attention_heads": 9,
                   "num_key_value_heads": 3, "head_dim": 64, "vocab_size": 49152, "max_position_embeddings": 8192,
                   "rms_norm_eps": 1e-5, "tie_word_embeddings": true,
                   "rope_parameters": {"rope_theta": 100000.0, "rope_type": "default"}}),
        ),
        "gemma3-270m" => (
            include_str!("../../../tests/fixtures/gemma3/config.json"),
            json!({"hidden_size": 640, "intermediate_size": 2048, "num_hidden_layers": 18, "num_attention_heads": 4,
                   "num_key_value_heads": 1, "head_dim": 256, "query_pre_attn_scalar": 256, "vocab_size": 262144,
                   "sliding_window": 512, "max_position_embeddings": 32768,
                   "layer_types": pattern(&["sliding_attention"; 5].iter().copied().chain(["full_attention"]).collect::<Vec<_>>(), 3)}),
        ),
        "qwen3.5-0.8b" => (
            include_str!("../../../tests/fixtures/qwen3_5/config.json"),
            json!({"hidden_size": 1024, "intermediate_size": 3584, "num_hidden_layers": 24, "num_attention_heads": 8,
                   "num_key_value_heads": 2, "head_dim": 256, "linear_num_key_heads": 16, "linear_num_value_heads": 16,
                   "linear_key_head_dim": 128, "linear_value_head_dim": 128, "vocab_size": 248320,
                   "max_position_embeddings": 262144, "tie_word_embeddings": true,
                   "layer_types": pattern(&["linear_attention", "linear_attention", "linear_attention", "full_attention"], 6),
                   "rope_parameters": {"partial_rotary_factor": 0.25, "rope_theta": 10000000.0, "rope_type": "default"}}),
        ),
        // microsoft/bitnet-b1.58-2B-4T: bf16 masters ternarised on upload (autobitlinear, online), so the resident
        // weights are the packed ternary ones the published checkpoint loads to.
        "bitnet-b1.58-2b4t" => (
            include_str!("../../../tests/fixtures/bitnet_online/config.json"),
            json!({"hidden_size": 2560, "intermediate_size": 6912, "num_hidden_layers": 30, "num_attention_heads": 20,
                   "num_key_value_heads": 5, "vocab_size": 128256, "max_position_embeddings": 4096}),
        ),
        // fla's gated_deltanet_340M sizes (21 layers, 6 heads of 256, values expanded 2x, MLP 4x rounded as fla
        // does to 2816, vocab 32000); fla's config has no attention layers, so the hybrid's schedule is ours: a
        // sliding-window attention layer (16 heads of 64, window 2048) in every fifth place.
        "fla-gdn-340m-hybrid" => (
            include_str!("../../../tests/fixtures/gated_deltanet_hybrid/config.json"),
            json!({"hidden_size": 1024, "num_hidden_layers": 21, "num_heads": 6, "head_dim": 256, "expand_v": 2,
                   "intermediate_size": 2816, "vocab_size": 32000, "max_position_embeddings": 8192,
                   "attn": {"layers": [4, 9, 14, 19], "num_heads": 16, "num_kv_heads": 16, "qkv_bias": false,
                            "rope_theta": 10000.0, "window_size": 2048}}),
        ),
        // fla's gla_340M training config (flame): 24 layers, 4 heads, keys at half the width (128 per head), values
        // at the full width (256), the MLP at fla's rounding of 4x (2816), tied embeddings, vocab 32000.
        "fla-gla-340m" => (
            include_str!("../../../tests/fixtures/gla/config.json"),
            json!({"hidden_size": 1024, "num_hidden_layers": 24, "num_heads": 4, "expand_k": 0.5, "expand_v": 1,
                   "intermediate_size": 2816, "vocab_size": 32000, "max_position_embeddings": 8192,
                   "tie_word_embeddings": true}),
        ),
        // RWKV-7 World 0.4B: 24 layers of width 1024 in heads of 64, FFN 4x, vocab 65536; the low-rank sizes follow
        // RWKV-LM's rules for that width (decay and a 64, value 32, gate 160).
        "rwkv7-0.4b" => (
            include_str!("../../../tests/fixtures/rwkv7/config.json"),
            json!({"hidden_size": 1024, "num_hidden_layers": 24, "head_dim": 64, "intermediate_size": 4096,
                   "vocab_size": 65536, "decay_low_rank_dim": 64, "a_low_rank_dim": 64, "v_low_rank_dim": 32,
                   "gate_low_rank_dim": 160, "value_dim": 1024, "max_position_embeddings": 8192}),
        ),
        _ => return None,
    })
}

/// Names `--synthetic` accepts.
pub const NAMES: &[&str] = &[
    "smollm2-135m",
    "gemma3-270m",
    "qwen3.5-0.8b",
    "bitnet-b1.58-2b4t",
    "fla-gdn-340m-hybrid",
    "fla-gla-340m",
    "rwkv7-0.4b",
];

/// The spec of synthetic model `name` and a source of bf16 random weights for it.
pub fn open(name: &str) -> Result<(ModelSpec, Synthetic)> {
    let (base, sizes) =
        recipe(name).ok_or_else(|| anyhow!("unknown synthetic model `{name}` (known: {})", NAMES.join(", ")))?;
    let mut config: Value = serde_json::from_str(base)?;
    for (key, value) in sizes.as_object().expect("sizes are an object") {
        config[key] = value.clone();
    }
    let spec = ModelSpec::from_config(&config)?;
    let shapes = spec.tensors().into_iter().map(|d| (d.name, d.shape)).collect();
    Ok((spec, Synthetic { shapes }))
}

/// bf16 weights drawn from a fixed generator per tensor: small values, norm weights 1.
pub struct Synthetic {
    shapes: HashMap<String, Vec<usize>>,
}

impl TensorSource for Synthetic {
    fn info(&self, name: &str) -> ternlight_core::Result<Option<TensorInfo>> {
        Ok(self.shapes.get(name).map(|shape| TensorInfo { dtype: DType::BF16, shape: shape.clone() }))
    }

    fn bytes(&self, name: &str) -> ternlight_core::Result<Cow<'_, [u8]>> {
        let shape =
            self.shapes.get(name).ok_or_else(|| ternlight_core::CoreError::MissingTensor { name: name.into() })?;
        let n: usize = shape.iter().product();
        let norm = name.contains("norm");
        let mut state =
            name.bytes().fold(0x9e37_79b9_7f4a_7c15u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3));
        let mut out = Vec::with_capacity(2 * n);
        for _ in 0..n {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let x = if norm { 1.0 } else { ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.04 };
            out.extend_from_slice(&((x.to_bits() >> 16) as u16).to_le_bytes());
        }
        Ok(Cow::Owned(out))
    }

    fn byte_len(&self, name: &str) -> ternlight_core::Result<usize> {
        let shape =
            self.shapes.get(name).ok_or_else(|| ternlight_core::CoreError::MissingTensor { name: name.into() })?;
        Ok(2 * shape.iter().product::<usize>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parameters(spec: &ModelSpec) -> usize {
        spec.tensors().iter().map(|d| d.shape.iter().product::<usize>()).sum()
    }

    #[test]
    fn synthetic_models_have_the_published_sizes() {
        let (smol, _) = open("smollm2-135m").unwrap();
        assert_eq!(parameters(&smol), 134_515_008, "SmolLM2-135M's published parameter count");
        let (gemma, _) = open("gemma3-270m").unwrap();
        assert_eq!(parameters(&gemma), 268_098_176, "Gemma 3 270M's published parameter count");
        let (qwen, source) = open("qwen3.5-0.8b").unwrap();
        let kinds: Vec<String> = qwen.layers.iter().map(|l| l.mixer.kind()).collect();
        assert_eq!(kinds.iter().filter(|k| k.starts_with("gated_deltanet")).count(), 18, "{kinds:?}");
        let norm = qwen.tensors().into_iter().find(|d| d.name.contains("norm")).unwrap();
        let info = source.info(&norm.name).unwrap().unwrap();
        assert_eq!((info.dtype, &info.shape), (DType::BF16, &norm.shape));
        let bytes = source.bytes(&norm.name).unwrap();
        assert_eq!(bytes.len(), source.byte_len(&norm.name).unwrap());
        assert_eq!(&bytes[..2], &0x3f80u16.to_le_bytes(), "norm weights are 1");
        let (bitnet, _) = open("bitnet-b1.58-2b4t").unwrap();
        assert_eq!(bitnet.layers.len(), 30);
        let ternary: usize =
            bitnet.layers.iter().map(|l| l.matrices().iter().filter(|m| m.ternary.is_some()).count()).sum();
        assert_eq!(ternary, 30 * 7, "every projection of every layer is ternary");
        let (gdn, _) = open("fla-gdn-340m-hybrid").unwrap();
        let kinds: Vec<String> = gdn.layers.iter().map(|l| l.mixer.kind()).collect();
        assert_eq!(kinds.iter().filter(|k| k.starts_with("gated_deltanet")).count(), 17, "{kinds:?}");
        let (gla, _) = open("fla-gla-340m").unwrap();
        let kinds: Vec<String> = gla.layers.iter().map(|l| l.mixer.kind()).collect();
        assert_eq!(kinds.iter().filter(|k| k.starts_with("gla")).count(), 24, "{kinds:?}");
        let (rwkv, _) = open("rwkv7-0.4b").unwrap();
        let kinds: Vec<String> = rwkv.layers.iter().map(|l| l.mixer.kind()).collect();
        assert_eq!(kinds.iter().filter(|k| k.starts_with("rwkv7")).count(), 24, "{kinds:?}");
        let Err(e) = open("gpt-5") else { panic!("an unknown name opened") };
        assert!(e.to_string().contains("smollm2-135m"), "{e}");
    }
}
