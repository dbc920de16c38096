//! Picks the kernel sizes ([`Tuning`]) that run fastest on this device: each candidate's decode matrix-vector
//! kernel and prefill matmul are timed on bf16 weights of a real model's shape (2048 x 2048), and the fastest of
//! each kind is kept. Callers cache the result per adapter (the runtime's `tuning` module natively, a Cache Storage
//! record in the browser). Timings wait on a one-float readback, so they run in the browser too.

use crate::buffer::Weight;
use crate::device::Gpu;
use crate::error::Result;
use crate::kernels::matmul::{linear, Linear, MatmulShape};
use crate::kernels::Tuning;
use crate::plan::{Plan, Step};
use ternlight_core::dtype::DType;
use web_time::Instant;

/// Matrix-vector candidates: invocations per workgroup (also the 1-D kernels'), outputs per workgroup, stored words
/// per invocation step (0: element by element).
const MATVEC: [(u32, u32, u32); 8] =
    [(8, 8, 1), (16, 8, 1), (32, 4, 1), (32, 4, 0), (64, 4, 1), (64, 8, 2), (128, 4, 1), (256, 2, 4)];
/// Matmul candidates: rows and columns per invocation, workgroup width and height.
const MATMUL: [(u32, u32, u32, u32); 5] = [(4, 4, 8, 8), (2, 4, 16, 8), (4, 8, 8, 8), (8, 4, 8, 8), (2, 2, 16, 16)];
/// The timed layer: `[N, K]` bf16 weights, and the rows a prefill chunk multiplies.
const N: usize = 2048;
const K: usize = 2048;
const PREFILL_ROWS: usize = 64;

/// Every candidate: `base` with one kernel's sizes changed, and that kernel.
pub fn candidates(base: &Tuning) -> Vec<(MatmulShape, Tuning)> {
    let vector = MATVEC.iter().map(|&(wg, nr, vw)| (MatmulShape::Vector, Tuning { wg, nr, vw, ..base.clone() }));
    let tiled =
        MATMUL.iter().map(|&(tm, tn, wg_x, wg_y)| (MatmulShape::Tiled, Tuning { tm, tn, wg_x, wg_y, ..base.clone() }));
    vector.chain(tiled).collect()
}

/// One candidate's mean seconds per product.
#[derive(Clone, Debug)]
pub struct Trial {
    /// The sizes tried (only the fields of its kernel differ from the defaults).
    pub tuning: Tuning,
    /// Which kernel: decode's matrix-vector product or prefill's matmul.
    pub shape: MatmulShape,
    /// Mean wall time of one dispatch, seconds.
    pub seconds: f64,
}

/// Times every candidate (`reps` dispatches each, after a warm-up) and returns the fastest tuning with all trials.
/// The device's tuning is left as it was.
pub async fn autotune(gpu: &mut Gpu, reps: usize) -> Result<(Tuning, Vec<Trial>)> {
    let start = gpu.tuning.clone();
    let (x, w, y) = layer(gpu, PREFILL_ROWS)?;
    let mut trials = Vec::new();
    for (shape, tuning) in candidates(&start) {
        gpu.tuning = tuning.clone();
        let rows = if shape == MatmulShape::Vector { 1 } else { PREFILL_ROWS };
        let timed = time(gpu, (&x, &w, &y), shape, rows, reps).await;
        gpu.tuning = start.clone();
        trials.push(Trial { tuning, shape, seconds: timed? });
    }
    let fastest = |shape| {
        trials
            .iter()
            .filter(|t| t.shape == shape)
            .min_by(|a, b| a.seconds.total_cmp(&b.seconds))
            .map(|t| t.tuning.clone())
    };
    let (vector, tiled) =
        (fastest(MatmulShape::Vector).unwrap_or_default(), fastest(MatmulShape::Tiled).unwrap_or_default());
    let best = Tuning {
        wg: vector.wg,
        nr: vector.nr,
        vw: vector.vw,
        tm: tiled.tm,
        tn: tiled.tn,
        wg_x: tiled.wg_x,
        wg_y: tiled.wg_y,
        ..start
    };
    Ok((best, trials))
}

/// The timed layer for up to `rows` input rows: input, `[N, K]` bf16 weights, output.
fn layer(gpu: &Gpu, rows: usize) -> Result<(wgpu::Buffer, Weight, wgpu::Buffer)> {
    let bits: Vec<u8> =
        (0..N * K).flat_map(|i| half::bf16::from_f32(((i % 7) as f32 - 3.0) / 64.0).to_le_bytes()).collect();
    let w = Weight::upload(gpu, "tune weights", DType::BF16, N, K, &bits, gpu.info.max_binding)?;
    Ok((gpu.upload_f32("tune input", &vec![0.5; rows * K]), w, gpu.zeros("tune output", rows * N)))
}

/// Rows of the product [`matmul_flops`] times.
const PEAK_ROWS: usize = 256;

/// Floating-point operations per second of the prefill matmul at the device's tuning, on the timed layer with
/// 256 input rows: the compute side of the roofline that `bench` holds kernels against.
pub async fn matmul_flops(gpu: &Gpu, reps: usize) -> Result<f64> {
    let (x, w, y) = layer(gpu, PEAK_ROWS)?;
    let seconds = time(gpu, (&x, &w, &y), MatmulShape::Tiled, PEAK_ROWS, reps).await?;
    Ok((2 * PEAK_ROWS * N * K) as f64 / seconds)
}

/// Mean seconds of one `rows`-row product `y = x W^T` with the device's current tuning.
async fn time(
    gpu: &Gpu,
    (x, w, y): (&wgpu::Buffer, &Weight, &wgpu::Buffer),
    shape: MatmulShape,
    rows: usize,
    reps: usize,
) -> Result<f64> {
    let mut plan = Plan::new(gpu);
    linear(gpu, &mut plan, &Linear::new(x, w, y, shape))?;
    seconds_per_submit(gpu, &plan, &Step { pos0: 0, n_tokens: rows as u32, logit_rows: vec![] }, y, reps).await
}

/// Mean wall seconds of one submit of `plan` at `step`, over `reps` submits after a warm-up one; reading back one
/// float of `output` (a buffer the plan writes) marks the end of the work.
pub async fn seconds_per_submit(
    gpu: &Gpu,
    plan: &Plan,
    step: &Step,
    output: &wgpu::Buffer,
    reps: usize,
) -> Result<f64> {
    plan.submit(gpu, step, &[], None);
    gpu.read_f32(output, 0, 1).await?;
    let started = Instant::now();
    for _ in 0..reps.max(1) {
        plan.submit(gpu, step, &[], None);
    }
    gpu.read_f32(output, 0, 1).await?;
    gpu.check_errors("timing a plan")?;
    Ok(started.elapsed().as_secs_f64() / reps.max(1) as f64)
}
