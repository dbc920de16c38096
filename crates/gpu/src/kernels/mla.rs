//! Multi-head latent attention's weight absorption (`attention/mla.wgsl`): queries are moved into the latent space
//! through the key half of `kv_b`, attention runs over the cached latents (see [`super::attention`] with
//! `v_dim < head_dim`), and the context leaves through the value half. Reference: the reference model's MLA, which
//! expands keys and values instead.

use super::weight_defines;
use crate::buffer::Weight;
use crate::device::Gpu;
use crate::error::{GpuError, Result};
use crate::plan::{Grid, Plan, Rows};
use crate::shader::Defines;

/// Head sizes of an MLA layer and its `kv_b` weight (`[n_heads * (nope + v_dim), rank]`).
pub struct Mla<'a> {
    /// Heads.
    pub n_heads: usize,
    /// Query/key channels without position information.
    pub nope: usize,
    /// Query/key channels of the rotary part.
    pub rope: usize,
    /// Value channels per head.
    pub v_dim: usize,
    /// Latent width.
    pub rank: usize,
    /// The latent-to-heads projection.
    pub kv_b: &'a Weight,
}

impl Mla<'_> {
    fn check(&self) -> Result<()> {
        let rows = self.n_heads * (self.nope + self.v_dim);
        if self.kv_b.rows != rows || self.kv_b.cols != self.rank || self.kv_b.blocks.len() != 1 {
            return Err(GpuError::shape(
                "mla",
                format!(
                    "kv_b [{}, {}] in {} blocks for {rows} rows of {}",
                    self.kv_b.rows,
                    self.kv_b.cols,
                    self.kv_b.blocks.len(),
                    self.rank
                ),
            ));
        }
        Ok(())
    }

    fn record(
        &self,
        gpu: &Gpu,
        plan: &mut Plan,
        variant: &str,
        x: &wgpu::Buffer,
        y: &wgpu::Buffer,
        per_head: usize,
    ) -> Result<()> {
        self.check()?;
        let wg = gpu.tuning.wg;
        let defines = weight_defines(Defines::new().set("WG", wg).flag(variant, true), self.kv_b, 4);
        let params = [self.n_heads, self.nope, self.rope, self.v_dim, self.rank].map(|v| v as u32);
        let grid = Grid::Flat { rows: Rows::Tokens, per_row: (self.n_heads * per_head) as u32, per_group: wg };
        let buffers = [x.into(), y.into(), (&self.kv_b.blocks[0].buffer).into()];
        plan.dispatch(gpu, "attention/mla.wgsl", &defines, &params, &buffers, grid)
    }

    /// Records `q [tokens, heads, nope + rope]` → absorbed queries `[tokens, heads, rank + rope]`.
    pub fn absorb_queries(&self, gpu: &Gpu, plan: &mut Plan, q: &wgpu::Buffer, q_abs: &wgpu::Buffer) -> Result<()> {
        plan.check_rows("mla", "queries", q, Rows::Tokens, self.n_heads * (self.nope + self.rope))?;
        plan.check_rows("mla", "absorbed queries", q_abs, Rows::Tokens, self.n_heads * (self.rank + self.rope))?;
        self.record(gpu, plan, "ABSORB_Q", q, q_abs, self.rank + self.rope)
    }

    /// Records latent contexts `[tokens, heads, rank]` → per-head values `[tokens, heads * v_dim]`.
    pub fn expand_output(&self, gpu: &Gpu, plan: &mut Plan, ctx: &wgpu::Buffer, out: &wgpu::Buffer) -> Result<()> {
        plan.check_rows("mla", "latent context", ctx, Rows::Tokens, self.n_heads * self.rank)?;
        plan.check_rows("mla", "output", out, Rows::Tokens, self.n_heads * self.v_dim)?;
        self.record(gpu, plan, "EXPAND_OUT", ctx, out, self.v_dim)
    }
}
