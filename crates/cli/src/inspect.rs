//! `ternlight inspect`: what a model is and what it needs, without touching the GPU.

use crate::model_dir::ModelDir;
use anyhow::Result;
use serde_json::json;
use std::collections::BTreeMap;
use std::path::PathBuf;
use ternlight_core::dtype::DType;
use ternlight_core::spec::MlpSpec;
use ternlight_core::tensors::{check_against_spec, TensorSource};

#[derive(clap::Args)]
pub struct Args {
    /// Model directory.
    #[arg(long)]
    model: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> Result<()> {
    let model = ModelDir::open(&args.model)?;
    check_against_spec(&model.spec, &model.checkpoint)?;
    let spec = &model.spec;
    let mut by_dtype: BTreeMap<String, u64> = BTreeMap::new();
    let mut largest = (String::new(), 0u64);
    for decl in spec.tensors() {
        let bytes = model.checkpoint.bytes(&decl.name)?.len() as u64;
        let info = model.checkpoint.info(&decl.name)?.expect("checked above");
        *by_dtype.entry(info.dtype.to_string()).or_default() += bytes;
        if bytes > largest.1 {
            largest = (decl.name.clone(), bytes);
        }
    }
    let schedule: Vec<String> = spec
        .layers
        .iter()
        .map(|l| {
            let mlp = match &l.mlp {
                MlpSpec::Gated { act, .. } => format!("gated_mlp({act:?})"),
            };
            format!("{} + {}", l.mixer.kind(), mlp)
        })
        .collect();
    let kv = spec.kv_bytes_per_token(DType::F32);
    let report = json!({
        "model_type": spec.model_type,
        "layers": spec.layers.len(),
        "hidden": spec.hidden,
        "vocab": spec.vocab,
        "schedule": schedule,
        "parameters": spec.parameter_count(),
        "bytes_by_dtype": by_dtype,
        "tied_embeddings": spec.tied_embeddings,
        "max_positions": spec.max_positions,
        "kv_cache_bytes_per_token": kv,
        "needs": {
            "largest_tensor": largest.0,
            "largest_tensor_bytes": largest.1,
            "kv_cache_bytes_at_max_positions": kv as u64 * spec.max_positions as u64,
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
    println!(
        "KV cache       {kv} bytes per token (f32), {} at {} positions",
        kv as u64 * spec.max_positions as u64,
        spec.max_positions
    );
    println!(
        "largest tensor {} ({} bytes; split into row blocks above the device's binding limit)",
        largest.0, largest.1
    );
    println!("schedule");
    for (i, s) in schedule.iter().enumerate() {
        println!("  {i:>3}  {s}");
    }
    Ok(())
}
