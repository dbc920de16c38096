//! Mixture of experts (`common/moe.wgsl`): top-k routing on the GPU, then matrix-vector products through only the
//! selected experts' rows of stacked expert weights. Reference: `reference::moe::route` and the reference model's
//! MoE MLP.

use super::{f32_word, matmul::Epilogue, weight_defines};
use crate::buffer::Weight;
use crate::device::Gpu;
use crate::error::{GpuError, Result};
use crate::plan::{Grid, Plan, Rows};
use crate::shader::Defines;
use ternlight_core::spec::RouterScoring;

/// The most experts one token may select (the route kernel's register array).
pub const MAX_TOP_K: usize = 32;

/// A router's configuration.
pub struct Router<'a> {
    /// Score function.
    pub scoring: RouterScoring,
    /// Selection-only bias `[experts]` f32.
    pub selection_bias: Option<&'a wgpu::Buffer>,
    /// Experts.
    pub n_experts: usize,
    /// Experts per token.
    pub top_k: usize,
    /// Renormalise the selected scores to sum to one.
    pub normalize: bool,
    /// Multiplier of the route weights.
    pub scale: f32,
}

/// Records routing: `logits [tokens, experts]` → `routes [tokens, top_k, 2]` as (expert index, weight) f32 pairs.
pub fn route(gpu: &Gpu, plan: &mut Plan, r: &Router, logits: &wgpu::Buffer, routes: &wgpu::Buffer) -> Result<()> {
    if r.top_k == 0 || r.top_k > MAX_TOP_K.min(r.n_experts) {
        return Err(GpuError::shape("moe route", format!("top_k {} of {} experts", r.top_k, r.n_experts)));
    }
    plan.check_rows("moe route", "logits", logits, Rows::Tokens, r.n_experts)?;
    plan.check_rows("moe route", "routes", routes, Rows::Tokens, 2 * r.top_k)?;
    let wg = gpu.tuning.wg;
    let defines = Defines::new()
        .set("WG", wg)
        .flag("ROUTE", true)
        .flag("SIGMOID", r.scoring == RouterScoring::Sigmoid)
        .flag("SELECTION_BIAS", r.selection_bias.is_some());
    let params = [r.n_experts as u32, r.top_k as u32, r.normalize as u32, f32_word(r.scale)];
    let mut buffers = vec![logits.into(), routes.into()];
    if let Some(b) = r.selection_bias {
        buffers.push(b.into());
    }
    let grid = Grid::Flat { rows: Rows::Tokens, per_row: 1, per_group: wg };
    plan.dispatch(gpu, "common/moe.wgsl", &defines, &params, &buffers, grid)
}

/// One product through the selected experts of stacked weights `w` (`[experts * n, k]`, expert-aligned blocks).
pub struct ExpertLinear<'a> {
    /// Input: `[tokens, k]` for the gate/up products, `[tokens, top_k, k]` when combining.
    pub x: &'a wgpu::Buffer,
    /// Stacked expert weights.
    pub w: &'a Weight,
    /// Rows per expert.
    pub n: usize,
    /// Routes from [`route`].
    pub routes: &'a wgpu::Buffer,
    /// Experts per token.
    pub top_k: usize,
    /// Output: `[tokens, top_k, n]`, or `[tokens, n]` when combining.
    pub y: &'a wgpu::Buffer,
    /// `Some` to sum the slots weighted by their routes into `y` (stored or added); `None` for per-slot outputs.
    pub combine: Option<Epilogue>,
}

/// Records the product, one dispatch per weight block.
pub fn expert_linear(gpu: &Gpu, plan: &mut Plan, l: &ExpertLinear) -> Result<()> {
    let (n, k, top_k) = (l.n, l.w.cols, l.top_k);
    if n == 0 || !l.w.rows.is_multiple_of(n) || l.w.blocks.iter().any(|b| b.row0 % n != 0 || b.rows % n != 0) {
        return Err(GpuError::shape("moe expert", format!("{} stacked rows in blocks not aligned to {n}", l.w.rows)));
    }
    let (x_width, y_width) = match l.combine {
        Some(_) => (top_k * k, n),
        None => (k, top_k * n),
    };
    plan.check_rows("moe expert", "input", l.x, Rows::Tokens, x_width)?;
    plan.check_rows("moe expert", "routes", l.routes, Rows::Tokens, 2 * top_k)?;
    plan.check_rows("moe expert", "output", l.y, Rows::Tokens, y_width)?;
    let t = &gpu.tuning;
    let defines =
        Defines::new().set("WG", t.wg).set("NR", t.nr).flag("EXPERT", true).flag("COMBINE", l.combine.is_some());
    let defines = weight_defines(defines, l.w, 5);
    let row_blocks = (n as u32).div_ceil(t.nr);
    let slots = if l.combine.is_some() { 1 } else { top_k as u32 };
    for (i, block) in l.w.blocks.iter().enumerate() {
        // Later blocks add to what the first one stored.
        let accumulate = l.combine == Some(Epilogue::Accumulate) || i > 0;
        let params =
            [k as u32, n as u32, top_k as u32, (block.row0 / n) as u32, (block.rows / n) as u32, accumulate as u32];
        let grid = Grid::Tiles { x: row_blocks * slots, rows: Rows::Tokens, rows_per_group: 1 };
        let buffers = [l.x.into(), l.routes.into(), l.y.into(), (&block.buffer).into()];
        plan.dispatch(gpu, "common/moe.wgsl", &defines, &params, &buffers, grid)?;
    }
    Ok(())
}
