//! Mixture-of-Head attention (`attention/moh.wgsl`): per-token head weights from router logits, then each head's
//! attention output scaled by its weight. Reference: `reference::moh::head_weights`.

use crate::device::Gpu;
use crate::error::{GpuError, Result};
use crate::plan::{Grid, Plan, Rows};
use crate::shader::Defines;

/// The most heads the routing kernel takes (its gates live in registers).
pub const MAX_HEADS: usize = 64;

/// A MoH layer's shape.
#[derive(Clone, Copy, Debug)]
pub struct Moh {
    /// Attention heads.
    pub heads: usize,
    /// Heads always on (the first ones).
    pub shared: usize,
    /// Routed heads kept per token.
    pub top_k: usize,
    /// Channels per head.
    pub head_dim: usize,
}

impl Moh {
    fn params(&self) -> [u32; 4] {
        [self.heads as u32, self.shared as u32, self.top_k as u32, self.head_dim as u32]
    }

    /// Records the head weights `[tokens, heads]` from router logits `[tokens, routed | shared (> 1) | 2]`.
    pub fn route(&self, gpu: &Gpu, plan: &mut Plan, logits: &wgpu::Buffer, weights: &wgpu::Buffer) -> Result<()> {
        if self.heads > MAX_HEADS
            || self.shared > self.heads
            || self.top_k == 0
            || self.top_k > self.heads - self.shared
        {
            return Err(GpuError::shape(
                "mixture-of-head routing",
                format!("{} heads, {} shared, top {} (at most {MAX_HEADS} heads)", self.heads, self.shared, self.top_k),
            ));
        }
        let wg = gpu.tuning.wg;
        let defines = Defines::new().set("WG", wg).set("MAX_HEADS", MAX_HEADS);
        let grid = Grid::Flat { rows: Rows::Tokens, per_row: 1, per_group: wg };
        plan.dispatch(gpu, "attention/moh.wgsl", &defines, &self.params(), &[logits.into(), weights.into()], grid)
    }

    /// Records `out = attn * weight of its head`, `attn`/`out` `[tokens, heads * head_dim]`.
    pub fn scale(
        &self,
        gpu: &Gpu,
        plan: &mut Plan,
        attn: &wgpu::Buffer,
        weights: &wgpu::Buffer,
        out: &wgpu::Buffer,
    ) -> Result<()> {
        plan.check_rows("mixture-of-head scaling", "attention output", attn, Rows::Tokens, self.heads * self.head_dim)?;
        let wg = gpu.tuning.wg;
        let defines = Defines::new().set("WG", wg).set("SCALE", 1);
        let grid = Grid::Flat { rows: Rows::Tokens, per_row: (self.heads * self.head_dim) as u32, per_group: wg };
        plan.dispatch(
            gpu,
            "attention/moh.wgsl",
            &defines,
            &self.params(),
            &[attn.into(), out.into(), weights.into()],
            grid,
        )
    }
}
