//! llama.cpp-layout GGUF files load as the HF checkpoints they came from. The files are written here the way
//! llama.cpp's converters lay them out (its tensor names and `{arch}.*` metadata, llama's q/k rows permuted for
//! its pairwise RoPE, ternary weights as TQ blocks holding the tensor's scale), from the fixtures. The llama file
//! must match the fixture's transformers logits, and its `tokenizer.ggml.*` vocabulary encode as the fixture's
//! tokenizer; the BitNet file must equal its checkpoint exactly once the scales
//! are rounded to f16 as TQ blocks store them (that rounding alone moves these logits by a few 1e-3 through int8
//! rounding flips).

use std::collections::HashMap;
use std::path::PathBuf;
use ternlight_core::dtype::DType;
use ternlight_core::gguf::checkpoint::GgufCheckpoint;
use ternlight_core::gguf::codec::{encode_tq1_0, encode_tq2_0};
use ternlight_core::gguf::{native, GgmlType, GgufWriter, Value};
use ternlight_core::oracle::{max_abs_diff, Oracle};
use ternlight_core::reference::model::ReferenceModel;
use ternlight_core::reference::ternary::unpack_rows;
use ternlight_core::spec::ModelSpec;
use ternlight_core::tensors::{SafetensorsCheckpoint, TensorInfo, TensorSource};
use ternlight_core::tokenizer::Tokenizer;

const PARTS: &[&str] = &[
    "attn_norm.weight",
    "attn_q.weight",
    "attn_k.weight",
    "attn_v.weight",
    "attn_output.weight",
    "attn_sub_norm.weight",
    "ffn_norm.weight",
    "ffn_gate.weight",
    "ffn_up.weight",
    "ffn_down.weight",
    "ffn_sub_norm.weight",
];

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures").join(name)
}

/// HF name → llama.cpp name for a model of `layers` layers.
fn gguf_names(layers: usize) -> HashMap<String, String> {
    let top = ["token_embd.weight", "output_norm.weight", "output.weight"].map(String::from);
    let blocks = (0..layers).flat_map(|i| PARTS.iter().map(move |p| format!("blk.{i}.{p}")));
    top.into_iter().chain(blocks).map(|g| (native::hf_name(&g).unwrap(), g)).collect()
}

/// llama.cpp's q/k permutation: within each head, HF row `j * half + i` goes to file row `2 i + j`.
fn permute_rows(bytes: &[u8], heads: usize, rows: usize) -> Vec<u8> {
    let (row_bytes, half) = (bytes.len() / rows, rows / heads / 2);
    let mut out = vec![0u8; bytes.len()];
    for h in 0..heads {
        for i in 0..half {
            for j in 0..2 {
                let (file, hf) = (h * 2 * half + 2 * i + j, h * 2 * half + j * half + i);
                out[file * row_bytes..(file + 1) * row_bytes]
                    .copy_from_slice(&bytes[hf * row_bytes..(hf + 1) * row_bytes]);
            }
        }
    }
    out
}

/// bitnet.cpp's I2_S (x86 layout): per 128 weights 32 bytes, byte j holding weights j, 32 + j, 64 + j, 96 + j in
/// bits 7-6, 5-4, 3-2, 1-0 as code + 1; then the f32 scale in a 32-byte tail.
fn encode_i2_s(codes: &[i8], scale: f32) -> Vec<u8> {
    let blocks = codes.len().div_ceil(128);
    let mut out = vec![0u8; blocks * 32 + 32];
    for (i, &c) in codes.iter().enumerate() {
        let (block, within) = (i / 128, i % 128);
        out[block * 32 + within % 32] |= ((c + 1) as u8) << (6 - 2 * (within / 32));
    }
    out[blocks * 32..blocks * 32 + 4].copy_from_slice(&scale.to_le_bytes());
    out
}

/// Writes `arch` metadata for the fixture's config.
fn metadata(w: &mut GgufWriter, arch: &str, cfg: &serde_json::Value) {
    let n = |k: &str| Value::Uint(cfg[k].as_u64().unwrap());
    w.meta("general.architecture", Value::Str(arch.into()));
    for (key, field) in [
        ("block_count", "num_hidden_layers"),
        ("embedding_length", "hidden_size"),
        ("feed_forward_length", "intermediate_size"),
        ("attention.head_count", "num_attention_heads"),
        ("attention.head_count_kv", "num_key_value_heads"),
        ("context_length", "max_position_embeddings"),
    ] {
        w.meta(&format!("{arch}.{key}"), n(field));
    }
    let eps = cfg["rms_norm_eps"].as_f64().unwrap();
    w.meta(&format!("{arch}.attention.layer_norm_rms_epsilon"), Value::Float(eps));
    let theta = cfg["rope_parameters"]["rope_theta"].as_f64().unwrap();
    w.meta(&format!("{arch}.rope.freq_base"), Value::Float(theta));
    w.meta("tokenizer.ggml.model", Value::Str("gpt2".into()));
}

/// Logits of the GGUF file's model for the fixture's prompt, and the fixture's oracle.
fn gguf_logits(arch: &str, bytes: Vec<u8>) -> (Vec<f32>, Oracle) {
    let oracle = Oracle::open(&fixture(arch)).unwrap();
    let gguf = GgufCheckpoint::from_bytes(bytes).unwrap();
    let spec = ModelSpec::from_config_json(&gguf.config_json().unwrap()).unwrap();
    let mut model = ReferenceModel::new(spec, &gguf).unwrap();
    (model.forward(&oracle.input_ids).unwrap(), oracle)
}

/// The fixture's checkpoint with some tensors replaced by f32 vectors.
struct Patched<'a> {
    inner: &'a SafetensorsCheckpoint,
    f32s: HashMap<String, Vec<u8>>,
}

impl TensorSource for Patched<'_> {
    fn info(&self, name: &str) -> ternlight_core::Result<Option<TensorInfo>> {
        match self.f32s.get(name) {
            Some(b) => Ok(Some(TensorInfo { dtype: DType::F32, shape: vec![b.len() / 4] })),
            None => self.inner.info(name),
        }
    }

    fn bytes(&self, name: &str) -> ternlight_core::Result<std::borrow::Cow<'_, [u8]>> {
        match self.f32s.get(name) {
            Some(b) => Ok(std::borrow::Cow::Borrowed(b)),
            None => self.inner.bytes(name),
        }
    }
}

/// A fixture's config, spec, checkpoint and its tensors' llama.cpp names.
fn open_fixture(name: &str) -> (serde_json::Value, ModelSpec, SafetensorsCheckpoint, HashMap<String, String>) {
    let dir = fixture(name);
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let spec = ModelSpec::from_config_json(&cfg.to_string()).unwrap();
    let names = gguf_names(spec.layers.len());
    (cfg, spec, SafetensorsCheckpoint::open_dir(&dir).unwrap(), names)
}

#[test]
fn llama_architecture_gguf_matches_transformers() {
    let (cfg, spec, ck, names) = open_fixture("llama");
    let mut w = GgufWriter::new();
    metadata(&mut w, "llama", &cfg);
    w.meta("llama.attention.key_length", Value::Uint(16));
    for decl in spec.tensors() {
        let gguf = &names[&decl.name];
        let mut bytes = ck.bytes(&decl.name).unwrap().to_vec();
        let heads = match gguf.rsplit('.').nth(1) {
            Some("attn_q") => Some(cfg["num_attention_heads"].as_u64().unwrap() as usize),
            Some("attn_k") => Some(cfg["num_key_value_heads"].as_u64().unwrap() as usize),
            _ => None,
        };
        if let Some(h) = heads {
            bytes = permute_rows(&bytes, h, decl.shape[0]);
        }
        w.tensor(gguf, &decl.shape, GgmlType::BF16, bytes);
    }
    // The fixture's byte-level vocabulary as llama.cpp writes it (no merges: every byte is its own token).
    let json = std::fs::read(fixture("llama").join("tokenizer.json")).unwrap();
    let hub: serde_json::Value = serde_json::from_slice(&json).unwrap();
    let mut tokens = vec![String::new(); 256];
    for (token, id) in hub["model"]["vocab"].as_object().unwrap() {
        tokens[id.as_u64().unwrap() as usize] = token.clone();
    }
    w.meta("tokenizer.ggml.tokens", Value::Array(tokens.into_iter().map(Value::Str).collect()));
    w.meta("tokenizer.ggml.merges", Value::Array(Vec::new()));
    let bytes = w.to_bytes();
    let converted = GgufCheckpoint::from_bytes(bytes.clone()).unwrap().tokenizer().unwrap().unwrap();
    let original = Tokenizer::from_bytes(&json, None).unwrap();
    for text in ["Hello, wörld!", "  two  spaces\nand a line"] {
        let ids = converted.encode(text, true).unwrap();
        assert_eq!(ids, original.encode(text, true).unwrap(), "{text:?}");
        assert_eq!(converted.decode(&ids).unwrap(), text);
    }
    let (logits, oracle) = gguf_logits("llama", bytes);
    let d = max_abs_diff(&logits, &oracle.logits);
    assert!(d < 1e-3, "llama from a llama.cpp-layout GGUF: max abs diff {d}");
}

#[test]
fn bitnet_architecture_gguf_with_tq_and_i2_s_tensors_matches_its_checkpoint() {
    let (cfg, spec, ck, names) = open_fixture("bitnet_packed");
    let mut w = GgufWriter::new();
    metadata(&mut w, "bitnet-b1.58", &cfg);
    // llama.cpp keeps each block's scale in f16: the same checkpoint with its scales rounded that way.
    let mut rounded = Patched { inner: &ck, f32s: HashMap::new() };
    for (i, decl) in spec.tensors().iter().enumerate() {
        if decl.name.ends_with("weight_scale") {
            continue;
        }
        let gguf = &names[&decl.name];
        let bytes = ck.bytes(&decl.name).unwrap().to_vec();
        if !decl.packed {
            w.tensor(gguf, &decl.shape, GgmlType::BF16, bytes);
            continue;
        }
        // A llama.cpp ternary tensor: codes with the real weight's magnitude (1 / weight_scale) as block scale.
        let (rows, cols) = (4 * decl.shape[0], decl.shape[1]);
        let codes: Vec<i8> = unpack_rows(&bytes, rows, cols).iter().map(|&c| c as i8).collect();
        let scale = 1.0 / ck.f32(&format!("{}_scale", decl.name)).unwrap()[0];
        let (ty, data, stored) = match i % 3 {
            0 => (GgmlType::TQ1_0, encode_tq1_0(&codes, scale), half::f16::from_f32(scale).to_f32()),
            1 => (GgmlType::TQ2_0, encode_tq2_0(&codes, scale), half::f16::from_f32(scale).to_f32()),
            _ => (GgmlType::I2S, encode_i2_s(&codes, scale), scale),
        };
        rounded.f32s.insert(format!("{}_scale", decl.name), (1.0 / stored).to_le_bytes().to_vec());
        w.tensor(gguf, &[rows, cols], ty, data);
    }
    let (logits, oracle) = gguf_logits("bitnet_packed", w.to_bytes());
    let want = ReferenceModel::new(spec, &rounded).unwrap().forward(&oracle.input_ids).unwrap();
    let (d, from_hf) = (max_abs_diff(&logits, &want), max_abs_diff(&logits, &oracle.logits));
    eprintln!("bitnet from TQ and I2_S tensors: {d} from the checkpoint with f16 scales, {from_hf} from transformers");
    assert!(d < 1e-5, "bitnet from a llama.cpp-layout GGUF: max abs diff {d}");
}

#[test]
fn foreign_layouts_are_refused_by_name() {
    let refused = |w: &GgufWriter| GgufCheckpoint::from_bytes(w.to_bytes()).err().unwrap().to_string();
    let mut w = GgufWriter::new();
    w.meta("general.architecture", Value::Str("mamba".into()));
    assert!(refused(&w).contains("mamba"), "{}", refused(&w));
    let mut w = GgufWriter::new();
    w.meta("general.architecture", Value::Str("llama".into()));
    w.tensor("blk.0.attn_q.scale", &[1], GgmlType::F32, vec![0; 4]);
    assert!(refused(&w).contains("blk.0.attn_q.scale"), "{}", refused(&w));
}
