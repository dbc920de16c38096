//! Gated Slot Attention's glue (`linear/gsa.wgsl`): gates and feature maps that build the inputs of its two GLA
//! passes ([`super::gla`]: value-channel decay, then key-channel decay), and the softmax over slots between them.
//! Reference: `reference::gsa`.

use crate::device::Gpu;
use crate::error::{GpuError, Result};
use crate::plan::{Grid, Plan, Rows};
use crate::shader::Defines;

/// Head sizes of one Gated Slot Attention layer.
pub struct Gsa {
    /// Heads.
    pub heads: usize,
    /// Key channels per head.
    pub dk: usize,
    /// Value channels per head.
    pub dv: usize,
    /// Memory slots per head.
    pub slots: usize,
    /// Divisor of the log-sigmoid gate.
    pub normalizer: f32,
}

impl Gsa {
    /// Floats per token of pass one's inputs `[q | k | s]`.
    pub fn first_width(&self) -> usize {
        self.heads * (2 * self.dk + self.slots)
    }

    /// Floats per token of pass two's inputs `[softmax | s | v]`.
    pub fn second_width(&self) -> usize {
        self.heads * (2 * self.slots + self.dv)
    }

    fn record(&self, gpu: &Gpu, plan: &mut Plan, variant: &str, buffers: &[crate::plan::Binding]) -> Result<()> {
        if self.heads == 0 || self.slots == 0 {
            return Err(GpuError::shape("gsa", "no heads or slots"));
        }
        let wg = gpu.tuning.wg;
        let defines =
            Defines::new().set("WG", wg).set("NORMALIZER", format!("{:?}", self.normalizer)).flag(variant, true);
        let params = [self.heads, self.dk, self.dv, self.slots].map(|v| v as u32);
        let grid = Grid::Flat { rows: Rows::Tokens, per_row: self.heads as u32, per_group: wg };
        plan.dispatch(gpu, "linear/gsa.wgsl", &defines, &params, buffers, grid)
    }

    /// Records the gates: `raw [tokens, H(2K + V)]` and gate logits `gk [tokens, H M]` (turned into log gates) →
    /// pass one's inputs `first` and the key/value parts of pass two's inputs `second`.
    pub fn gates(
        &self,
        gpu: &Gpu,
        plan: &mut Plan,
        raw: &wgpu::Buffer,
        gk: &wgpu::Buffer,
        (first, second): (&wgpu::Buffer, &wgpu::Buffer),
    ) -> Result<()> {
        let (h, k, v, m) = (self.heads, self.dk, self.dv, self.slots);
        plan.check_rows("gsa", "projections", raw, Rows::Tokens, h * (2 * k + v))?;
        plan.check_rows("gsa", "gates", gk, Rows::Tokens, h * m)?;
        plan.check_rows("gsa", "first pass inputs", first, Rows::Tokens, self.first_width())?;
        plan.check_rows("gsa", "second pass inputs", second, Rows::Tokens, self.second_width())?;
        self.record(gpu, plan, "GATES", &[raw.into(), gk.into(), first.into(), second.into()])
    }

    /// Records the softmax of pass one's slot scores `[tokens, H M]` into pass two's queries.
    pub fn softmax(&self, gpu: &Gpu, plan: &mut Plan, scores: &wgpu::Buffer, second: &wgpu::Buffer) -> Result<()> {
        plan.check_rows("gsa", "slot scores", scores, Rows::Tokens, self.heads * self.slots)?;
        plan.check_rows("gsa", "second pass inputs", second, Rows::Tokens, self.second_width())?;
        self.record(gpu, plan, "SOFTMAX", &[scores.into(), second.into()])
    }
}
