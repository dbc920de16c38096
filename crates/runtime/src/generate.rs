//! The generation loop: prefill the prompt, then sample and step until a stop token or the token budget. Tokens are
//! drawn on the GPU (`kernels::sample`), so each step reads back one id, not a logits row.

use crate::error::{Result, RuntimeError};
use crate::session::Session;
use ternlight_core::sampling::Sampler;
use ternlight_gpu::kernels::sample::Draw;
use web_time::Instant;

/// Timings of one generation.
#[derive(Clone, Debug, Default)]
pub struct GenerationStats {
    /// Prompt tokens.
    pub prompt_tokens: usize,
    /// Tokens generated.
    pub generated_tokens: usize,
    /// Seconds from start to the first sampled token (prefill + sampling).
    pub time_to_first_token: f64,
    /// Seconds spent in prefill.
    pub prefill_seconds: f64,
    /// Seconds spent in decode steps.
    pub decode_seconds: f64,
}

impl GenerationStats {
    /// Prompt tokens per second.
    pub fn prefill_rate(&self) -> f64 {
        self.prompt_tokens as f64 / self.prefill_seconds.max(1e-9)
    }

    /// Generated tokens per second over the decode steps (the first token comes from prefill).
    pub fn decode_rate(&self) -> f64 {
        self.generated_tokens.saturating_sub(1) as f64 / self.decode_seconds.max(1e-9)
    }
}

/// One generation, a token at a time: the first [`next`](Generation::next) prefills the prompt, each later one
/// steps the previous token. Callers that stream tokens (the browser API) drive it; [`generate`] runs it to the end.
pub struct Generation {
    context: Vec<u32>,
    prompt_len: usize,
    sampler: Sampler,
    max_tokens: usize,
    stop_ids: Vec<u32>,
    /// The session position this generation's context starts at (where the repetition penalty starts looking).
    context_start: usize,
    finished: bool,
    start: Instant,
    decode_start: Option<Instant>,
    stats: GenerationStats,
}

impl Generation {
    /// A generation of up to `max_tokens` after `prompt` (non-empty), ending early at any of `stop_ids` (which is
    /// emitted) or when the session's context is full.
    pub fn new(prompt: &[u32], sampler: Sampler, max_tokens: usize, stop_ids: &[u32]) -> Self {
        Generation {
            context: prompt.to_vec(),
            prompt_len: prompt.len(),
            sampler,
            max_tokens,
            stop_ids: stop_ids.to_vec(),
            context_start: 0,
            finished: max_tokens == 0,
            start: Instant::now(),
            decode_start: None,
            stats: GenerationStats { prompt_tokens: prompt.len(), ..Default::default() },
        }
    }

    /// The next token, or `None` once the generation has ended.
    pub async fn next(&mut self, session: &mut Session) -> Result<Option<u32>> {
        if self.finished {
            return Ok(None);
        }
        if self.prompt_len == 0 {
            return Err(RuntimeError::Request("the prompt has no tokens".into()));
        }
        if self.decode_start.is_none() {
            self.start = Instant::now();
            self.context_start = session.position();
        }
        let uniform = self.sampler.next_uniform();
        let draw = Draw { params: self.sampler.params(), uniform, context_start: self.context_start };
        let id = match self.decode_start {
            None => {
                let id = session.prefill_sample(&self.context, &draw).await?;
                self.stats.prefill_seconds = self.start.elapsed().as_secs_f64();
                self.decode_start = Some(Instant::now());
                id
            }
            Some(_) => session.step_sample(*self.context.last().expect("a token was generated"), &draw).await?,
        };
        if self.stats.generated_tokens == 0 {
            self.stats.time_to_first_token = self.start.elapsed().as_secs_f64();
        }
        self.context.push(id);
        self.stats.generated_tokens += 1;
        self.stats.decode_seconds = self.decode_start.map_or(0.0, |t| t.elapsed().as_secs_f64());
        self.finished = self.stop_ids.contains(&id)
            || self.stats.generated_tokens == self.max_tokens
            || session.position() >= session.max_context();
        Ok(Some(id))
    }

    /// Timings so far.
    pub fn stats(&self) -> &GenerationStats {
        &self.stats
    }

    /// The tokens generated so far.
    pub fn tokens(&self) -> &[u32] {
        &self.context[self.prompt_len..]
    }
}

/// Generates up to `max_tokens` after `prompt`, calling `on_token` with each new id; stops early at any of
/// `stop_ids` (which is emitted) or when `on_token` returns false. Returns the new ids and timings.
pub async fn generate(
    session: &mut Session,
    prompt: &[u32],
    sampler: &mut Sampler,
    max_tokens: usize,
    stop_ids: &[u32],
    mut on_token: impl FnMut(u32) -> bool,
) -> Result<(Vec<u32>, GenerationStats)> {
    let mut generation = Generation::new(prompt, sampler.clone(), max_tokens, stop_ids);
    while let Some(id) = generation.next(session).await? {
        if !on_token(id) {
            break;
        }
    }
    let out = generation.tokens().to_vec();
    *sampler = generation.sampler;
    Ok((out, generation.stats))
}
