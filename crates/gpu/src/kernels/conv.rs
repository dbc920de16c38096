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

/// Tokens each invocation of the parallel conv takes where channels come in quads (`QUAD_BLOCK`).
const QUAD_TOKENS: u32 = 8;

/// The widest kernel the quad variant unrolls.
const QUAD_KERNEL_MAX: usize = 8;

/// The defines of the quad variant for a kernel `kernel` wide: [`QUAD_TOKENS`] tokens per invocation, and the
/// inputs they read.
fn quad_block(defines: &Defines, kernel: usize) -> Defines {
    let window = QUAD_TOKENS as usize + kernel - 1;
    defines.clone().flag("QUAD_BLOCK", true).set("TT", QUAD_TOKENS).set("KERNEL", kernel).set("WINDOW", window)
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
    let (per_row, quads) = (channels as u32, channels.is_multiple_of(4) && kernel <= QUAD_KERNEL_MAX);
    let (grid, conv) = match c.sequential {
        true => (Grid::Fixed(per_row.div_ceil(wg)), defines.clone()),
        false if quads => {
            let grid = Grid::Tiles { x: (per_row / 4).div_ceil(wg), rows: Rows::Tokens, rows_per_group: QUAD_TOKENS };
            (grid, quad_block(&defines, kernel))
        }
        false => (Grid::Flat { rows: Rows::Tokens, per_row, per_group: wg }, defines.clone()),
    };
    let conv = conv.flag("SILU", c.silu).flag("BIAS", c.bias.is_some());
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
