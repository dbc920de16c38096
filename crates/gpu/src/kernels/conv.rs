//! Short causal depthwise convolution + SiLU with its rolling state (`linear/short_conv.wgsl`); reference:
//! `reference::conv::short_conv_silu`.

use crate::device::Gpu;
use crate::error::{GpuError, Result};
use crate::plan::{Grid, Plan, Rows};
use crate::shader::Defines;

/// Records `y = silu(conv(x))` over `[tokens, channels]` with `weight` `[channels, kernel]` f32, then the update
/// of `state` `[channels, kernel - 1]` to the last inputs.
pub fn short_conv(
    gpu: &Gpu,
    plan: &mut Plan,
    x: &wgpu::Buffer,
    weight: &wgpu::Buffer,
    state: &wgpu::Buffer,
    y: &wgpu::Buffer,
    channels: usize,
    kernel: usize,
) -> Result<()> {
    if kernel < 2 {
        return Err(GpuError::shape("short_conv", format!("kernel {kernel} has no history")));
    }
    let wg = gpu.tuning.wg;
    let defines = Defines::new().set("WG", wg);
    let params = [channels as u32, kernel as u32];
    let shader = "linear/short_conv.wgsl";
    let grid = Grid::Flat { rows: Rows::Tokens, per_row: channels as u32, per_group: wg };
    plan.dispatch(gpu, shader, &defines, &params, &[x.into(), state.into(), weight.into(), y.into()], grid)?;
    let grid = Grid::Fixed((channels as u32).div_ceil(wg));
    plan.dispatch(gpu, shader, &defines.flag("UPDATE", true), &params, &[x.into(), state.into()], grid)
}
