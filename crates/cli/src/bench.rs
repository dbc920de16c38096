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
use ternlight_gpu::kernels::copy::copy;
use ternlight_gpu::plan::{Plan, Step};
use ternlight_gpu::Gpu;
use ternlight_runtime::{Session, SessionOptions};

#[derive(clap::Args)]
pub struct Args {
    /// Model directory (or URL, hub id).
    #[arg(long, required_unless_present = "synthetic", conflicts_with = "synthetic")]
    model: Option<PathBuf>,
    /// A random-weight model with a real checkpoint's shapes instead: smollm2-135m, gemma3-270m, qwen3.5-0.8b.
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

fn ids(n: usize, vocab: usize) -> Vec<u32> {
    (0..n).map(|i| ((i * 7919 + 13) % vocab) as u32).collect()
}

/// Seconds for one prefill of `n` tokens from an empty context (synchronised by reading the last logits row).
fn time_prefill(s: &mut Session, n: usize) -> Result<f64> {
    s.reset();
    let prompt = ids(n, s.spec().vocab);
    let start = Instant::now();
    pollster::block_on(s.prefill(&prompt, &[n - 1]))?;
    Ok(start.elapsed().as_secs_f64())
}

/// Median seconds of one decode step after `context` tokens of context.
fn time_decode(s: &mut Session, context: usize, steps: usize) -> Result<f64> {
    s.reset();
    let vocab = s.spec().vocab;
    pollster::block_on(s.prefill(&ids(context, vocab), &[context - 1]))?;
    pollster::block_on(s.step(1))?;
    let mut times = Vec::with_capacity(steps);
    for i in 0..steps {
        let start = Instant::now();
        pollster::block_on(s.step(((i * 31) % vocab) as u32))?;
        times.push(start.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    Ok(times[steps / 2])
}

/// Copies run back to back for the bandwidth figure.
const COPIES: usize = 16;

/// Bytes per second a streaming copy moves (read plus write) through buffers of up to 64 MiB.
pub(crate) fn copy_bandwidth(gpu: &Gpu) -> Result<f64> {
    let floats = (gpu.info.max_binding.min(64 << 20) / 16 * 4) as usize;
    let (src, dst) = (gpu.zeros("copy source", floats), gpu.zeros("copy destination", floats));
    let mut plan = Plan::new(gpu);
    for _ in 0..COPIES {
        copy(gpu, &mut plan, &src, &dst)?;
    }
    let step = Step { pos0: 0, n_tokens: 1, logit_rows: Vec::new() };
    let mut best = f64::MAX;
    for _ in 0..3 {
        let start = Instant::now();
        plan.submit(gpu, &step, &[], None);
        pollster::block_on(gpu.read_f32(&dst, 0, 1))?;
        best = best.min(start.elapsed().as_secs_f64());
    }
    Ok((COPIES * 2 * 4 * floats) as f64 / best)
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
    if args.contexts.is_empty() || args.contexts.contains(&0) || args.decode_steps == 0 || args.reps == 0 {
        bail!("--contexts, --decode-steps and --reps must be positive");
    }
    let (label, mut spec, weights) = open(&args)?;
    let longest = args.contexts.iter().copied().max().unwrap_or(1).max(args.compare_tokens) + args.decode_steps + 1;
    let trained = spec.max_positions;
    // Speed does not depend on weights having been trained at a length; allow longer contexts for measuring.
    spec.max_positions = trained.max(longest);
    let options = SessionOptions { max_context: Some(longest), prefill_capacity: longest, ..Default::default() };
    let gpu = Arc::new(Gpu::new_blocking()?);
    let bandwidth = copy_bandwidth(&gpu)?;
    let load_start = Instant::now();
    let bar = crate::progress::LoadBar::new(quiet);
    let mut s = Session::new(gpu, spec, weights.source(), &options, &mut |p| bar.update(p))?;
    bar.finish();
    let load_s = load_start.elapsed().as_secs_f64();
    time_prefill(&mut s, 8)?;
    // Each decode token reads every weight once (a tied embedding is the head; an untied one is read a row at a
    // time, so this bound is a little low for untied models).
    let bound_s = s.memory().weights as f64 / bandwidth;

    let mut rows = Vec::new();
    for &ctx in &args.contexts {
        let mut best = f64::MAX;
        for _ in 0..args.reps {
            best = best.min(time_prefill(&mut s, ctx)?);
        }
        let decode = time_decode(&mut s, ctx, args.decode_steps)?;
        rows.push(json!({
            "context": ctx,
            "prefill_tok_s": ctx as f64 / best,
            "prefill_ms": best * 1e3,
            "decode_ms_per_token": decode * 1e3,
            "decode_fraction_of_roofline": bound_s / decode,
        }));
    }
    let n = args.compare_tokens;
    let chunked = time_prefill(&mut s, n)?;
    s.reset();
    let start = Instant::now();
    for &id in &ids(n, s.spec().vocab) {
        pollster::block_on(s.step(id))?;
    }
    let stepped = start.elapsed().as_secs_f64();
    let info = &s.gpu().info;
    let report = json!({
        "model": label,
        "model_type": s.spec().model_type,
        "trained_positions": trained,
        "device": { "name": info.name, "backend": info.backend, "type": info.device_type,
                    "shader_f16": info.shader_f16, "subgroups": info.subgroups, "timestamps": info.timestamps },
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
