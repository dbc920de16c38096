//! `ternlight bench-attention`: one decode token's softmax attention against a filled KV cache, for each number of
//! workgroups a head's keys are split over (flash-decoding, `Tuning::attn_splits`), on given head shapes and
//! context lengths, beside the device's streaming-copy bandwidth; or, with `--prefill N`, the causal attention of
//! the last N tokens of each context, for each number of query heads a streaming invocation serves. Every setting's
//! output is checked against the first's. Measured only.

use crate::bench::{copy_bandwidth, dims, print_kernel_report};
use anyhow::{bail, Result};
use serde_json::json;
use ternlight_core::sampling::Rng;
use ternlight_core::spec::AttentionMask;
use ternlight_gpu::kernels::attention::{decode_with, prefill_with, Attention, DecodeSpread, PrefillShape};
use ternlight_gpu::plan::{Plan, Step};
use ternlight_gpu::tune::seconds_per_submit;
use ternlight_gpu::Gpu;

#[derive(clap::Args)]
pub struct Args {
    /// Head shapes as HEADSxKV_HEADSxHEAD_DIM (SmolLM2-135M's, Gemma 3 270M's and Qwen3.5-0.8B's by default).
    #[arg(long, value_delimiter = ',', default_values = ["9x3x64", "4x1x256", "8x2x256"])]
    shapes: Vec<String>,
    /// Keys in the cache (the decoded token's position plus one).
    #[arg(long, value_delimiter = ',', default_values_t = [1024, 4096, 16384])]
    contexts: Vec<usize>,
    /// The most workgroups per head to time (each is clamped to what the context fills).
    #[arg(long, value_delimiter = ',', default_values_t = [1, 2, 4, 8, 16, 32])]
    splits: Vec<u32>,
    /// The most query heads of one KV head a workgroup (with --prefill, an invocation) serves, sharing its key
    /// and value loads, to time.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 8])]
    heads: Vec<u32>,
    /// Time prefill instead: the attention of this many tokens, the last of each context, in one forward.
    #[arg(long, default_value_t = 0)]
    prefill: usize,
    /// Timed repetitions per measurement.
    #[arg(long, default_value_t = 20)]
    reps: usize,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> Result<()> {
    let mut gpu = Gpu::new_blocking()?;
    ternlight_runtime::tuning::apply_cached(&mut gpu);
    if args.splits.contains(&0) || args.heads.contains(&0) || args.contexts.contains(&0) {
        bail!("--splits, --heads and --contexts take counts of at least 1");
    }
    let copy = copy_bandwidth(&gpu)?;
    let mut rng = Rng::new(11);
    let mut random = |n: usize| gpu.upload_f32("random", &(0..n).map(|_| rng.next_f32() - 0.5).collect::<Vec<_>>());
    if args.prefill > 0 {
        return prefill(&gpu, copy, &args, &mut random);
    }
    let causal = AttentionMask::default();
    let mut rows = Vec::new();
    for shape in &args.shapes {
        let d = dims(shape, 3, "HEADSxKV_HEADSxHEAD_DIM")?;
        let (heads, kv, dim) = (d[0], d[1], d[2]);
        for &ctx in &args.contexts {
            let (q, k, v, out) =
                (random(heads * dim), random(ctx * kv * dim), random(ctx * kv * dim), gpu.zeros("o", heads * dim));
            let a = Attention::new((&q, &out), (&k, &v, ctx), (heads, kv, dim), &causal, 1.0 / (dim as f32).sqrt());
            let step = Step { pos0: ctx as u32 - 1, n_tokens: 1, logit_rows: vec![] };
            let mut first: Option<Vec<f32>> = None;
            let spreads = args.heads.iter().flat_map(|&shared| args.splits.iter().map(move |&splits| (shared, splits)));
            for (shared, splits) in spreads {
                let spread = DecodeSpread { wg: gpu.tuning.wg, splits, heads: shared };
                let scratch = gpu.zeros("scratch", heads * spread.scratch_row(dim, ctx));
                let mut plan = Plan::new(&gpu);
                decode_with(&gpu, &mut plan, &a, &scratch, ctx, spread)?;
                let seconds = pollster::block_on(seconds_per_submit(&gpu, &plan, &step, &out, args.reps))?;
                let got = pollster::block_on(gpu.read_f32(&out, 0, heads * dim))?;
                let reference = first.get_or_insert_with(|| got.clone());
                let diff = got.iter().zip(reference.iter()).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
                // Each KV head's keys and values, read once whatever the number of query heads sharing them.
                let kv_bytes = (2 * ctx * kv * dim * 4) as f64;
                rows.push(json!({
                    "shape": shape,
                    "context": ctx,
                    "splits": spread.splits_for(ctx),
                    "heads_per_workgroup": spread.heads_for(&gpu, &a),
                    "us": seconds * 1e6,
                    "kv_gb_s": kv_bytes / seconds / 1e9,
                    "fraction_of_copy": kv_bytes / seconds / copy,
                    "max_diff_vs_first": diff,
                }));
            }
        }
    }
    if print_kernel_report(&gpu, copy, "runs", &rows, args.json)? {
        return Ok(());
    }
    let header = ["shape", "context", "heads", "splits", "us", "KV GB/s", "of copy"];
    println!(
        "{:>10} {:>8} {:>6} {:>7} {:>10} {:>9} {:>9}",
        header[0], header[1], header[2], header[3], header[4], header[5], header[6]
    );
    for r in &rows {
        let count = |key: &str| r[key].as_u64().unwrap_or(0);
        println!(
            "{:>10} {:>8} {:>6} {:>7} {:>10.1} {:>9.2} {:>9.3}",
            r["shape"].as_str().unwrap_or(""),
            count("context"),
            count("heads_per_workgroup"),
            count("splits"),
            r["us"].as_f64().unwrap_or(0.0),
            r["kv_gb_s"].as_f64().unwrap_or(0.0),
            r["fraction_of_copy"].as_f64().unwrap_or(0.0),
        );
    }
    Ok(())
}

/// `--prefill`: times the causal attention of the last `args.prefill` tokens of each context, streaming, for each
/// number of query heads per invocation, and prints it with the arithmetic rate (q·k and p·v, two flops a
/// multiply-add, over the keys each query sees).
fn prefill(gpu: &Gpu, copy: f64, args: &Args, random: &mut impl FnMut(usize) -> wgpu::Buffer) -> Result<()> {
    let causal = AttentionMask::default();
    let mut rows = Vec::new();
    for shape in &args.shapes {
        let d = dims(shape, 3, "HEADSxKV_HEADSxHEAD_DIM")?;
        let (heads, kv, dim) = (d[0], d[1], d[2]);
        for &ctx in &args.contexts {
            let n = args.prefill.min(ctx);
            let (q, k, v, out) = (
                random(n * heads * dim),
                random(ctx * kv * dim),
                random(ctx * kv * dim),
                gpu.zeros("o", n * heads * dim),
            );
            let a = Attention::new((&q, &out), (&k, &v, ctx), (heads, kv, dim), &causal, 1.0 / (dim as f32).sqrt());
            let step = Step { pos0: (ctx - n) as u32, n_tokens: n as u32, logit_rows: vec![] };
            let visits: usize = (ctx - n + 1..=ctx).sum::<usize>() * heads;
            let mut first: Option<Vec<f32>> = None;
            for &shared in &args.heads {
                let shape_of = PrefillShape { kv_tile: 0, heads: shared };
                let mut plan = Plan::with_capacity(gpu, n, 0);
                prefill_with(gpu, &mut plan, &a, shape_of)?;
                let seconds = pollster::block_on(seconds_per_submit(gpu, &plan, &step, &out, args.reps))?;
                let got = pollster::block_on(gpu.read_f32(&out, 0, n * heads * dim))?;
                let reference = first.get_or_insert_with(|| got.clone());
                let diff = got.iter().zip(reference.iter()).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
                rows.push(json!({
                    "shape": shape,
                    "context": ctx,
                    "queries": n,
                    "heads_per_invocation": shape_of.heads_for(&a),
                    "us": seconds * 1e6,
                    "gflop_s": (visits * 4 * dim) as f64 / seconds / 1e9,
                    "max_diff_vs_first": diff,
                }));
            }
        }
    }
    if print_kernel_report(gpu, copy, "prefill_runs", &rows, args.json)? {
        return Ok(());
    }
    println!("{:>10} {:>8} {:>8} {:>6} {:>12} {:>9}", "shape", "context", "queries", "heads", "us", "GFLOP/s");
    for r in &rows {
        let count = |key: &str| r[key].as_u64().unwrap_or(0);
        println!(
            "{:>10} {:>8} {:>8} {:>6} {:>12.1} {:>9.2}",
            r["shape"].as_str().unwrap_or(""),
            count("context"),
            count("queries"),
            count("heads_per_invocation"),
            r["us"].as_f64().unwrap_or(0.0),
            r["gflop_s"].as_f64().unwrap_or(0.0),
        );
    }
    Ok(())
}
