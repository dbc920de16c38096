//! Speed measurements shared by `ternlight bench` (native) and the engine's `bench` (the browser bench page), so
//! both report the same quantities measured the same way: prefill throughput and decode latency at several
//! context lengths, one chunkwise prefill against stepping the same tokens one at a time, and a streaming copy's
//! bandwidth (the memory roofline decode is held against). Numbers are measured, never asserted.

use crate::{Result, Session};
use ternlight_gpu::kernels::copy::copy;
use ternlight_gpu::kernels::sample::Draw;
use ternlight_gpu::plan::{Plan, Step};
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

/// Everything [`measure`] times.
#[derive(Clone, Debug)]
pub struct BenchTimings {
    /// One row per context length, in the order asked.
    pub contexts: Vec<ContextTiming>,
    /// Prefill against stepping.
    pub stepping: SteppingComparison,
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

/// Runs the timings of `options` on `s` (which ends reset).
pub async fn measure(s: &mut Session, options: &BenchOptions) -> Result<BenchTimings> {
    options.check()?;
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
    }
    let tokens = options.compare_tokens;
    let prefill_s = time_prefill(s, tokens).await?;
    s.reset();
    let start = Instant::now();
    for &id in &ids(tokens, s.spec().vocab) {
        s.step_sample(id, &Draw::greedy()).await?;
    }
    let stepping = SteppingComparison { tokens, prefill_s, stepping_s: start.elapsed().as_secs_f64() };
    s.reset();
    Ok(BenchTimings { contexts, stepping })
}

/// Copies run back to back for the bandwidth figure.
const COPIES: usize = 16;

/// Bytes per second a streaming copy moves (read plus write) through buffers of up to 64 MiB.
pub async fn copy_bandwidth(gpu: &Gpu) -> Result<f64> {
    let floats = (gpu.info.max_binding.min(64 << 20) / 16 * 4) as usize;
    let (src, dst) = (gpu.zeros("copy source", floats), gpu.zeros("copy destination", floats));
    let mut plan = Plan::new(gpu);
    for _ in 0..COPIES {
        copy(gpu, &mut plan, &src, &dst)?;
    }
    let step = Step { pos0: 0, n_tokens: 1, logit_rows: Vec::new() };
    let mut best = f64::MAX;
    for _ in 0..3 {
        let start = Instant::now();
        plan.submit(gpu, &step, &[], None);
        gpu.read_f32(&dst, 0, 1).await?;
        best = best.min(start.elapsed().as_secs_f64());
    }
    Ok((COPIES * 2 * 4 * floats) as f64 / best)
}
