//! Short causal depthwise convolution (optionally + SiLU) with its rolling state (`linear/short_conv.wgsl`);
//! reference: `reference::conv::short_conv`.

use crate::device::Gpu;
use crate::error::{GpuError, Result};
use crate::plan::{Grid, Plan, Rows};
use crate::shader::Defines;

/// One short-conv call: `y = conv(x)`, or `silu(conv(x))`, over `[tokens, channels]`.
pub struct ShortConv<'a> {
    /// Input `[tokens, channels]`.
    pub x: &'a wgpu::Buffer,
    /// Weights `[channels, kernel]` f32.
    pub weight: &'a wgpu::Buffer,
    /// Bias `[channels]` f32 (Mamba2's conv), if any.
    pub bias: Option<&'a wgpu::Buffer>,
    /// History `[channels, kernel - 1]` from float `state_offset`, read and then advanced to the last inputs.
    pub state: &'a wgpu::Buffer,
    /// First float of this conv's history in `state` (a layer keeping several histories in one buffer).
    pub state_offset: usize,
    /// Output `[tokens, channels]`.
    pub y: &'a wgpu::Buffer,
    /// Channels.
    pub channels: usize,
    /// Kernel width.
    pub kernel: usize,
    /// Apply SiLU to the output.
    pub silu: bool,
    /// Advance the state to the last inputs afterwards (off for all but the last of several convs reading one
    /// history, as RWKV's token shifts do).
    pub advance: bool,
    /// One invocation per channel walks the tokens in order and advances the state itself: one dispatch, for a
    /// forward of one or a few tokens (decode). Otherwise tokens run in parallel and the state advances in a second
    /// dispatch.
    pub sequential: bool,
}

/// Records the conv, then (when `advance`) the update of its state: one dispatch when `sequential`, else two.
pub fn short_conv(gpu: &Gpu, plan: &mut Plan, c: &ShortConv) -> Result<()> {
    let (x, weight, state, y, channels, kernel) = (c.x, c.weight, c.state, c.y, c.channels, c.kernel);
    if kernel < 2 {
        return Err(GpuError::shape("short_conv", format!("kernel {kernel} has no history")));
    }
    plan.check_rows("short_conv", "input", x, Rows::Tokens, channels)?;
    plan.check_rows("short_conv", "output", y, Rows::Tokens, channels)?;
    let wg = gpu.tuning.wg;
    let defines = Defines::new().set("WG", wg);
    let params = [channels as u32, kernel as u32, c.state_offset as u32];
    let shader = "linear/short_conv.wgsl";
    let grid = match c.sequential {
        true => Grid::Fixed((channels as u32).div_ceil(wg)),
        false => Grid::Flat { rows: Rows::Tokens, per_row: channels as u32, per_group: wg },
    };
    let conv = defines.clone().flag("SILU", c.silu).flag("BIAS", c.bias.is_some());
    let conv = conv.flag("SEQUENTIAL", c.sequential).flag("ADVANCE", c.sequential && c.advance);
    let mut buffers = vec![x.into(), state.into(), weight.into(), y.into()];
    if let Some(b) = c.bias {
        buffers.push(b.into());
    }
    plan.dispatch(gpu, shader, &conv, &params, &buffers, grid)?;
    if !c.advance || c.sequential {
        return Ok(());
    }
    let grid = Grid::Fixed((channels as u32).div_ceil(wg));
    plan.dispatch(gpu, shader, &defines.flag("UPDATE", true), &params, &[x.into(), state.into()], grid)
}
