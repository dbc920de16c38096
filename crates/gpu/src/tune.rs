//! Picks the kernel sizes ([`Tuning`]) that run fastest on this device: each candidate's decode matrix-vector
//! kernel and prefill matmul are timed on bf16 weights of a real model's shape (2048 x 2048), the ternary integer
//! matrix-vector kernel on ternary weights of that shape (where the device has it), decode attention's key splits
//! on one token against 4096 cached keys, and the fastest of each kind is kept. Callers cache the result per
//! adapter (the runtime's `tuning` module natively, a Cache Storage record in the browser). Timings wait on a
//! one-float readback, so they run in the browser too.

use crate::buffer::Weight;
use crate::device::Gpu;
use crate::error::Result;
use crate::kernels::attention::{decode, Attention, DecodeSpread};
use crate::kernels::matmul::{linear, Linear, MatmulShape};
use crate::kernels::ternary::{packed_stride, quantised_matvec};
use crate::kernels::Tuning;
use crate::plan::{Plan, Step};
use ternlight_core::dtype::DType;
use ternlight_core::spec::AttentionMask;
use web_time::Instant;

/// Matrix-vector candidates: invocations per workgroup (also the 1-D kernels'), outputs per workgroup (at most the
/// invocations: each stores one), stored words per invocation step (0: element by element; multiples of 4 load
/// them a quad at a time), and outputs per invocation over all of K (0: the invocations split K instead).
const MATVEC: [(u32, u32, u32, u32); 18] = [
    (8, 8, 1, 0),
    (8, 8, 4, 0),
    (8, 4, 4, 0),
    (8, 8, 8, 0),
    (16, 8, 1, 0),
    (16, 8, 4, 0),
    (32, 4, 1, 0),
    (32, 4, 0, 0),
    (32, 4, 4, 0),
    (64, 4, 1, 0),
    (64, 8, 2, 0),
    (128, 4, 1, 0),
    (256, 2, 4, 0),
    (8, 8, 4, 1),
    (8, 8, 4, 2),
    (8, 8, 4, 4),
    (8, 8, 8, 2),
    (8, 8, 4, 8),
];
/// Matmul candidates: rows and columns per invocation, workgroup width and height, and whether subgroups share
/// input loads (taken where the device's subgroup size divides the width).
const MATMUL: [(u32, u32, u32, u32, bool); 10] = [
    (4, 4, 8, 8, false),
    (2, 4, 16, 8, false),
    (4, 8, 8, 8, false),
    (8, 4, 8, 8, false),
    (2, 2, 16, 16, false),
    (16, 8, 8, 1, false),
    (16, 8, 8, 1, true),
    (16, 4, 8, 1, true),
    (8, 8, 8, 1, true),
    (4, 4, 64, 1, true),
];
/// Ternary integer matrix-vector candidates: invocations per workgroup, outputs per workgroup (or per invocation
/// where whole rows are), whole rows per invocation, and two 16-bit products per multiply (else `dot4I8Packed`).
const TERNARY_MATVEC: [(u32, u32, bool, bool); 13] = [
    (8, 8, false, false),
    (16, 8, false, false),
    (8, 4, false, false),
    (32, 4, false, false),
    (64, 4, false, false),
    (128, 2, false, false),
    (8, 8, false, true),
    (64, 4, false, true),
    (8, 8, true, false),
    (8, 8, true, true),
    (8, 4, true, true),
    (8, 16, true, true),
    (16, 8, true, true),
];
/// Decode attention candidates: the most workgroups each head's keys are split over.
const ATTN_SPLITS: [u32; 6] = [1, 2, 4, 8, 16, 32];
/// The timed decode attention's heads: query heads, KV heads, head width (SmolLM2-135M's).
const ATTN_SHAPE: (usize, usize, usize) = (9, 3, 64);
/// Keys the timed decode token attends to.
pub const ATTN_KEYS: usize = 4096;
/// Contexts at which decode attention is timed split (as tuning chose) and unsplit, to find where splitting starts
/// to pay (`attn_split_from`).
const SPLIT_FROM: [usize; 6] = [64, 128, 256, 512, 1024, 2048];
/// The timed layer: `[N, K]` bf16 weights, and the rows a prefill chunk multiplies.
const N: usize = 2048;
const K: usize = 2048;
const PREFILL_ROWS: usize = 64;

/// A kernel whose sizes tuning picks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TunedKernel {
    /// Decode's matrix-vector product (float weights).
    Matvec,
    /// Prefill's tiled matmul.
    Matmul,
    /// Decode's ternary product on int8 activations, its quantiser included.
    TernaryMatvec,
    /// Decode attention at a long context, its second pass included where keys are split.
    DecodeAttention,
    /// Decode attention at a shorter context, split as [`TunedKernel::DecodeAttention`] chose and unsplit: the
    /// context from which a session splits (`attn_split_from`, which in these trials holds the context timed).
    SplitFrom,
}

impl TunedKernel {
    /// The name reports use.
    pub fn name(self) -> &'static str {
        match self {
            TunedKernel::Matvec => "matvec",
            TunedKernel::Matmul => "matmul",
            TunedKernel::TernaryMatvec => "ternary_matvec",
            TunedKernel::DecodeAttention => "decode_attention",
            TunedKernel::SplitFrom => "split_from",
        }
    }
}

/// Every candidate: `base` with one kernel's sizes changed, and that kernel; the ternary ones only where the
/// device has packed integer dot products (`packed_dot`).
pub fn candidates(base: &Tuning, packed_dot: bool) -> Vec<(TunedKernel, Tuning)> {
    // Rows of any length take the row-per-invocation candidates while they are timed; the device's limit stays in
    // the tuning picked.
    let vector = MATVEC
        .iter()
        .map(|&(wg, nr, vw, rpl)| (TunedKernel::Matvec, Tuning { wg, nr, vw, rpl, rpl_row_bytes: 0, ..base.clone() }));
    let tiled = MATMUL.iter().map(|&(tm, tn, wg_x, wg_y, broadcast)| {
        (TunedKernel::Matmul, Tuning { tm, tn, wg_x, wg_y, broadcast, ..base.clone() })
    });
    let ternary =
        TERNARY_MATVEC.iter().filter(|_| packed_dot).map(|&(ternary_wg, ternary_nr, ternary_rows, ternary_swar)| {
            let tuning = Tuning { ternary_wg, ternary_nr, ternary_rows, ternary_swar, ..base.clone() };
            (TunedKernel::TernaryMatvec, tuning)
        });
    let attention =
        ATTN_SPLITS.iter().map(|&attn_splits| (TunedKernel::DecodeAttention, Tuning { attn_splits, ..base.clone() }));
    vector.chain(tiled).chain(ternary).chain(attention).collect()
}

/// One candidate's mean seconds per product.
#[derive(Clone, Debug)]
pub struct Trial {
    /// The sizes tried (only the fields of its kernel differ from the defaults).
    pub tuning: Tuning,
    /// Which kernel.
    pub kernel: TunedKernel,
    /// Mean wall time of one product, seconds.
    pub seconds: f64,
}

/// Times every candidate (`reps` dispatches each, after a warm-up) and returns the fastest tuning with all trials.
/// Decode attention at its fastest split count above 1 and unsplit is then timed at each of [`SPLIT_FROM`]'s
/// contexts, and splitting starts where it stops losing ([`split_from`]; it matters only where splitting won at
/// [`ATTN_KEYS`]). The device's tuning is left as it was.
pub async fn autotune(gpu: &mut Gpu, reps: usize) -> Result<(Tuning, Vec<Trial>)> {
    let start = gpu.tuning.clone();
    let (x, w, y) = layer(gpu, PREFILL_ROWS)?;
    let ternary = TernaryLayer::upload(gpu)?;
    let attention = AttentionCase::upload(gpu)?;
    let mut trials = Vec::new();
    for (kernel, tuning) in candidates(&start, gpu.info.packed_dot) {
        gpu.tuning = tuning.clone();
        let timed = match kernel {
            TunedKernel::Matvec => time(gpu, (&x, &w, &y), MatmulShape::Vector, 1, reps).await,
            TunedKernel::Matmul => time(gpu, (&x, &w, &y), MatmulShape::Tiled, PREFILL_ROWS, reps).await,
            TunedKernel::TernaryMatvec => time_ternary(gpu, (&x, &ternary, &y), reps).await,
            TunedKernel::DecodeAttention | TunedKernel::SplitFrom => attention.time(gpu, ATTN_KEYS, reps).await,
        };
        gpu.tuning = start.clone();
        trials.push(Trial { tuning, kernel, seconds: timed? });
    }
    // The sizes of the fastest trial of `kernel` that `keep` accepts.
    let fastest_where = |kernel, keep: &dyn Fn(&Tuning) -> bool| {
        let of_kernel = trials.iter().filter(|t| t.kernel == kernel && keep(&t.tuning));
        of_kernel.min_by(|a, b| a.seconds.total_cmp(&b.seconds)).map(|t| t.tuning.clone())
    };
    let fastest = |kernel| fastest_where(kernel, &|_| true).unwrap_or_else(|| start.clone());
    let (vector, tiled, ternary) =
        (fastest(TunedKernel::Matvec), fastest(TunedKernel::Matmul), fastest(TunedKernel::TernaryMatvec));
    let splits = fastest(TunedKernel::DecodeAttention).attn_splits;
    // The fastest split count above 1, whether or not it beat one workgroup per head at ATTN_KEYS.
    let split = fastest_where(TunedKernel::DecodeAttention, &|t| t.attn_splits > 1).map(|t| t.attn_splits);
    let mut attn_split_from = start.attn_split_from;
    if let Some(split) = split {
        let mut timings = Vec::new();
        for keys in SPLIT_FROM {
            let mut seconds = [0.0; 2];
            for (i, attn_splits) in [1, split].into_iter().enumerate() {
                let tuning = Tuning { attn_splits, attn_split_from: keys as u32, ..start.clone() };
                gpu.tuning = tuning.clone();
                let timed = attention.time(gpu, keys, reps).await;
                gpu.tuning = start.clone();
                seconds[i] = timed?;
                trials.push(Trial { tuning, kernel: TunedKernel::SplitFrom, seconds: seconds[i] });
            }
            timings.push((keys, seconds[0], seconds[1]));
        }
        attn_split_from = split_from(&timings, ATTN_KEYS);
    }
    let best = Tuning {
        attn_splits: splits,
        attn_split_from,
        ternary_wg: ternary.ternary_wg,
        ternary_nr: ternary.ternary_nr,
        ternary_rows: ternary.ternary_rows,
        ternary_swar: ternary.ternary_swar,
        wg: vector.wg,
        nr: vector.nr,
        rpl: vector.rpl,
        vw: vector.vw,
        tm: tiled.tm,
        tn: tiled.tn,
        wg_x: tiled.wg_x,
        wg_y: tiled.wg_y,
        broadcast: tiled.broadcast,
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

/// The timed layer's shape as ternary codes where the device has the integer path (else an empty stand-in), with
/// the packed record of one quantised input row.
struct TernaryLayer {
    w: Weight,
    record: wgpu::Buffer,
}

impl TernaryLayer {
    fn upload(gpu: &Gpu) -> Result<Self> {
        let (n, k) = if gpu.info.packed_dot { (N, K) } else { (1, 16) };
        let codes: Vec<i8> = (0..n * k).map(|i| (i % 3) as i8 - 1).collect();
        Ok(TernaryLayer {
            w: Weight::upload_ternary(gpu, "tune ternary weights", &codes, n, k, gpu.info.max_binding)?,
            record: gpu.zeros("tune xq record", packed_stride(k, 0)),
        })
    }
}

/// Mean seconds of one ternary product of the timed layer (quantiser and integer matvec) at the device's tuning.
async fn time_ternary(gpu: &Gpu, (x, t, y): (&wgpu::Buffer, &TernaryLayer, &wgpu::Buffer), reps: usize) -> Result<f64> {
    let mut plan = Plan::new(gpu);
    quantised_matvec(gpu, &mut plan, x, &t.record, &t.w, y)?;
    seconds_per_submit(gpu, &plan, &Step { pos0: 0, n_tokens: 1, logit_rows: vec![] }, y, reps).await
}

/// The timed decode attention's buffers: one token's queries, [`ATTN_KEYS`] cached keys and values, its output
/// and scratch enough for the most splits.
struct AttentionCase {
    q: wgpu::Buffer,
    kv: wgpu::Buffer,
    out: wgpu::Buffer,
    scratch: wgpu::Buffer,
}

impl AttentionCase {
    fn upload(gpu: &Gpu) -> Result<Self> {
        let (heads, kv, dim) = ATTN_SHAPE;
        let most = DecodeSpread { splits: ATTN_SPLITS[ATTN_SPLITS.len() - 1], ..DecodeSpread::of(gpu) };
        let cache: Vec<f32> = (0..ATTN_KEYS * kv * dim).map(|i| ((i % 13) as f32 - 6.0) / 16.0).collect();
        Ok(AttentionCase {
            q: gpu.upload_f32("tune queries", &vec![0.25; heads * dim]),
            kv: gpu.upload_f32("tune kv cache", &cache),
            out: gpu.zeros("tune attention output", heads * dim),
            scratch: gpu.zeros("tune attention scratch", heads * most.scratch_row(dim, ATTN_KEYS)),
        })
    }

    /// Mean seconds of one decode token's attention to `keys` keys (at most [`ATTN_KEYS`]) at the device's tuning
    /// (keys and values share a buffer).
    async fn time(&self, gpu: &Gpu, keys: usize, reps: usize) -> Result<f64> {
        let (heads, kv, dim) = ATTN_SHAPE;
        let causal = AttentionMask::default();
        let a = Attention::new(
            (&self.q, &self.out),
            (&self.kv, &self.kv, ATTN_KEYS),
            (heads, kv, dim),
            &causal,
            1.0 / (dim as f32).sqrt(),
        );
        let mut plan = Plan::new(gpu);
        decode(gpu, &mut plan, &a, &self.scratch, ATTN_KEYS)?;
        let step = Step { pos0: keys as u32 - 1, n_tokens: 1, logit_rows: vec![] };
        seconds_per_submit(gpu, &plan, &step, &self.out, reps).await
    }
}

/// Where decode attention starts splitting keys: the shortest context of `timings` (`(keys, unsplit seconds, split
/// seconds)`, keys increasing) from which the split kernel ran no slower than the unsplit one at every longer
/// context timed, or `longest` (the context at which splitting won) where it lost at the longest of them.
pub fn split_from(timings: &[(usize, f64, f64)], longest: usize) -> u32 {
    let mut from = longest;
    for &(keys, unsplit, split) in timings.iter().rev() {
        if split > unsplit {
            break;
        }
        from = keys;
    }
    from as u32
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

#[cfg(test)]
mod tests {
    use super::split_from;

    #[test]
    fn splitting_starts_where_it_stops_losing() {
        let mixed = [(64, 1.0, 2.0), (128, 1.0, 0.9), (256, 1.0, 1.1), (512, 2.0, 2.0), (1024, 3.0, 1.0)];
        assert_eq!(split_from(&mixed, 4096), 512);
        assert_eq!(split_from(&[(64, 1.0, 0.5), (128, 1.0, 0.5)], 4096), 64);
        assert_eq!(split_from(&[(64, 1.0, 0.5), (128, 1.0, 1.5)], 4096), 4096);
    }
}
