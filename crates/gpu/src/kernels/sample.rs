//! Next-token sampling on the GPU (`common/sample.wgsl`); reference: `sampling::sample_row`. A forward that
//! samples reads back one token id instead of a logits row.

use super::f32_word;
use crate::device::Gpu;
use crate::error::Result;
use crate::plan::{Grid, Op, Plan, Rows};
use crate::shader::Defines;
use ternlight_core::sampling::SamplingParams;

/// One draw: the settings, the uniform number for it and where the context its repetition penalty reads begins.
#[derive(Clone, Copy, Debug)]
pub struct Draw<'a> {
    /// Sampling settings (the seed is the caller's: `uniform` is already drawn).
    pub params: &'a SamplingParams,
    /// The draw in [0, 1).
    pub uniform: f32,
    /// First context position the repetition penalty counts.
    pub context_start: usize,
}

impl Draw<'_> {
    /// Refuses settings the kernel cannot follow ([`SamplingParams::check`]) and a draw outside [0, 1).
    pub fn check(&self) -> std::result::Result<(), String> {
        self.params.check()?;
        match (0.0..1.0).contains(&self.uniform) {
            true => Ok(()),
            false => Err(format!("the uniform draw {} is outside [0, 1)", self.uniform)),
        }
    }
}

impl Draw<'static> {
    /// A greedy draw over the whole context (no uniform number or penalty needed).
    pub fn greedy() -> Self {
        Draw { params: &SamplingParams::GREEDY, uniform: 0.0, context_start: 0 }
    }
}

/// The sampler's buffers: the per-forward settings, the context ids (kept by the plan for the repetition
/// penalty), a working row and the chosen token.
pub struct TokenSampler {
    settings: wgpu::Buffer,
    context: wgpu::Buffer,
    work: wgpu::Buffer,
    /// The chosen token id (one u32), for the caller to read back.
    pub token: wgpu::Buffer,
    vocab: usize,
    context_rows: usize,
}

impl TokenSampler {
    /// Buffers for a vocabulary of `vocab` and a context of `context_rows` ids (a ring beyond that).
    pub fn new(gpu: &Gpu, vocab: usize, context_rows: usize) -> Self {
        TokenSampler {
            settings: gpu.uniform("sampling settings", &[0; 8]),
            context: gpu.zeros("sampled context", context_rows.max(1)),
            work: gpu.zeros("sampling row", vocab),
            token: gpu.zeros("sampled token", 1),
            vocab,
            context_rows: context_rows.max(1),
        }
    }

    /// Sets what the next submitted forward samples (`None`: nothing, the kernel returns at once).
    pub fn set(&self, gpu: &Gpu, draw: Option<&Draw>) {
        let words = match draw {
            None => [0; 8],
            Some(d) => {
                let p = d.params;
                [
                    1,
                    f32_word(p.temperature),
                    p.top_k.min(u32::MAX as usize) as u32,
                    f32_word(p.top_p),
                    f32_word(p.min_p),
                    f32_word(p.repetition_penalty),
                    f32_word(d.uniform),
                    d.context_start.min(u32::MAX as usize) as u32,
                ]
            }
        };
        gpu.queue.write_buffer(&self.settings, 0, bytemuck::cast_slice(&words));
    }

    /// Records, at the end of a forward, the append of its token `ids` to the context and the draw from the last
    /// requested row of `logits` (`[logit rows, vocab]`) into [`token`](TokenSampler::token).
    pub fn record(&self, gpu: &Gpu, plan: &mut Plan, ids: &wgpu::Buffer, logits: &wgpu::Buffer) -> Result<()> {
        plan.check_rows("sample", "logits", logits, Rows::Logits, self.vocab)?;
        plan.push(Op::AppendRows {
            src: ids.clone(),
            dst: self.context.clone(),
            row_bytes: 4,
            cache_rows: self.context_rows as u64,
            pinned: 0,
        });
        let params = [self.vocab as u32, self.context_rows as u32];
        let buffers =
            [(&self.settings).into(), logits.into(), (&self.context).into(), (&self.work).into(), (&self.token).into()];
        plan.dispatch(gpu, "common/sample.wgsl", &Defines::new(), &params, &buffers, Grid::Fixed(1))
    }
}
