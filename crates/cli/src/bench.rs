//! `ternlight bench`: prefill throughput and decode latency at several context lengths, and chunkwise
//! prefill against stepping the same tokens one at a time. Numbers are measured, never asserted.

use crate::model_dir::ModelDir;
use anyhow::{bail, Result};
use serde_json::json;
use std::path::PathBuf;
use std::time::Instant;
use ternlight_runtime::{Session, SessionOptions};

#[derive(clap::Args)]
pub struct Args {
    /// Model directory.
    #[arg(long)]
    model: PathBuf,
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

pub fn run(args: Args, quiet: bool) -> Result<()> {
    if args.contexts.is_empty() || args.contexts.contains(&0) || args.decode_steps == 0 || args.reps == 0 {
        bail!("--contexts, --decode-steps and --reps must be positive");
    }
    let mut model = ModelDir::open(&args.model)?;
    let longest = args.contexts.iter().copied().max().unwrap_or(1).max(args.compare_tokens) + args.decode_steps + 1;
    let trained = model.spec.max_positions;
    // Speed does not depend on weights having been trained at a length; allow longer contexts for measuring.
    model.spec.max_positions = trained.max(longest);
    let options = SessionOptions { max_context: Some(longest), prefill_capacity: longest, ..Default::default() };
    let load_start = Instant::now();
    let mut s = model.session(&options, quiet)?;
    let load_s = load_start.elapsed().as_secs_f64();
    time_prefill(&mut s, 8)?;

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
        "model": args.model.display().to_string(),
        "model_type": s.spec().model_type,
        "trained_positions": trained,
        "device": { "name": info.name, "backend": info.backend, "type": info.device_type,
                    "shader_f16": info.shader_f16, "subgroups": info.subgroups, "timestamps": info.timestamps },
        "load_s": load_s,
        "decode_dispatches_per_token": s.decode_dispatches(),
        "memory": { "weights_bytes": s.memory().weights, "state_bytes_allocated": s.memory().state },
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
    println!("{:>8} {:>14} {:>12} {:>16}", "context", "prefill tok/s", "prefill ms", "decode ms/token");
    for r in &rows {
        println!(
            "{:>8} {:>14.1} {:>12.1} {:>16.2}",
            r["context"].as_u64().unwrap_or(0),
            r["prefill_tok_s"].as_f64().unwrap_or(0.0),
            r["prefill_ms"].as_f64().unwrap_or(0.0),
            r["decode_ms_per_token"].as_f64().unwrap_or(0.0)
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
