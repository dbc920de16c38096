//! Ternary (BitNet b1.58) linear layers: per-token int8 activation fake-quantisation (`ternary/act_quant.wgsl`)
//! ahead of the ordinary linear kernels, which decode 2-bit weight codes in registers (`common/weights.wgsl`,
//! `W_TERNARY`; see [`crate::buffer::Weight::upload_ternary`]). Reference: `reference::ternary`.

use super::f32_word;
use crate::device::Gpu;
use crate::error::Result;
use crate::plan::{Grid, Plan, Rows};
use crate::shader::Defines;

/// Records `out = round(x s) / s` per row of `width` (`s = 127 / max|x|`), over `rows`; with `norm` (`[width]`
/// weight, eps), `x` is RMSNormed first.
pub fn act_quant(
    gpu: &Gpu,
    plan: &mut Plan,
    (x, out): (&wgpu::Buffer, &wgpu::Buffer),
    width: usize,
    rows: Rows,
    norm: Option<(&wgpu::Buffer, f32)>,
) -> Result<()> {
    plan.check_rows("act_quant", "input", x, rows, width)?;
    plan.check_rows("act_quant", "output", out, rows, width)?;
    let wg = gpu.tuning.wg;
    let grid = Grid::Flat { rows, per_row: 1, per_group: 1 };
    let params = [width as u32, rows.selector(), f32_word(norm.map_or(0.0, |(_, eps)| eps))];
    let mut buffers = vec![x.into(), out.into()];
    if let Some((w, _)) = norm {
        buffers.push(w.into());
    }
    let defines = Defines::new().set("WG", wg).flag("NORM", norm.is_some());
    plan.dispatch(gpu, "ternary/act_quant.wgsl", &defines, &params, &buffers, grid)
}
