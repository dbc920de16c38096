//! Scaled residuals (`common/residual.wgsl`): MiniMax replaces the stream with `alpha * h + beta * y` after each
//! block, `h` the block's normed input. Reference: `reference::model`'s residual step.

use super::f32_word;
use crate::device::Gpu;
use crate::error::Result;
use crate::plan::{Grid, Plan, Rows};
use crate::shader::Defines;

/// Records `x = alpha * h + beta * y` over `[tokens, width]`.
pub fn scaled_residual(
    gpu: &Gpu,
    plan: &mut Plan,
    (alpha, h): (f32, &wgpu::Buffer),
    (beta, y): (f32, &wgpu::Buffer),
    x: &wgpu::Buffer,
    width: usize,
) -> Result<()> {
    for (what, b) in [("normed input", h), ("block output", y), ("stream", x)] {
        plan.check_rows("scaled_residual", what, b, Rows::Tokens, width)?;
    }
    let wg = gpu.tuning.wg;
    let grid = Grid::Flat { rows: Rows::Tokens, per_row: width as u32, per_group: wg };
    let params = [width as u32, f32_word(alpha), f32_word(beta)];
    let defines = Defines::new().set("WG", wg);
    plan.dispatch(gpu, "common/residual.wgsl", &defines, &params, &[h.into(), y.into(), x.into()], grid)
}
