//! `ternlight bench-linear`: linear layers with bf16 weights against ternary weights (2 bits each, int8 activations;
//! through the f32 kernels and the integer path) on given shapes, beside the device's streaming-copy bandwidth (the
//! memory roofline, measured as `bench` does): one token (decode's matrix-vector kernels), or with `--tokens` a
//! prefill chunk (the tiled kernels). Measured only.

use crate::bench::{copy_bandwidth, dims, print_kernel_report};
use anyhow::Result;
use serde_json::json;
use ternlight_core::dtype::DType;
use ternlight_core::sampling::Rng;
use ternlight_gpu::buffer::Weight;
use ternlight_gpu::kernels::matmul::{linear, Linear, MatmulShape};
use ternlight_gpu::kernels::ternary::{act_quant, dp4_ready, matvec_dp4, packed_stride, MatvecDp4, Quantised};
use ternlight_gpu::plan::{Plan, Rows, Step};
use ternlight_gpu::tune::seconds_per_submit;
use ternlight_gpu::Gpu;

#[derive(clap::Args)]
pub struct Args {
    /// Shapes as OUTxIN (BitNet b1.58 2B4T's by default).
    #[arg(long, value_delimiter = ',', default_values = ["2560x2560", "6912x2560", "2560x6912"])]
    shapes: Vec<String>,
    /// Tokens per product: 1 times decode's kernels, more a prefill chunk's.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    tokens: u32,
    /// Timed repetitions per measurement.
    #[arg(long, default_value_t = 50)]
    reps: usize,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Seconds per submit of `plan` over `tokens`, which writes `y`.
fn time_plan(gpu: &Gpu, plan: &Plan, (y, tokens): (&wgpu::Buffer, u32), reps: usize) -> Result<f64> {
    let step = Step { pos0: 0, n_tokens: tokens, logit_rows: vec![] };
    Ok(pollster::block_on(seconds_per_submit(gpu, plan, &step, y, reps))?)
}

pub fn run(args: Args) -> Result<()> {
    let mut gpu = Gpu::new_blocking()?;
    ternlight_runtime::tuning::apply_cached(&mut gpu);
    let copy = copy_bandwidth(&gpu)?;
    let mut rng = Rng::new(7);
    let mut rows = Vec::new();
    for shape in &args.shapes {
        let d = dims(shape, 2, "OUTxIN")?;
        let (n, k) = (d[0], d[1]);
        // bf16 is the high half of an f32.
        let raw: Vec<u8> =
            (0..n * k).flat_map(|_| (((rng.next_f32() - 0.5).to_bits() >> 16) as u16).to_le_bytes()).collect();
        let bf16 = Weight::upload(&gpu, "bf16", DType::BF16, n, k, &raw, gpu.info.max_binding)?;
        let codes: Vec<i8> = (0..n * k).map(|_| (rng.next_f32() * 3.0).floor() as i8 - 1).collect();
        let ternary = Weight::upload_ternary(&gpu, "ternary", &codes, n, k, gpu.info.max_binding)?;
        let m = args.tokens as usize;
        let widest = 4 * m as u64 * n.max(k) as u64;
        if widest > gpu.info.max_binding {
            anyhow::bail!(
                "--tokens {m} of shape {shape} need {widest}-byte inputs or outputs, over the device's {}-byte \
                 storage binding limit",
                gpu.info.max_binding
            );
        }
        let x = gpu.upload_f32("x", &(0..m * k).map(|_| rng.next_f32() - 0.5).collect::<Vec<_>>());
        let (xq, y) = (gpu.zeros("xq", m * k), gpu.zeros("y", m * n));
        let kernels = if m == 1 { MatmulShape::Vector } else { MatmulShape::Tiled };
        let timed = (&y, args.tokens);
        let mut plan = Plan::new(&gpu);
        linear(&gpu, &mut plan, &Linear::new(&x, &bf16, &y, kernels))?;
        let t_bf16 = time_plan(&gpu, &plan, timed, args.reps)?;
        let mut plan = Plan::new(&gpu);
        act_quant(&gpu, &mut plan, (&x, Quantised::Float(&xq)), k, Rows::Tokens, None)?;
        linear(&gpu, &mut plan, &Linear::new(&xq, &ternary, &y, kernels))?;
        let t_ternary = time_plan(&gpu, &plan, timed, args.reps)?;
        let t_dp4 = match dp4_ready(&gpu, &ternary) {
            true => {
                // As the runtime records it: prefill chunks in tiles of `tm` tokens.
                let record = gpu.zeros("xq record", m * packed_stride(k, 0));
                let mut plan = Plan::new(&gpu);
                act_quant(&gpu, &mut plan, (&x, Quantised::Packed(&record)), k, Rows::Tokens, None)?;
                let tile_rows = if m == 1 { 1 } else { gpu.tuning.tm };
                matvec_dp4(&gpu, &mut plan, &MatvecDp4 { tile_rows, ..MatvecDp4::new(&record, &ternary, 1.0, &y) })?;
                Some(time_plan(&gpu, &plan, timed, args.reps)?)
            }
            false => None,
        };
        let bits = ternary.bytes() as f64 * 8.0 / (n * k) as f64;
        rows.push(json!({
            "shape": shape,
            "tokens": m,
            "bf16_us": t_bf16 * 1e6,
            "ternary_us": t_ternary * 1e6,
            "speedup": t_bf16 / t_ternary,
            "ternary_dp4_us": t_dp4.map(|t| t * 1e6),
            "dp4_speedup": t_dp4.map(|t| t_bf16 / t),
            "bf16_weight_gb_s": bf16.bytes() as f64 / t_bf16 / 1e9,
            "ternary_weight_gb_s": ternary.bytes() as f64 / t_ternary / 1e9,
            "ternary_bits_per_weight": bits,
        }));
    }
    if print_kernel_report(&gpu, copy, "shapes", &rows, args.json)? {
        return Ok(());
    }
    println!(
        "{:>12} {:>10} {:>12} {:>8} {:>10} {:>8} {:>12} {:>14} {:>6}",
        "shape", "bf16 us", "ternary us", "speedup", "int8 us", "speedup", "bf16 GB/s", "ternary GB/s", "bits"
    );
    for r in &rows {
        println!(
            "{:>12} {:>10.1} {:>12.1} {:>7.2}x {:>10.1} {:>7.2}x {:>12.2} {:>14.2} {:>6.3}",
            r["shape"].as_str().unwrap_or(""),
            r["bf16_us"].as_f64().unwrap_or(0.0),
            r["ternary_us"].as_f64().unwrap_or(0.0),
            r["speedup"].as_f64().unwrap_or(0.0),
            r["ternary_dp4_us"].as_f64().unwrap_or(f64::NAN),
            r["dp4_speedup"].as_f64().unwrap_or(f64::NAN),
            r["bf16_weight_gb_s"].as_f64().unwrap_or(0.0),
            r["ternary_weight_gb_s"].as_f64().unwrap_or(0.0),
            r["ternary_bits_per_weight"].as_f64().unwrap_or(0.0),
        );
    }
    Ok(())
}
