//! `ternlight bench-state`: one decode token of each recurrent mixer (Gated DeltaNet, Kimi Delta Attention, GLA,
//! the Mamba2 scan, Lightning attention, RWKV-7) at the head shapes of real models, on random inputs, beside the
//! device's streaming-copy bandwidth. A decode step of these mixers reads and writes its whole state once, so state
//! bytes over time against the copy bandwidth is their roofline. Each submit records the step DISPATCHES times, as
//! a model's layers would, so that the per-submit cost is not counted as the kernel's. With `--tokens N` it times
//! the chunkwise prefill of N tokens instead. Measured only.

use crate::bench::{copy_bandwidth, print_kernel_report};
use anyhow::{bail, Result};
use serde_json::json;
use ternlight_core::sampling::Rng;
use ternlight_gpu::kernels::gated_deltanet::{self, ChunkScratch, DeltaNet};
use ternlight_gpu::kernels::gla::{self, Decay, Gla};
use ternlight_gpu::kernels::rwkv7::Rwkv7;
use ternlight_gpu::plan::{Plan, Step};
use ternlight_gpu::tune::seconds_per_submit;
use ternlight_gpu::Gpu;

#[derive(clap::Args)]
pub struct Args {
    /// Timed repetitions per mixer.
    #[arg(long, default_value_t = 20)]
    reps: usize,
    /// Tokens per forward: 1 times the recurrent decode step, more the chunkwise prefill of that many.
    #[arg(long, default_value_t = 1)]
    tokens: usize,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// A timed mixer: its kind, the model whose heads it takes, and (heads, key channels, value channels).
type Case = (&'static str, &'static str, (usize, usize, usize));

/// Decode steps recorded per timed submit.
const DISPATCHES: usize = 16;

const CASES: [Case; 7] = [
    ("gated-deltanet", "Qwen3.5-0.8B", (16, 128, 128)),
    ("gated-deltanet", "fla GDN 340M", (4, 256, 512)),
    ("kda", "Kimi Linear 48B", (32, 128, 128)),
    ("gla", "fla GLA 1.3B", (4, 256, 512)),
    ("mamba2", "Falcon-H1 0.5B", (32, 128, 64)),
    ("lightning", "MiniMax-Text-01", (64, 128, 128)),
    ("rwkv7", "RWKV-7 2.9B", (40, 64, 64)),
];

pub fn run(args: Args) -> Result<()> {
    let mut gpu = Gpu::new_blocking()?;
    ternlight_runtime::tuning::apply_cached(&mut gpu);
    if args.reps == 0 || args.tokens == 0 {
        bail!("--reps and --tokens take counts of at least 1");
    }
    let t = args.tokens;
    let dispatches = if t == 1 { DISPATCHES } else { 1 };
    let copy = copy_bandwidth(&gpu)?;
    let mut rng = Rng::new(5);
    // Uniform in [offset - scale / 2, offset + scale / 2): log decays get a negative offset, so states stay finite.
    let mut values = |n: usize, scale: f32, offset: f32| -> Vec<f32> {
        (0..n).map(|_| (rng.next_f32() - 0.5) * scale + offset).collect()
    };
    let step = Step { pos0: 0, n_tokens: t as u32, logit_rows: vec![] };
    let mut rows = Vec::new();
    for (kind, model, (heads, dk, dv)) in CASES {
        // The widest buffer: a token's inputs ([r | w | k | a | b | v] for RWKV-7, else [q | k | v]) or the chunk
        // scratch's rows of 64, over the tokens padded to whole chunks.
        let width = if kind == "rwkv7" { 5 * dk + dv } else { 2 * dk + dv }.max(64);
        let widest = 4 * (t.div_ceil(64) * 64 * heads * width) as u64;
        if widest > gpu.info.max_binding {
            bail!(
                "--tokens {t} needs {widest}-byte buffers for {kind} ({model} heads), over the device's {}-byte \
                 storage binding limit",
                gpu.info.max_binding
            );
        }
        let state = gpu.upload_f32("random", &values(heads * dk * dv, 0.5, 0.0));
        let out = gpu.zeros("out", t * heads * dv);
        let scratch = ChunkScratch::new(&gpu, t, heads, dk, dv);
        let mut plan = Plan::with_capacity(&gpu, t, 0);
        match kind {
            "gated-deltanet" | "kda" => {
                let per_channel = kind == "kda";
                let gates = if per_channel { heads * (1 + dk) } else { 2 * heads };
                let qkv = gpu.upload_f32("random", &values(t * heads * (2 * dk + dv), 2.0, 0.0));
                let (ab, params) = (
                    gpu.upload_f32("random", &values(t * gates, 2.0, 0.0)),
                    gpu.upload_f32("random", &values(gates, 2.0, 0.0)),
                );
                let d = DeltaNet {
                    n_k_heads: heads,
                    n_v_heads: heads,
                    dk,
                    dv,
                    qkv: &qkv,
                    ab: &ab,
                    ab_columns: (0, 0),
                    gate_params: &params,
                    per_channel,
                    beta_scale: 1.0,
                    state: &state,
                    out: &out,
                };
                for _ in 0..dispatches {
                    match t {
                        1 => gated_deltanet::recurrent(&gpu, &mut plan, &d, None)?,
                        _ => gated_deltanet::chunked(&gpu, &mut plan, &d, &scratch)?,
                    }
                }
            }
            "rwkv7" => {
                // [r | w | k | a | b | v], w a log decay.
                let x: Vec<f32> = (0..t)
                    .flat_map(|_| {
                        let mut row: Vec<f32> =
                            [0.0, -0.3, 0.0, 0.0, 0.0].iter().flat_map(|&o| values(heads * dk, 0.5, o)).collect();
                        row.extend(values(heads * dv, 0.5, 0.0));
                        row
                    })
                    .collect();
                let x = gpu.upload_f32("x", &x);
                let mixer = Rwkv7 { heads, dk, dv, x: &x };
                for _ in 0..dispatches {
                    match t {
                        1 => mixer.recurrent(&gpu, &mut plan, &state, &out)?,
                        _ => mixer.chunked(&gpu, &mut plan, &state, &out, &scratch)?,
                    }
                }
            }
            _ => {
                let (decay, gates, offset) = match kind {
                    "gla" => (Decay::LogSigmoid(16.0), t * heads * dk, 0.0),
                    "mamba2" => (Decay::Log, t * heads * dk, -0.1),
                    _ => (Decay::PerHead, heads, -0.1),
                };
                let (qkv, gk) = (
                    gpu.upload_f32("random", &values(t * heads * (2 * dk + dv), 2.0, 0.0)),
                    gpu.upload_f32("random", &values(gates, 0.1, offset)),
                );
                let g = Gla {
                    heads,
                    dk,
                    dv,
                    decay,
                    q_scale: 1.0,
                    qkv: &qkv,
                    gk: &gk,
                    state: &state,
                    state_offset: 0,
                    out: &out,
                };
                for _ in 0..dispatches {
                    match t {
                        1 => gla::recurrent(&gpu, &mut plan, &g)?,
                        _ => gla::chunked(&gpu, &mut plan, &g, &scratch)?,
                    }
                }
            }
        }
        let seconds = pollster::block_on(seconds_per_submit(&gpu, &plan, &step, &out, args.reps))? / dispatches as f64;
        let got = pollster::block_on(gpu.read_f32(&out, 0, t * heads * dv))?;
        if got.iter().any(|x| !x.is_finite()) {
            bail!("{kind} ({model} heads) wrote a non-finite output");
        }
        // A decode step's bound is its state's bytes; prefill's is arithmetic, so it reports tokens per second.
        let state_bytes = (heads * dk * dv * 8) as f64;
        let decode = |v: f64| if t == 1 { json!(v) } else { json!(null) };
        rows.push(json!({
            "mixer": kind,
            "model": model,
            "heads": heads,
            "dk": dk,
            "dv": dv,
            "tokens": t,
            "us": seconds * 1e6,
            "tokens_per_s": t as f64 / seconds,
            "state_gb_s": decode(state_bytes / seconds / 1e9),
            "fraction_of_copy": decode(state_bytes / seconds / copy),
        }));
    }
    if print_kernel_report(&gpu, copy, "mixers", &rows, args.json)? {
        return Ok(());
    }
    let header = ["mixer", "heads of", "HxDKxDV", "tokens", "us", "tok/s", "state GB/s", "of copy"];
    println!(
        "{:>15} {:>16} {:>12} {:>7} {:>11} {:>9} {:>11} {:>9}",
        header[0], header[1], header[2], header[3], header[4], header[5], header[6], header[7]
    );
    for r in &rows {
        let count = |key: &str| r[key].as_u64().unwrap_or(0);
        let rate = |key: &str, digits: usize| r[key].as_f64().map_or("-".into(), |v| format!("{v:.digits$}"));
        println!(
            "{:>15} {:>16} {:>12} {:>7} {:>11.1} {:>9.0} {:>11} {:>9}",
            r["mixer"].as_str().unwrap_or(""),
            r["model"].as_str().unwrap_or(""),
            format!("{}x{}x{}", count("heads"), count("dk"), count("dv")),
            count("tokens"),
            r["us"].as_f64().unwrap_or(0.0),
            r["tokens_per_s"].as_f64().unwrap_or(0.0),
            rate("state_gb_s", 2),
            rate("fraction_of_copy", 3),
        );
    }
    Ok(())
}
