//! `ternlight bench`: prefill throughput and decode latency at several context lengths, chunkwise prefill against
//! stepping the same tokens one at a time, and decode against the memory-bandwidth roofline (a streaming copy's
//! bandwidth; each decode token reads every weight once). Numbers are measured, never asserted.

use crate::model_dir::{Checkpoint, ModelDir};
use crate::synthetic::{self, Synthetic};
use anyhow::{bail, Result};
use serde_json::json;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;
use ternlight_core::spec::ModelSpec;
use ternlight_core::tensors::TensorSource;
use ternlight_gpu::Gpu;
use ternlight_runtime::bench::{self, BenchOptions};
use ternlight_runtime::{Session, SessionOptions};

#[derive(clap::Args)]
pub struct Args {
    /// Model directory (or URL, hub id).
    #[arg(long, required_unless_present = "synthetic", conflicts_with = "synthetic")]
    model: Option<PathBuf>,
    /// A random-weight model with a real checkpoint's shapes instead: smollm2-135m, gemma3-270m, qwen3.5-0.8b,
    /// bitnet-b1.58-2b4t, fla-gdn-340m-hybrid.
    #[arg(long)]
    synthetic: Option<String>,
    /// Context lengths to measure (prompt lengths for prefill, positions for decode).
    #[arg(long, value_delimiter = ',', default_values_t = [64usize, 1024, 4096])]
    contexts: Vec<usize>,
    /// Decode steps timed at each context.
    #[arg(long, default_value_t = 32)]
    decode_steps: usize,
    /// Tokens for the chunkwise-prefill vs token-by-token comparison.
    #[arg(long, default_value_t = 1024)]
    compare_tokens: usize,
    /// Repetitions of each prefill (the best is reported).
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Bytes per second a streaming copy moves through the device (see [`bench::copy_bandwidth`]).
pub(crate) fn copy_bandwidth(gpu: &Gpu) -> Result<f64> {
    Ok(pollster::block_on(bench::copy_bandwidth(gpu))?)
}

/// Where the measured model's weights come from.
enum Weights {
    Checkpoint(Checkpoint),
    Synthetic(Synthetic),
}

impl Weights {
    fn source(&self) -> &dyn TensorSource {
        match self {
            Weights::Checkpoint(c) => c.source(),
            Weights::Synthetic(s) => s,
        }
    }
}

/// The model to measure: a checkpoint, or a synthetic one.
fn open(args: &Args) -> Result<(String, ModelSpec, Weights)> {
    match (&args.model, &args.synthetic) {
        (_, Some(name)) => {
            let (spec, source) = synthetic::open(name)?;
            Ok((format!("synthetic {name}"), spec, Weights::Synthetic(source)))
        }
        (Some(path), None) => {
            let model = ModelDir::open(path)?;
            Ok((path.display().to_string(), model.spec, Weights::Checkpoint(model.checkpoint)))
        }
        (None, None) => bail!("--model or --synthetic is needed"),
    }
}

pub fn run(args: Args, quiet: bool) -> Result<()> {
    let options = BenchOptions {
        contexts: args.contexts.clone(),
        decode_steps: args.decode_steps,
        compare_tokens: args.compare_tokens,
        reps: args.reps,
    };
    let (label, mut spec, weights) = open(&args)?;
    let longest = options.longest();
    let trained = spec.max_positions;
    // Speed does not depend on weights having been trained at a length; allow longer contexts for measuring.
    spec.max_positions = trained.max(longest);
    let session_options =
        SessionOptions { max_context: Some(longest), prefill_capacity: longest, ..Default::default() };
    let mut gpu = Gpu::new_blocking()?;
    let tuned = ternlight_runtime::tuning::apply_cached(&mut gpu);
    let tuning = json!({ "from_cache": tuned, "sizes": ternlight_runtime::tuning::to_json(&gpu.tuning) });
    let gpu = Arc::new(gpu);
    let bandwidth = copy_bandwidth(&gpu)?;
    let load_start = Instant::now();
    let bar = crate::progress::LoadBar::new(quiet);
    let mut s = Session::new(gpu, spec, weights.source(), &session_options, &mut |p| bar.update(p))?;
    bar.finish();
    let load_s = load_start.elapsed().as_secs_f64();
    let timings = pollster::block_on(bench::measure(&mut s, &options))?;
    // Each decode token reads every weight once (a tied embedding is the head; an untied one is read a row at a
    // time, so this bound is a little low for untied models).
    let bound_s = s.memory().weights as f64 / bandwidth;
    let rows: Vec<serde_json::Value> = timings
        .contexts
        .iter()
        .map(|t| {
            json!({
                "context": t.context,
                "prefill_tok_s": t.context as f64 / t.prefill_s,
                "prefill_ms": t.prefill_s * 1e3,
                "decode_ms_per_token": t.decode_s * 1e3,
                "decode_fraction_of_roofline": bound_s / t.decode_s,
            })
        })
        .collect();
    let (n, chunked, stepped) = (timings.stepping.tokens, timings.stepping.prefill_s, timings.stepping.stepping_s);
    let info = &s.gpu().info;
    let report = json!({
        "model": label,
        "model_type": s.spec().model_type,
        "trained_positions": trained,
        "device": { "name": info.name, "backend": info.backend, "type": info.device_type,
                    "shader_f16": info.shader_f16, "subgroups": info.subgroups, "timestamps": info.timestamps,
                    "tuning": tuning },
        "load_s": load_s,
        "decode_dispatches_per_token": s.decode_dispatches(),
        "memory": { "weights_bytes": s.memory().weights, "state_bytes_allocated": s.memory().state },
        "roofline": { "copy_bytes_per_s": bandwidth, "decode_bound_ms_per_token": bound_s * 1e3 },
        "contexts": rows,
        "prefill_vs_stepping": { "tokens": n, "prefill_s": chunked, "stepping_s": stepped, "speedup": stepped / chunked },
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!(
        "{} on {} ({}), {} dispatches per decode token",
        report["model_type"],
        info.name,
        info.backend,
        s.decode_dispatches()
    );
    println!(
        "copy bandwidth {:.2} GB/s; {:.1} MB of weights, so decode is bound at {:.2} ms/token",
        bandwidth / 1e9,
        s.memory().weights as f64 / 1e6,
        bound_s * 1e3
    );
    println!(
        "{:>8} {:>14} {:>12} {:>16} {:>10}",
        "context", "prefill tok/s", "prefill ms", "decode ms/token", "roofline"
    );
    for r in &rows {
        println!(
            "{:>8} {:>14.1} {:>12.1} {:>16.2} {:>9.0}%",
            r["context"].as_u64().unwrap_or(0),
            r["prefill_tok_s"].as_f64().unwrap_or(0.0),
            r["prefill_ms"].as_f64().unwrap_or(0.0),
            r["decode_ms_per_token"].as_f64().unwrap_or(0.0),
            100.0 * r["decode_fraction_of_roofline"].as_f64().unwrap_or(0.0)
        );
    }
    println!(
        "{n} tokens: one prefill {:.1} ms, {n} single steps {:.1} ms ({:.1}x)",
        chunked * 1e3,
        stepped * 1e3,
        stepped / chunked
    );
    Ok(())
}
