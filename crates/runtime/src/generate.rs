//! The generation loop: prefill the prompt, then sample and step until a stop token or the token budget.

use crate::error::Result;
use crate::session::Session;
use ternlight_core::sampling::Sampler;
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
    let start = Instant::now();
    let mut context: Vec<u32> = prompt.to_vec();
    let mut logits = session.prefill(prompt, &[prompt.len() - 1]).await?;
    let mut stats = GenerationStats {
        prompt_tokens: prompt.len(),
        prefill_seconds: start.elapsed().as_secs_f64(),
        ..Default::default()
    };
    let mut out = Vec::new();
    let decode_start = Instant::now();
    while out.len() < max_tokens {
        let id = sampler.sample(&logits, &context);
        if out.is_empty() {
            stats.time_to_first_token = start.elapsed().as_secs_f64();
        }
        out.push(id);
        context.push(id);
        if !on_token(id)
            || stop_ids.contains(&id)
            || out.len() == max_tokens
            || session.position() >= session.max_context()
        {
            break;
        }
        logits = session.step(id).await?;
    }
    stats.generated_tokens = out.len();
    stats.decode_seconds = decode_start.elapsed().as_secs_f64();
    Ok((out, stats))
}
