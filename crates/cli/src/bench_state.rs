//! `ternlight bench-state`: one decode token of each recurrent mixer (Gated DeltaNet, Kimi Delta Attention, GLA,
//! the Mamba2 scan, Lightning attention, RWKV-7) at the head shapes of real models, on random inputs, beside the
//! device's streaming-copy bandwidth. A decode step of these mixers reads and writes its whole state once, so state
//! bytes over time against the copy bandwidth is their roofline. Measured only.

use crate::bench::{copy_bandwidth, print_kernel_report};
use anyhow::{bail, Result};
use serde_json::json;
use ternlight_core::sampling::Rng;
use ternlight_gpu::kernels::gated_deltanet::{self, DeltaNet};
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
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// A timed mixer: its kind, the model whose heads it takes, and (heads, key channels, value channels).
type Case = (&'static str, &'static str, (usize, usize, usize));

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
    if args.reps == 0 {
        bail!("--reps takes a count of at least 1");
    }
    let copy = copy_bandwidth(&gpu)?;
    let mut rng = Rng::new(5);
    let mut random = |n: usize, scale: f32| {
        let v: Vec<f32> = (0..n).map(|_| (rng.next_f32() - 0.5) * scale).collect();
        gpu.upload_f32("random", &v)
    };
    let step = Step { pos0: 0, n_tokens: 1, logit_rows: vec![] };
    let mut rows = Vec::new();
    for (kind, model, (heads, dk, dv)) in CASES {
        let state = random(heads * dk * dv, 0.5);
        let out = gpu.zeros("out", heads * dv);
        let mut plan = Plan::new(&gpu);
        match kind {
            "gated-deltanet" | "kda" => {
                let per_channel = kind == "kda";
                let gates = if per_channel { heads * (1 + dk) } else { 2 * heads };
                let (qkv, ab, params) = (random(heads * (2 * dk + dv), 2.0), random(gates, 2.0), random(gates, 2.0));
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
                gated_deltanet::recurrent(&gpu, &mut plan, &d, None)?;
            }
            "rwkv7" => {
                let x = random(5 * heads * dk + heads * dv, 0.5);
                Rwkv7 { heads, dk, dv, x: &x }.recurrent(&gpu, &mut plan, &state, &out)?;
            }
            _ => {
                let (decay, gates) = match kind {
                    "gla" => (Decay::LogSigmoid(16.0), heads * dk),
                    "mamba2" => (Decay::Log, heads * dk),
                    _ => (Decay::PerHead, heads),
                };
                let (qkv, gk) = (random(heads * (2 * dk + dv), 2.0), random(gates, 0.1));
                let g = Gla { heads, dk, dv, decay, q_scale: 1.0, qkv: &qkv, gk: &gk, state: &state, state_offset: 0, out: &out };
                gla::recurrent(&gpu, &mut plan, &g)?;
            }
        }
        let seconds = pollster::block_on(seconds_per_submit(&gpu, &plan, &step, &out, args.reps))?;
        let got = pollster::block_on(gpu.read_f32(&out, 0, heads * dv))?;
        if got.iter().any(|x| !x.is_finite()) {
            bail!("{kind} ({model} heads) wrote a non-finite output");
        }
        let state_bytes = (heads * dk * dv * 8) as f64;
        rows.push(json!({
            "mixer": kind,
            "model": model,
            "heads": heads,
            "dk": dk,
            "dv": dv,
            "us": seconds * 1e6,
            "state_gb_s": state_bytes / seconds / 1e9,
            "fraction_of_copy": state_bytes / seconds / copy,
        }));
    }
    if print_kernel_report(&gpu, copy, "mixers", &rows, args.json)? {
        return Ok(());
    }
    println!("{:>15} {:>16} {:>12} {:>10} {:>11} {:>9}", "mixer", "heads of", "HxDKxDV", "us", "state GB/s", "of copy");
    for r in &rows {
        let count = |key: &str| r[key].as_u64().unwrap_or(0);
        println!(
            "{:>15} {:>16} {:>12} {:>10.1} {:>11.2} {:>9.3}",
            r["mixer"].as_str().unwrap_or(""),
            r["model"].as_str().unwrap_or(""),
            format!("{}x{}x{}", count("heads"), count("dk"), count("dv")),
            r["us"].as_f64().unwrap_or(0.0),
            r["state_gb_s"].as_f64().unwrap_or(0.0),
            r["fraction_of_copy"].as_f64().unwrap_or(0.0),
        );
    }
    Ok(())
}
