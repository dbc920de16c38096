//! `ternlight inspect`: what a model is and what it needs, without touching the GPU.

use crate::model_dir::{parse_policy, ModelDir};
use anyhow::Result;
use serde_json::json;
use std::collections::BTreeMap;
use std::path::PathBuf;
use ternlight_core::dtype::DType;
use ternlight_core::spec::{AttentionPolicy, MlpSpec};
use ternlight_core::tensors::check_against_spec;

#[derive(clap::Args)]
pub struct Args {
    /// Model directory.
    #[arg(long)]
    model: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    /// Describe the model under this attention policy (memory needs included; see `ternlight run --help`).
    #[arg(long, default_value = "full", value_parser = parse_policy)]
    attention_policy: AttentionPolicy,
}

pub fn run(args: Args) -> Result<()> {
    let model = ModelDir::open(&args.model)?;
    check_against_spec(&model.spec, model.checkpoint.source())?;
    let spec = &args.attention_policy.apply(&model.spec)?;
    let mut by_dtype: BTreeMap<String, u64> = BTreeMap::new();
    let mut largest = (String::new(), 0u64);
    for decl in spec.tensors() {
        let bytes = model.checkpoint.source().byte_len(&decl.name)? as u64;
        let info = model.checkpoint.source().info(&decl.name)?.expect("checked above");
        *by_dtype.entry(info.dtype.to_string()).or_default() += bytes;
        if bytes > largest.1 {
            largest = (decl.name.clone(), bytes);
        }
    }
    // Bits each weight occupies on the GPU, by class: ternary layers keep 2-bit codes whatever their file dtype.
    let ternary: Vec<&str> = spec
        .layers
        .iter()
        .flat_map(|l| l.matrices())
        .filter(|p| p.ternary.is_some())
        .map(|p| p.weight.as_str())
        .collect();
    let mut resident: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for decl in spec.tensors() {
        let info = model.checkpoint.source().info(&decl.name)?.expect("checked above");
        let (class, bits) = if ternary.contains(&decl.name.as_str()) {
            ("ternary (2-bit codes)".to_string(), 2)
        } else {
            (format!("{} (as stored)", info.dtype), 8 * info.dtype.size() as u64)
        };
        let weights: u64 = if decl.packed {
            4 * decl.shape.iter().product::<usize>() as u64
        } else {
            decl.shape.iter().product::<usize>() as u64
        };
        let e = resident.entry(class).or_default();
        (e.0, e.1) = (e.0 + weights, e.1 + weights * bits);
    }
    let bits_per_weight: BTreeMap<&String, serde_json::Value> = resident
        .iter()
        .map(|(class, (weights, bits))| {
            (class, json!({ "weights": weights, "bits_per_weight": *bits as f64 / *weights as f64 }))
        })
        .collect();
    let kind = |l: &ternlight_core::spec::LayerSpec| {
        let mlp = match &l.mlp {
            MlpSpec::Gated(g) => format!("gated_mlp({:?})", g.act),
            MlpSpec::Moe(m) => format!(
                "moe({} experts, top {}{})",
                m.experts.len(),
                m.top_k,
                if m.shared.is_some() { ", shared" } else { "" }
            ),
            MlpSpec::ChannelMix(c) => format!("channel_mix({})", c.key.out_features),
        };
        format!("{} + {}", l.mixer.kind(), mlp)
    };
    let layers: Vec<serde_json::Value> = spec
        .layers
        .iter()
        .enumerate()
        .map(|(i, l)| {
            json!({
                "index": i,
                "kind": kind(l),
                "kv_bytes_per_token": l.kv_bytes_per_token(DType::F32),
                "state_bytes": l.state_bytes(),
            })
        })
        .collect();
    let kv = spec.kv_bytes_per_token(DType::F32);
    let state = spec.state_bytes();
    let at = |ctx: usize| spec.context_bytes(ctx, DType::F32);
    let report = json!({
        "model_type": spec.model_type,
        "layers": layers,
        "hidden": spec.hidden,
        "vocab": spec.vocab,
        "parameters": spec.parameter_count(),
        "bytes_by_dtype": by_dtype,
        "resident_bits_per_weight": bits_per_weight,
        "tied_embeddings": spec.tied_embeddings,
        "max_positions": spec.max_positions,
        "memory": {
            "kv_cache_bytes_per_token": kv,
            "fixed_state_bytes": state,
            "context_bytes": { "4096": at(4096), "32768": at(32768), "131072": at(131072) },
        },
        "needs": {
            "largest_tensor": largest.0,
            "largest_tensor_bytes": largest.1,
        },
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!(
        "architecture   {} ({} layers, hidden {}, vocab {})",
        spec.model_type,
        spec.layers.len(),
        spec.hidden,
        spec.vocab
    );
    println!("parameters     {}", spec.parameter_count());
    for (dtype, bytes) in &by_dtype {
        println!("weights {dtype:<6} {bytes} bytes");
    }
    for (class, (weights, bits)) in &resident {
        println!("on the GPU     {class}: {weights} weights at {:.2} bits each", *bits as f64 / *weights as f64);
    }
    println!("KV cache       {kv} bytes per token (f32); fixed state {state} bytes");
    println!("context memory 4K: {} B, 32K: {} B, 128K: {} B", at(4096), at(32768), at(131072));
    println!(
        "largest tensor {} ({} bytes; split into row blocks above the device's binding limit)",
        largest.0, largest.1
    );
    println!("layers         kind / KV bytes per token / fixed state bytes");
    for (i, l) in spec.layers.iter().enumerate() {
        println!("  {i:>3}  {:<48} {:>8} {:>10}", kind(l), l.kv_bytes_per_token(DType::F32), l.state_bytes());
    }
    Ok(())
}
