//! Mamba2's selective state space (`linear/mamba2.wgsl`) as a GLA recurrence: a prep kernel turns the conv output
//! and `dt` into GLA queries (`C`), keys (`B`), values (`dt x`) and per-channel log decays (`dt A`), the GLA kernels
//! ([`super::gla`], chunkwise for prefill, recurrent for decode) run the state `[heads, N, P]`, and a skip kernel adds
//! `D x`. Reference: the reference model's Mamba2 mixer.

use super::f32_word;
use crate::device::Gpu;
use crate::error::{GpuError, Result};
use crate::plan::{Grid, Plan, Rows};
use crate::shader::Defines;

/// Sizes and buffers of one Mamba2 mixer.
pub struct Mamba2<'a> {
    /// SSM heads.
    pub n_heads: usize,
    /// Channels per head (`P`).
    pub head_dim: usize,
    /// Groups sharing `B` and `C`.
    pub n_groups: usize,
    /// State size (`N`).
    pub state: usize,
    /// Bounds of `dt`.
    pub dt_limit: (f32, f32),
    /// Conv output `[tokens, inner + 2 G N]` = `[x | B | C]`.
    pub xbc: &'a wgpu::Buffer,
    /// `[A_log | dt_bias | D]`, `3 * n_heads` f32.
    pub params: &'a wgpu::Buffer,
}

impl Mamba2<'_> {
    fn inner(&self) -> usize {
        self.n_heads * self.head_dim
    }

    fn check(&self, plan: &Plan) -> Result<Defines> {
        if self.n_groups == 0 || !self.n_heads.is_multiple_of(self.n_groups) {
            return Err(GpuError::shape("mamba2", format!("{} heads in {} groups", self.n_heads, self.n_groups)));
        }
        let width = self.inner() + 2 * self.n_groups * self.state;
        plan.check_rows("mamba2", "conv output", self.xbc, Rows::Tokens, width)?;
        Ok(Defines::new())
    }

    fn words(&self) -> [u32; 6] {
        let (lo, hi) = self.dt_limit;
        let sizes = [self.n_heads, self.head_dim, self.n_groups, self.state].map(|v| v as u32);
        [sizes[0], sizes[1], sizes[2], sizes[3], f32_word(lo), f32_word(hi)]
    }

    /// Records the prep: `dt_raw [tokens, heads]` → GLA inputs `qkv [tokens, H(2N + P)]` and log decays
    /// `gk [tokens, H N]`.
    pub fn prepare(
        &self,
        gpu: &Gpu,
        plan: &mut Plan,
        dt_raw: &wgpu::Buffer,
        qkv: &wgpu::Buffer,
        gk: &wgpu::Buffer,
    ) -> Result<()> {
        let defines = self.check(plan)?.set("WG", gpu.tuning.wg).flag("PREP", true);
        let (h, n, p) = (self.n_heads, self.state, self.head_dim);
        plan.check_rows("mamba2", "dt", dt_raw, Rows::Tokens, h)?;
        plan.check_rows("mamba2", "GLA inputs", qkv, Rows::Tokens, h * (2 * n + p))?;
        plan.check_rows("mamba2", "log decays", gk, Rows::Tokens, h * n)?;
        let grid = Grid::Flat { rows: Rows::Tokens, per_row: h as u32, per_group: gpu.tuning.wg };
        let buffers = [self.xbc.into(), self.params.into(), dt_raw.into(), qkv.into(), gk.into()];
        plan.dispatch(gpu, "linear/mamba2.wgsl", &defines, &self.words(), &buffers, grid)
    }

    /// Records `y += D x` over `y [tokens, heads * P]`.
    pub fn skip(&self, gpu: &Gpu, plan: &mut Plan, y: &wgpu::Buffer) -> Result<()> {
        let defines = self.check(plan)?.set("WG", gpu.tuning.wg).flag("SKIP", true);
        plan.check_rows("mamba2", "output", y, Rows::Tokens, self.inner())?;
        let grid = Grid::Flat { rows: Rows::Tokens, per_row: self.inner() as u32, per_group: gpu.tuning.wg };
        plan.dispatch(
            gpu,
            "linear/mamba2.wgsl",
            &defines,
            &self.words(),
            &[self.xbc.into(), self.params.into(), y.into()],
            grid,
        )
    }
}
