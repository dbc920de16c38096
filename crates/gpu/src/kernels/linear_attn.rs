//! The Hadamard feature map of linear attention (`linear/linear_attn.wgsl`); the recurrence itself runs through
//! [`super::gla`] with zero decay. Reference: `reference::gla::hadamard_feature_map`.

use crate::device::Gpu;
use crate::error::Result;
use crate::plan::{Grid, Plan, Rows};
use crate::shader::Defines;

/// The two layers of one feature map, f32: `w1`, `w2` `[dk, dk]`, `b1`, `b2` `[dk]`.
pub struct FeatureMap<'a> {
    /// First layer weight.
    pub w1: &'a wgpu::Buffer,
    /// First layer bias.
    pub b1: &'a wgpu::Buffer,
    /// Second layer weight.
    pub w2: &'a wgpu::Buffer,
    /// Second layer bias.
    pub b2: &'a wgpu::Buffer,
}

/// Records `dst = φ(src)` for the head vectors at columns `offset..offset + heads * dk` of rows `width` wide.
#[allow(clippy::too_many_arguments)]
pub fn feature_map(
    gpu: &Gpu,
    plan: &mut Plan,
    map: &FeatureMap,
    src: &wgpu::Buffer,
    dst: &wgpu::Buffer,
    heads: usize,
    dk: usize,
    (offset, width): (usize, usize),
) -> Result<()> {
    plan.check_rows("feature_map", "input", src, Rows::Tokens, width)?;
    plan.check_rows("feature_map", "output", dst, Rows::Tokens, width)?;
    let wg = gpu.tuning.wg;
    let params = [heads as u32, dk as u32, width as u32, offset as u32];
    let buffers = [src.into(), dst.into(), map.w1.into(), map.b1.into(), map.w2.into(), map.b2.into()];
    let grid = Grid::Flat { rows: Rows::Tokens, per_row: (heads * dk) as u32, per_group: wg };
    plan.dispatch(gpu, "linear/linear_attn.wgsl", &Defines::new().set("WG", wg), &params, &buffers, grid)
}
