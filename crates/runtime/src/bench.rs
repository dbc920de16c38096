//! Speed measurements shared by `ternlight bench` (native) and the engine's `bench` (the browser bench page), so
//! both report the same quantities measured the same way, in the same JSON ([`report`]): prefill throughput and
//! decode latency at several context lengths, one chunkwise prefill against stepping the same tokens one at a
//! time, the device's roofline (a streaming copy's bandwidth, the tiled matmul's throughput), and one decode step
//! timed dispatch by dispatch: GPU time per layer, and per kernel with the bandwidth and throughput its weights
//! and arithmetic achieved. Numbers are measured, never asserted.

use crate::{Result, Session};
use serde_json::{json, Value};
use ternlight_gpu::kernels::copy::copy;
use ternlight_gpu::kernels::sample::Draw;
use ternlight_gpu::plan::{stage_times, DispatchTime, Plan, Step};
use ternlight_gpu::Gpu;
use web_time::Instant;

/// What to measure.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// Context lengths: prompt lengths for prefill, positions for decode.
    pub contexts: Vec<usize>,
    /// Decode steps timed at each context (the median is reported).
    pub decode_steps: usize,
    /// Tokens for the chunkwise-prefill vs token-by-token comparison.
    pub compare_tokens: usize,
    /// Repetitions of each prefill (the best is reported).
    pub reps: usize,
}

impl BenchOptions {
    /// The longest context the measurements reach (the session must hold it).
    pub fn longest(&self) -> usize {
        self.contexts.iter().copied().max().unwrap_or(1).max(self.compare_tokens) + self.decode_steps + 1
    }

    fn check(&self) -> Result<()> {
        if self.contexts.is_empty() || self.contexts.contains(&0) || self.decode_steps == 0 || self.reps == 0 {
            return Err(crate::RuntimeError::Request(
                "bench contexts, decode steps and repetitions must be positive".into(),
            ));
        }
        Ok(())
    }
}

/// Timings at one context length.
#[derive(Clone, Debug)]
pub struct ContextTiming {
    /// Tokens of context.
    pub context: usize,
    /// Seconds of the best prefill of `context` tokens from an empty context.
    pub prefill_s: f64,
    /// Median seconds of one decode step after `context` tokens.
    pub decode_s: f64,
}

/// One chunkwise prefill against the same tokens stepped one at a time.
#[derive(Clone, Debug)]
pub struct SteppingComparison {
    /// Tokens.
    pub tokens: usize,
    /// Seconds of the prefill.
    pub prefill_s: f64,
    /// Seconds of the steps.
    pub stepping_s: f64,
}

/// One forward timed on the GPU dispatch by dispatch: a decode step, or a prefill from an empty context.
#[derive(Clone, Debug)]
pub struct ForwardProfile {
    /// Tokens of context before the forward.
    pub context: usize,
    /// Tokens the forward runs.
    pub tokens: usize,
    /// Every dispatch of the forward, in order.
    pub dispatches: Vec<DispatchTime>,
}

/// Everything [`measure`] times.
#[derive(Clone, Debug)]
pub struct BenchTimings {
    /// One row per context length, in the order asked.
    pub contexts: Vec<ContextTiming>,
    /// Prefill against stepping.
    pub stepping: SteppingComparison,
    /// A decode step after the longest context asked for; `None` where profiling is unavailable (no timestamp
    /// queries, or plans beyond one query set).
    pub decode_profile: Option<ForwardProfile>,
    /// A prefill of the longest context asked for, or of as many tokens as one forward takes; `None` as above.
    pub prefill_profile: Option<ForwardProfile>,
    /// The most device memory held for buffers after any phase, where the backend counts it (natively).
    pub gpu_buffer_bytes_peak: Option<u64>,
}

/// The device's roofline: what a streaming copy moves and what the prefill matmul computes, per second.
#[derive(Clone, Copy, Debug)]
pub struct Roofline {
    /// Bytes per second of a streaming copy, read plus write ([`copy_bandwidth`]).
    pub copy_bytes_per_s: f64,
    /// Floating-point operations per second of the tiled bf16 matmul ([`ternlight_gpu::tune::matmul_flops`]).
    pub matmul_flops_per_s: f64,
}

/// Measures the device's [`Roofline`].
pub async fn roofline(gpu: &Gpu) -> Result<Roofline> {
    Ok(Roofline {
        copy_bytes_per_s: copy_bandwidth(gpu).await?,
        matmul_flops_per_s: ternlight_gpu::tune::matmul_flops(gpu, 2).await?,
    })
}

/// Deterministic token ids below `vocab`.
fn ids(n: usize, vocab: usize) -> Vec<u32> {
    (0..n).map(|i| ((i * 7919 + 13) % vocab) as u32).collect()
}

/// Seconds for one prefill of `n` tokens from an empty context and the greedy draw of the token after them (the
/// timings draw on the GPU and read back one id after each forward, as generation does).
async fn time_prefill(s: &mut Session, n: usize) -> Result<f64> {
    s.reset();
    let prompt = ids(n, s.spec().vocab);
    let start = Instant::now();
    s.prefill_sample(&prompt, &Draw::greedy()).await?;
    Ok(start.elapsed().as_secs_f64())
}

/// Median seconds of one decode step after `context` tokens of context.
async fn time_decode(s: &mut Session, context: usize, steps: usize) -> Result<f64> {
    s.reset();
    let vocab = s.spec().vocab;
    s.prefill(&ids(context, vocab), &[]).await?;
    s.step_sample(1, &Draw::greedy()).await?;
    let mut times = Vec::with_capacity(steps);
    for i in 0..steps {
        let start = Instant::now();
        s.step_sample(((i * 31) % vocab) as u32, &Draw::greedy()).await?;
        times.push(start.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    Ok(times[steps / 2])
}

/// One forward of `tokens` tokens after `context` tokens, profiled (`None` without timestamp queries): one decode
/// step, or a prefill of at most one forward's capacity.
async fn profile_forward(s: &mut Session, context: usize, tokens: usize) -> Result<Option<ForwardProfile>> {
    s.reset();
    let vocab = s.spec().vocab;
    if context > 0 {
        s.prefill(&ids(context, vocab), &[]).await?;
    }
    if !s.set_profiling(true) {
        return Ok(None);
    }
    let ran = match tokens {
        1 => s.step_sample(1, &Draw::greedy()).await,
        _ => s.prefill_sample(&ids(tokens, vocab), &Draw::greedy()).await,
    };
    let dispatches = s.dispatch_times().to_vec();
    s.set_profiling(false);
    ran?;
    Ok(Some(ForwardProfile { context, tokens, dispatches }))
}

/// Runs the timings of `options` on `s` (which ends reset).
pub async fn measure(s: &mut Session, options: &BenchOptions) -> Result<BenchTimings> {
    options.check()?;
    let mut gpu_peak = s.gpu().buffer_memory();
    let mut sample = |s: &Session| gpu_peak = gpu_peak.max(s.gpu().buffer_memory());
    time_prefill(s, 8.min(options.longest())).await?;
    let mut contexts = Vec::with_capacity(options.contexts.len());
    for &context in &options.contexts {
        let mut best = f64::MAX;
        for _ in 0..options.reps {
            best = best.min(time_prefill(s, context).await?);
        }
        contexts.push(ContextTiming {
            context,
            prefill_s: best,
            decode_s: time_decode(s, context, options.decode_steps).await?,
        });
        sample(s);
    }
    let tokens = options.compare_tokens;
    let prefill_s = time_prefill(s, tokens).await?;
    s.reset();
    let start = Instant::now();
    for &id in &ids(tokens, s.spec().vocab) {
        s.step_sample(id, &Draw::greedy()).await?;
    }
    let stepping = SteppingComparison { tokens, prefill_s, stepping_s: start.elapsed().as_secs_f64() };
    let longest = options.contexts.iter().copied().max().unwrap_or(1);
    let decode_profile = profile_forward(s, longest, 1).await?;
    sample(s);
    let prefill_profile = profile_forward(s, 0, longest.min(s.prefill_capacity())).await?;
    s.reset();
    Ok(BenchTimings { contexts, stepping, decode_profile, prefill_profile, gpu_buffer_bytes_peak: gpu_peak })
}

/// The bench's JSON report of `t`, measured on `s` against `roofline`; callers add what only they know (the
/// model's name, load time, host memory, where the tuning came from).
pub fn report(s: &Session, roofline: &Roofline, t: &BenchTimings) -> Value {
    let info = &s.gpu().info;
    let memory = s.memory();
    // Each decode token reads every weight once (a tied embedding is the head; an untied one is read a row at a
    // time, so this bound is a little low for untied models).
    let bound_s = memory.weights as f64 / roofline.copy_bytes_per_s;
    let contexts: Vec<Value> = t
        .contexts
        .iter()
        .map(|c| {
            json!({
                "context": c.context,
                "prefill_tok_s": c.context as f64 / c.prefill_s,
                "prefill_ms": c.prefill_s * 1e3,
                "decode_ms_per_token": c.decode_s * 1e3,
                "decode_fraction_of_roofline": bound_s / c.decode_s,
            })
        })
        .collect();
    let c = &t.stepping;
    json!({
        "model_type": s.spec().model_type,
        "device": { "name": info.name, "backend": info.backend, "type": info.device_type,
                    "shader_f16": info.shader_f16, "subgroups": info.subgroups,
                    "subgroup_size": info.subgroup_size, "timestamps": info.timestamps,
                    "max_storage_buffers": info.max_storage_buffers,
                    "tuning": crate::tuning::to_json(&s.gpu().tuning) },
        "decode_dispatches_per_token": s.decode_dispatches(),
        "long_context_decode": s.long_decode_dispatches()
            .map(|(dispatches, from)| json!({ "dispatches_per_token": dispatches, "from_context": from })),
        "memory": { "weights_bytes": memory.weights, "state_bytes_allocated": memory.state,
                    "gpu_buffer_bytes_peak": t.gpu_buffer_bytes_peak },
        "roofline": { "copy_bytes_per_s": roofline.copy_bytes_per_s, "matmul_flops_per_s": roofline.matmul_flops_per_s,
                      "decode_bound_ms_per_token": bound_s * 1e3 },
        "contexts": contexts,
        "prefill_vs_stepping": { "tokens": c.tokens, "prefill_s": c.prefill_s, "stepping_s": c.stepping_s,
                                 "speedup": c.stepping_s / c.prefill_s },
        "decode_profile": t.decode_profile.as_ref().map(|p| profile_json(p, roofline)),
        "prefill_profile": t.prefill_profile.as_ref().map(|p| profile_json(p, roofline)),
    })
}

/// A profiled forward as JSON: GPU milliseconds per stage (the embedding, each layer, the head) and per kernel,
/// the kernels slowest first, each linear-layer kernel with the weight bandwidth and throughput it achieved and
/// their fractions of the roofline.
fn profile_json(p: &ForwardProfile, roofline: &Roofline) -> Value {
    let mut kernels: Vec<(&str, usize, f64, u64, u64)> = Vec::new();
    for d in &p.dispatches {
        match kernels.iter_mut().find(|k| k.0 == &*d.kernel) {
            Some(k) => {
                k.1 += 1;
                k.2 += d.seconds;
                k.3 += d.weight_bytes;
                k.4 += d.flops;
            }
            None => kernels.push((&d.kernel, 1, d.seconds, d.weight_bytes, d.flops)),
        }
    }
    kernels.sort_by(|a, b| b.2.total_cmp(&a.2));
    let total: f64 = p.dispatches.iter().map(|d| d.seconds).sum();
    let rows: Vec<Value> = kernels
        .iter()
        .map(|&(kernel, dispatches, seconds, bytes, flops)| {
            let mut row = json!({ "kernel": kernel, "dispatches": dispatches, "ms": seconds * 1e3,
                                  "share": seconds / total });
            if bytes > 0 && seconds > 0.0 {
                let (bytes_per_s, flops_per_s) = (bytes as f64 / seconds, flops as f64 / seconds);
                row["weight_gb_s"] = json!(bytes_per_s / 1e9);
                row["of_copy_bandwidth"] = json!(bytes_per_s / roofline.copy_bytes_per_s);
                row["gflop_s"] = json!(flops_per_s / 1e9);
                row["of_matmul_peak"] = json!(flops_per_s / roofline.matmul_flops_per_s);
            }
            row
        })
        .collect();
    let stages: Vec<f64> = stage_times(&p.dispatches).iter().map(|s| s * 1e3).collect();
    json!({ "context": p.context, "tokens": p.tokens, "gpu_ms": total * 1e3, "stages_ms": stages, "kernels": rows })
}

/// Copies run back to back for the bandwidth figure.
const COPIES: usize = 16;

/// Workgroup sizes the copy is timed with besides the device's tuned one: the bandwidth is the best any achieves,
/// so a tuning picked for other kernels does not lower the roofline.
const COPY_WORKGROUPS: [u32; 2] = [64, 256];

/// Bytes per second a streaming copy moves (read plus write) through buffers of up to 64 MiB: the best of two
/// submits at each workgroup size.
pub async fn copy_bandwidth(gpu: &Gpu) -> Result<f64> {
    let floats = (gpu.info.max_binding.min(64 << 20) / 16 * 4) as usize;
    let (src, dst) = (gpu.zeros("copy source", floats), gpu.zeros("copy destination", floats));
    let step = Step { pos0: 0, n_tokens: 1, logit_rows: Vec::new() };
    let mut sizes = COPY_WORKGROUPS.to_vec();
    if !sizes.contains(&gpu.tuning.wg) {
        sizes.push(gpu.tuning.wg);
    }
    let mut best = f64::MAX;
    for wg in sizes {
        let mut plan = Plan::new(gpu);
        for _ in 0..COPIES {
            copy(gpu, &mut plan, &src, &dst, wg)?;
        }
        for _ in 0..2 {
            let start = Instant::now();
            plan.submit(gpu, &step, &[], None);
            gpu.read_f32(&dst, 0, 1).await?;
            best = best.min(start.elapsed().as_secs_f64());
        }
    }
    Ok((COPIES * 2 * 4 * floats) as f64 / best)
}
