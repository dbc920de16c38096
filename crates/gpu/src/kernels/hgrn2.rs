//! HGRN2 gates (`linear/hgrn2.wgsl`), which turn its q/f projections into GLA inputs in place; the recurrence then
//! runs through [`super::gla`] with precomputed log decays. Reference: `reference::hgrn2::gates`.

use crate::device::Gpu;
use crate::error::Result;
use crate::plan::{Grid, Plan, Rows};
use crate::shader::Defines;

/// Records the gates over `[tokens, key]`: `qkv` rows are `width` wide with q at `[0, key)` and k written to
/// `[key, 2 key)`; `gk` holds the forget logits and receives the log decays.
pub fn gates(
    gpu: &Gpu,
    plan: &mut Plan,
    qkv: &wgpu::Buffer,
    gk: &wgpu::Buffer,
    lower_bound: Option<&wgpu::Buffer>,
    key: usize,
    width: usize,
) -> Result<()> {
    plan.check_rows("hgrn2", "qkv", qkv, Rows::Tokens, width)?;
    plan.check_rows("hgrn2", "gates", gk, Rows::Tokens, key)?;
    let wg = gpu.tuning.wg;
    let defines = Defines::new().set("WG", wg).flag("LOWER_BOUND", lower_bound.is_some());
    let mut buffers = vec![qkv.into(), gk.into()];
    if let Some(lb) = lower_bound {
        buffers.push(lb.into());
    }
    let grid = Grid::Flat { rows: Rows::Tokens, per_row: key as u32, per_group: wg };
    plan.dispatch(gpu, "linear/hgrn2.wgsl", &defines, &[width as u32, key as u32], &buffers, grid)
}
