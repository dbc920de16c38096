//! Mixture of experts (`common/moe.wgsl`): top-k routing on the GPU, then products through only the selected
//! experts' rows of stacked expert weights: matrix-vector per token for decode, and for prefill tokens grouped per
//! expert into register-blocked matmuls whose slot outputs are then summed with their route weights. Reference: `reference::moe::route` and the reference model's
//! MoE MLP.

use super::{f32_word, matmul::Epilogue, weight_defines};
use crate::buffer::Weight;
use crate::device::Gpu;
use crate::error::{GpuError, Result};
use crate::plan::{Grid, Plan, Rows};
use crate::shader::Defines;
use ternlight_core::spec::RouterScoring;

const SHADER: &str = "common/moe.wgsl";

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
    plan.dispatch(gpu, SHADER, &defines, &params, &buffers, grid)
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
    check_expert_blocks(l.w, n)?;
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
        plan.dispatch(gpu, SHADER, &defines, &params, &buffers, grid)?;
    }
    Ok(())
}

/// Records the prefill grouping: per expert, the `(token, slot)` rows (`t * top_k + j`) that selected it, in
/// `lists` `[experts, tokens]` u32 with their number in `counts` `[experts]`.
pub fn group(
    gpu: &Gpu,
    plan: &mut Plan,
    routes: &wgpu::Buffer,
    (n_experts, top_k): (usize, usize),
    lists: &wgpu::Buffer,
    counts: &wgpu::Buffer,
) -> Result<()> {
    plan.check_rows("moe group", "routes", routes, Rows::Tokens, 2 * top_k)?;
    plan.check_rows("moe group", "lists", lists, Rows::Tokens, n_experts)?;
    if counts.size() < (n_experts * 4) as u64 {
        return Err(GpuError::shape("moe group", format!("counts for {n_experts} experts")));
    }
    let wg = gpu.tuning.wg;
    let defines = Defines::new().set("WG", wg).flag("GROUP", true);
    let grid = Grid::Fixed((n_experts as u32).div_ceil(wg));
    plan.dispatch(
        gpu,
        SHADER,
        &defines,
        &[n_experts as u32, top_k as u32],
        &[routes.into(), lists.into(), counts.into()],
        grid,
    )
}

/// One prefill product through the selected experts with tokens batched per expert (after [`group`]).
pub struct GroupedLinear<'a> {
    /// Input: `[tokens, k]`, or `[tokens, top_k, k]` when `slot_input`.
    pub x: &'a wgpu::Buffer,
    /// Whether each `(token, slot)` row has its own input (the down projection).
    pub slot_input: bool,
    /// Stacked expert weights `[experts * n, k]` in expert-aligned blocks.
    pub w: &'a Weight,
    /// Rows per expert.
    pub n: usize,
    /// Experts per token.
    pub top_k: usize,
    /// From [`group`].
    pub lists: &'a wgpu::Buffer,
    /// From [`group`].
    pub counts: &'a wgpu::Buffer,
    /// Output `[tokens, top_k, n]`; rows no expert of `w` computes are left alone.
    pub y: &'a wgpu::Buffer,
}

/// Records the grouped product, one dispatch per weight block (experts of the block side by side along x).
pub fn grouped_linear(gpu: &Gpu, plan: &mut Plan, l: &GroupedLinear) -> Result<()> {
    let (n, k, top_k) = (l.n, l.w.cols, l.top_k);
    check_expert_blocks(l.w, n)?;
    plan.check_rows("moe grouped", "input", l.x, Rows::Tokens, if l.slot_input { top_k * k } else { k })?;
    plan.check_rows("moe grouped", "output", l.y, Rows::Tokens, top_k * n)?;
    let t = &gpu.tuning;
    let defines = Defines::new()
        .set("WG_X", t.wg_x)
        .set("WG_Y", t.wg_y)
        .set("TM", t.tm)
        .set("TN", t.tn)
        .flag("TILED", true)
        .flag("SLOT_INPUT", l.slot_input);
    let defines = weight_defines(defines, l.w, 6);
    let x_groups = (n as u32).div_ceil(t.wg_x * t.tn);
    for block in &l.w.blocks {
        let experts = (block.rows / n) as u32;
        let params = [k as u32, n as u32, top_k as u32, (block.row0 / n) as u32, x_groups];
        let grid = Grid::Tiles { x: experts * x_groups, rows: Rows::Tokens, rows_per_group: t.wg_y * t.tm };
        let buffers = [l.x.into(), l.lists.into(), l.counts.into(), l.y.into(), (&block.buffer).into()];
        plan.dispatch(gpu, SHADER, &defines, &params, &buffers, grid)?;
    }
    Ok(())
}

/// Records `out (+)= sum_j route_weight[t, j] slots[t, j]` over `[tokens, n]`.
pub fn combine_slots(
    gpu: &Gpu,
    plan: &mut Plan,
    (slots, routes): (&wgpu::Buffer, &wgpu::Buffer),
    (n, top_k): (usize, usize),
    out: &wgpu::Buffer,
    epilogue: Epilogue,
) -> Result<()> {
    plan.check_rows("moe combine", "slots", slots, Rows::Tokens, top_k * n)?;
    plan.check_rows("moe combine", "output", out, Rows::Tokens, n)?;
    let wg = gpu.tuning.wg;
    let defines = Defines::new().set("WG", wg).flag("SLOTS", true).flag("ACCUMULATE", epilogue == Epilogue::Accumulate);
    let grid = Grid::Flat { rows: Rows::Tokens, per_row: n as u32, per_group: wg };
    plan.dispatch(gpu, SHADER, &defines, &[n as u32, top_k as u32], &[slots.into(), routes.into(), out.into()], grid)
}

fn check_expert_blocks(w: &Weight, n: usize) -> Result<()> {
    if n == 0 || !w.rows.is_multiple_of(n) || w.blocks.iter().any(|b| b.row0 % n != 0 || b.rows % n != 0) {
        return Err(GpuError::shape("moe expert", format!("{} stacked rows in blocks not aligned to {n}", w.rows)));
    }
    Ok(())
}
