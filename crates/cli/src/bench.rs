//! `ternlight bench`: prefill throughput and decode latency at several context lengths, chunkwise prefill against
//! stepping the same tokens one at a time, decode against the roofline (a streaming copy's bandwidth; each decode
//! token reads every weight once), one decode step profiled per layer and per kernel, and peak memory. The
//! measurements and the report are the runtime's (`ternlight_runtime::bench`), shared with the browser's bench
//! page. Numbers are measured, never asserted.

use crate::model_dir::{Checkpoint, ModelDir};
use crate::synthetic::{self, Synthetic};
use anyhow::{bail, Result};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;
use ternlight_core::spec::ModelSpec;
use ternlight_core::tensors::TensorSource;
use ternlight_gpu::{Gpu, GpuOptions};
use ternlight_runtime::bench::{self, BenchOptions};
use ternlight_runtime::{Session, SessionOptions};

#[derive(clap::Args)]
pub struct Args {
    /// Model directory (or URL, hub id).
    #[arg(long, required_unless_present = "synthetic", conflicts_with = "synthetic")]
    model: Option<PathBuf>,
    /// A random-weight model with a real checkpoint's shapes instead: smollm2-135m, gemma3-270m, qwen3.5-0.8b,
    /// bitnet-b1.58-2b4t, fla-gdn-340m-hybrid, fla-gla-340m, rwkv7-0.4b.
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
    /// Storage buffers per kernel to allow, below the adapter's: a browser's limit natively (WebGPU guarantees 8,
    /// the least accepted; Chromium's SwiftShader adapter gives 10). Fused kernels that need more split into more
    /// dispatches.
    #[arg(long, value_parser = clap::value_parser!(u32).range(8..))]
    max_storage_buffers: Option<u32>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Bytes per second a streaming copy moves through the device (see [`bench::copy_bandwidth`]).
pub(crate) fn copy_bandwidth(gpu: &Gpu) -> Result<f64> {
    Ok(pollster::block_on(bench::copy_bandwidth(gpu))?)
}

/// The `n` positive numbers of `shape`, written `AxBx..`, or an error naming the `form` expected.
pub(crate) fn dims(shape: &str, n: usize, form: &str) -> Result<Vec<usize>> {
    let parts: Option<Vec<usize>> = shape.split('x').map(|p| p.parse().ok().filter(|&v| v > 0)).collect();
    match parts {
        Some(p) if p.len() == n => Ok(p),
        _ => bail!("shape `{shape}` is not {form} (positive numbers)"),
    }
}

/// Prints a kernel benchmark's `rows` under `key` beside the device, its tuning and copy bandwidth: as JSON (then
/// returns true, nothing more to print), or as the table's first line.
pub(crate) fn print_kernel_report(gpu: &Gpu, copy: f64, key: &str, rows: &[Value], as_json: bool) -> Result<bool> {
    if as_json {
        let mut report = json!({
            "device": gpu.info.name,
            "tuning": ternlight_runtime::tuning::to_json(&gpu.tuning),
            "copy_gb_s": copy / 1e9,
        });
        report[key] = json!(rows);
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(true);
    }
    println!("device {}  copy bandwidth {:.1} GB/s", gpu.info.name, copy / 1e9);
    Ok(false)
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
    let limits = GpuOptions { max_storage_buffers: args.max_storage_buffers, ..Default::default() };
    let mut gpu = pollster::block_on(Gpu::with_options(&limits))?;
    let tuned = ternlight_runtime::tuning::apply_cached(&mut gpu);
    let gpu = Arc::new(gpu);
    let roofline = pollster::block_on(bench::roofline(&gpu))?;
    let load_start = Instant::now();
    let bar = crate::progress::LoadBar::new(quiet);
    let mut s = Session::new(gpu, spec, weights.source(), &session_options, &mut |p| bar.update(p))?;
    bar.finish();
    let load_s = load_start.elapsed().as_secs_f64();
    let timings = pollster::block_on(bench::measure(&mut s, &options))?;
    let mut report = bench::report(&s, &roofline, &timings);
    report["model"] = json!(label);
    report["trained_positions"] = json!(trained);
    report["load_s"] = json!(load_s);
    report["device"]["tuning_from_cache"] = json!(tuned);
    report["memory"]["host_peak_bytes"] = json!(crate::heap::resident("VmHWM"));
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    print_report(&report);
    Ok(())
}

/// The report as text: the roofline, a row per context, prefill against stepping, and the profiled step.
fn print_report(r: &Value) {
    let (device, roofline) = (&r["device"], &r["roofline"]);
    println!(
        "{} on {} ({}), {} dispatches per decode token ({} storage buffers per kernel)",
        text(&r["model_type"]),
        text(&device["name"]),
        text(&device["backend"]),
        n(&r["decode_dispatches_per_token"]),
        n(&device["max_storage_buffers"])
    );
    let long = &r["long_context_decode"];
    if !long.is_null() {
        println!(
            "from context {} decode splits attention's keys over workgroups: {} dispatches per token",
            n(&long["from_context"]),
            n(&long["dispatches_per_token"])
        );
    }
    println!(
        "roofline: copy {:.2} GB/s, matmul {:.2} GFLOP/s; {:.1} MB of weights bound decode at {:.2} ms/token",
        f(&roofline["copy_bytes_per_s"]) / 1e9,
        f(&roofline["matmul_flops_per_s"]) / 1e9,
        f(&r["memory"]["weights_bytes"]) / 1e6,
        f(&roofline["decode_bound_ms_per_token"])
    );
    println!(
        "{:>8} {:>14} {:>12} {:>16} {:>10}",
        "context", "prefill tok/s", "prefill ms", "decode ms/token", "roofline"
    );
    for c in r["contexts"].as_array().into_iter().flatten() {
        println!(
            "{:>8} {:>14.1} {:>12.1} {:>16.2} {:>9.0}%",
            n(&c["context"]),
            f(&c["prefill_tok_s"]),
            f(&c["prefill_ms"]),
            f(&c["decode_ms_per_token"]),
            100.0 * f(&c["decode_fraction_of_roofline"])
        );
    }
    let p = &r["prefill_vs_stepping"];
    println!(
        "{} tokens: one prefill {:.1} ms, single steps {:.1} ms ({:.1}x)",
        n(&p["tokens"]),
        f(&p["prefill_s"]) * 1e3,
        f(&p["stepping_s"]) * 1e3,
        f(&p["speedup"])
    );
    print_profile(&r["decode_profile"], "decode step");
    print_profile(&r["prefill_profile"], "prefill");
}

/// A number of the report (NaN where missing).
fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

/// A count of the report (0 where missing).
fn n(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

/// A string of the report (empty where missing).
fn text(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

/// One profiled forward of the report (`what` it was), if there is one: GPU time by stage, then by kernel.
fn print_profile(profile: &Value, what: &str) {
    if profile.is_null() {
        return;
    }
    let stages: Vec<f64> = profile["stages_ms"].as_array().into_iter().flatten().map(f).collect();
    println!(
        "{what} of {} tokens after {}: {:.2} ms of GPU time; embedding {:.2}, layers {}, head {:.2} ms",
        n(&profile["tokens"]),
        n(&profile["context"]),
        f(&profile["gpu_ms"]),
        stages.first().copied().unwrap_or(0.0),
        stages
            .get(1..stages.len().saturating_sub(1))
            .unwrap_or(&[])
            .iter()
            .map(|t| format!("{t:.2}"))
            .collect::<Vec<_>>()
            .join(" "),
        stages.last().copied().unwrap_or(0.0)
    );
    println!(
        "{:<32} {:>6} {:>9} {:>6} {:>10} {:>8} {:>9} {:>8}",
        "kernel", "calls", "ms", "share", "weight GB/s", "of copy", "GFLOP/s", "of peak"
    );
    for k in profile["kernels"].as_array().into_iter().flatten() {
        print!(
            "{:<32} {:>6} {:>9.3} {:>5.1}%",
            text(&k["kernel"]),
            n(&k["dispatches"]),
            f(&k["ms"]),
            100.0 * f(&k["share"])
        );
        if k.get("weight_gb_s").is_some() {
            print!(
                " {:>10.2} {:>7.0}% {:>9.2} {:>7.0}%",
                f(&k["weight_gb_s"]),
                100.0 * f(&k["of_copy_bandwidth"]),
                f(&k["gflop_s"]),
                100.0 * f(&k["of_matmul_peak"])
            );
        }
        println!();
    }
}
