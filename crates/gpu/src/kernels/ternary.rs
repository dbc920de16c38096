//! Ternary (BitNet b1.58) linear layers: per-token int8 activation fake-quantisation (`ternary/act_quant.wgsl`)
//! ahead of the ordinary linear kernels, which decode 2-bit weight codes in registers (`common/weights.wgsl`,
//! `W_TERNARY`; see [`crate::buffer::Weight::upload_ternary`]). Reference: `reference::ternary`.

use crate::device::Gpu;
use crate::error::Result;
use crate::plan::{Grid, Plan, Rows};
use crate::shader::Defines;

/// Records `out = round(x s) / s` per row of `width` (`s = 127 / max|x|`), over `rows`.
pub fn act_quant(
    gpu: &Gpu,
    plan: &mut Plan,
    x: &wgpu::Buffer,
    out: &wgpu::Buffer,
    width: usize,
    rows: Rows,
) -> Result<()> {
    plan.check_rows("act_quant", "input", x, rows, width)?;
    plan.check_rows("act_quant", "output", out, rows, width)?;
    let wg = gpu.tuning.wg;
    let grid = Grid::Flat { rows, per_row: 1, per_group: 1 };
    let params = [width as u32, rows.selector()];
    plan.dispatch(gpu, "ternary/act_quant.wgsl", &Defines::new().set("WG", wg), &params, &[x.into(), out.into()], grid)
}
