//! `ternlight eval-policy`: the quality cost of attention policies, measured. The text runs through the model
//! with full attention and under each policy side by side (a forked session on the same weights), chunk by chunk;
//! at every position the next-token distributions are compared: KL(full ‖ policy) and top-1 agreement. Prefill
//! time and the KV cache held at the end are reported beside them.

use crate::model_dir::{parse_policy, ModelDir};
use anyhow::{bail, Context, Result};
use serde_json::json;
use std::path::PathBuf;
use std::time::Instant;
use ternlight_core::spec::AttentionPolicy;
use ternlight_runtime::{Session, SessionOptions};

#[derive(clap::Args)]
pub struct Args {
    /// Model: a directory, a .gguf file, an http(s) URL or org/name.
    #[arg(long)]
    model: PathBuf,
    /// Text file to evaluate on.
    #[arg(long)]
    text: PathBuf,
    /// Positions to evaluate: the text's tokens cut or repeated to this many (default: the text as it is); more
    /// than the model was trained on runs full attention past its trained length.
    #[arg(long)]
    tokens: Option<usize>,
    /// Policies to compare with full attention (repeat the flag for several).
    #[arg(long = "policy", required = true, value_parser = parse_policy)]
    policies: Vec<AttentionPolicy>,
    /// Tokens per prefill forward.
    #[arg(long, default_value_t = 64)]
    chunk: usize,
    /// One-token steps timed after the text (decode speed at the text's context).
    #[arg(long, default_value_t = 16)]
    decode_steps: usize,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// How one policy compares with full attention over the text.
struct Comparison {
    policy: String,
    kl_mean: f64,
    kl_max: f64,
    top1: f64,
    full_seconds: f64,
    policy_seconds: f64,
    full_step: f64,
    policy_step: f64,
    full_kv: u64,
    policy_kv: u64,
    /// KL and top-1 agreement over the decode steps after the text (where a routed policy's sparse layers act).
    decode_kl: f64,
    decode_top1: f64,
    /// A routed policy's decisions after the last prefill: `layer:sparse|dense(entropy)`.
    routes: String,
}

/// Log-softmax of one logits row, in f64.
fn log_softmax(row: &[f32]) -> Vec<f64> {
    let max = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
    let log_total = row.iter().map(|&x| (x as f64 - max).exp()).sum::<f64>().ln() + max;
    row.iter().map(|&x| x as f64 - log_total).collect()
}

fn argmax(row: &[f32]) -> usize {
    row.iter().enumerate().fold(0, |best, (i, &x)| if x > row[best] { i } else { best })
}

/// KL(p ‖ q) of two logits rows, in nats.
fn kl(p: &[f32], q: &[f32]) -> f64 {
    let (lp, lq) = (log_softmax(p), log_softmax(q));
    lp.iter().zip(&lq).map(|(a, b)| a.exp() * (a - b)).sum::<f64>().max(0.0)
}

/// Mean seconds of one decode step of `session` over `ids`, and the steps' logits.
fn time_steps(session: &mut Session, ids: &[u32]) -> Result<(f64, Vec<Vec<f32>>)> {
    let mut logits = Vec::with_capacity(ids.len());
    let start = Instant::now();
    for &id in ids {
        logits.push(pollster::block_on(session.step(id))?);
    }
    Ok((start.elapsed().as_secs_f64() / ids.len().max(1) as f64, logits))
}

fn compare(
    full: &mut Session,
    other: &mut Session,
    ids: &[u32],
    (chunk, decode_steps): (usize, usize),
) -> Result<Comparison> {
    let vocab = full.spec().vocab;
    let (mut kl_sum, mut kl_max, mut agree) = (0.0, 0.0f64, 0usize);
    let (mut full_seconds, mut policy_seconds) = (0.0, 0.0);
    for part in ids.chunks(chunk.max(1)) {
        let rows: Vec<usize> = (0..part.len()).collect();
        let start = Instant::now();
        let a = pollster::block_on(full.prefill(part, &rows))?;
        full_seconds += start.elapsed().as_secs_f64();
        let start = Instant::now();
        let b = pollster::block_on(other.prefill(part, &rows))?;
        policy_seconds += start.elapsed().as_secs_f64();
        for (p, q) in a.chunks_exact(vocab).zip(b.chunks_exact(vocab)) {
            let d = kl(p, q);
            kl_sum += d;
            kl_max = kl_max.max(d);
            agree += usize::from(argmax(p) == argmax(q));
        }
    }
    let (full_kv, policy_kv) = (full.memory().kv_cache_live, other.memory().kv_cache_live);
    let steps: Vec<u32> = ids.iter().cycle().take(decode_steps).copied().collect();
    let routes = other
        .routes()
        .iter()
        .map(|r| format!("{}:{}({:.3})", r.layer, if r.sparse { "sparse" } else { "dense" }, r.entropy))
        .collect::<Vec<_>>()
        .join(" ");
    let ((full_step, a), (policy_step, b)) = (time_steps(full, &steps)?, time_steps(other, &steps)?);
    let decode_kl = a.iter().zip(&b).map(|(p, q)| kl(p, q)).sum::<f64>() / steps.len().max(1) as f64;
    let decode_top1 =
        a.iter().zip(&b).filter(|(p, q)| argmax(p) == argmax(q)).count() as f64 / steps.len().max(1) as f64;
    Ok(Comparison {
        policy: other.attention_policy().to_string(),
        kl_mean: kl_sum / ids.len() as f64,
        kl_max,
        top1: agree as f64 / ids.len() as f64,
        full_seconds,
        policy_seconds,
        full_step,
        policy_step,
        full_kv,
        policy_kv,
        decode_kl,
        decode_top1,
        routes,
    })
}

pub fn run(args: Args, quiet: bool) -> Result<()> {
    let mut model = ModelDir::open(&args.model)?;
    let tokenizer = model.tokenizer()?;
    let text = std::fs::read_to_string(&args.text).with_context(|| format!("cannot read {}", args.text.display()))?;
    let mut ids = tokenizer.encode(&text, true)?;
    if ids.is_empty() {
        bail!("{} encodes to no tokens", args.text.display());
    }
    if let Some(n) = args.tokens {
        ids = ids.iter().cycle().take(n).copied().collect();
    }
    let context = ids.len() + args.decode_steps;
    if context > model.spec.max_positions {
        // Full attention runs past the trained length too (RoPE extends); the comparison then describes the model
        // beyond its training, which is what long synthetic contexts are for.
        eprintln!("note: {context} positions run past the model's trained {}", model.spec.max_positions);
        model.spec.max_positions = context;
    }
    let options = SessionOptions { max_context: Some(context), prefill_capacity: args.chunk, ..Default::default() };
    let mut full = model.session(&options, quiet)?;
    let mut results = Vec::new();
    for policy in &args.policies {
        let mut other = full.fork(policy)?;
        full.reset();
        results.push(compare(&mut full, &mut other, &ids, (args.chunk, args.decode_steps))?);
    }
    if args.json {
        let rows: Vec<_> = results
            .iter()
            .map(|r| {
                json!({"policy": r.policy, "kl_mean": r.kl_mean, "kl_max": r.kl_max, "top1_agreement": r.top1,
                       "full_prefill_s": r.full_seconds, "policy_prefill_s": r.policy_seconds,
                       "full_decode_s_per_token": r.full_step, "policy_decode_s_per_token": r.policy_step,
                       "full_kv_bytes": r.full_kv, "policy_kv_bytes": r.policy_kv,
                       "decode_kl_mean": r.decode_kl, "decode_top1_agreement": r.decode_top1, "routes": r.routes})
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({"positions": ids.len(), "chunk": args.chunk, "policies": rows}))?
        );
        return Ok(());
    }
    println!(
        "{} positions, chunks of {}; KL(full ‖ policy) of next-token distributions in nats",
        ids.len(),
        args.chunk
    );
    println!(
        "| policy | KL mean | KL max | top-1 agreement | decode KL | decode top-1 | prefill time vs full | decode time \
         vs full | KV cache vs full |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for r in &results {
        println!(
            "| `{}` | {:.2e} | {:.2e} | {:.1}% | {:.2e} | {:.1}% | {:.2}x | {:.2}x | {:.1} / {:.1} KiB |",
            r.policy,
            r.kl_mean,
            r.kl_max,
            100.0 * r.top1,
            r.decode_kl,
            100.0 * r.decode_top1,
            r.policy_seconds / r.full_seconds,
            r.policy_step / r.full_step,
            r.policy_kv as f64 / 1024.0,
            r.full_kv as f64 / 1024.0
        );
    }
    for r in results.iter().filter(|r| !r.routes.is_empty()) {
        println!("\n`{}` routed after the last prefill: {}", r.policy, r.routes);
    }
    Ok(())
}
