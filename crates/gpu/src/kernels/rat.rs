//! RAT (`linear/rat.wgsl`): the in-chunk gated recurrence (one invocation per channel, sequential over the
//! forward's tokens) and softmax attention over chunk summaries (one invocation per token and head). One path for
//! prefill and decode: the running state and the summaries live in the layer's state buffer. Reference:
//! `reference::rat`.

use super::rope::RopeTables;
use crate::device::Gpu;
use crate::error::{GpuError, Result};
use crate::plan::{Grid, Plan, Rows};
use crate::shader::Defines;

/// One RAT layer's call.
pub struct Rat<'a> {
    /// Model width.
    pub hidden: usize,
    /// Channels per head.
    pub head_dim: usize,
    /// Distinct q/k heads.
    pub groups: usize,
    /// Tokens per chunk.
    pub chunk: usize,
    /// `in_proj` output `[tokens, 3 hidden + 2 groups head_dim]`.
    pub proj: &'a wgpu::Buffer,
    /// Gate bias `[hidden]`.
    pub gate_bias: &'a wgpu::Buffer,
    /// Running `[k̃ | x̃]` then `chunks` summary rows, read and updated.
    pub state: &'a wgpu::Buffer,
    /// Summary rows `state` holds.
    pub chunks: usize,
    /// Per-token `[k̃ | x̃]` `[tokens, 2 hidden]`.
    pub scan: &'a wgpu::Buffer,
    /// `σ(z) ⊙ o` `[tokens, hidden]`.
    pub out: &'a wgpu::Buffer,
    /// RoPE tables covering the chunk positions.
    pub rope: &'a RopeTables,
}

/// Records the recurrence then the attention for the forward's tokens.
pub fn rat(gpu: &Gpu, plan: &mut Plan, r: &Rat) -> Result<()> {
    let in_width = 3 * r.hidden + 2 * r.groups * r.head_dim;
    plan.check_rows("rat", "projection", r.proj, Rows::Tokens, in_width)?;
    plan.check_rows("rat", "scan", r.scan, Rows::Tokens, 2 * r.hidden)?;
    plan.check_rows("rat", "output", r.out, Rows::Tokens, r.hidden)?;
    let fits = r.state.size() >= (4 * 2 * r.hidden * (1 + r.chunks)) as u64
        && r.gate_bias.size() >= (4 * r.hidden) as u64
        && r.rope.positions > r.chunks
        && r.rope.rotary_dim <= r.head_dim;
    if r.head_dim == 0 || !r.hidden.is_multiple_of(r.head_dim) || r.groups == 0 || r.chunk == 0 || !fits {
        return Err(GpuError::shape(
            "rat",
            format!(
                "hidden {} in heads of {}, {} groups, chunk {}, state for {} chunks, rope for {} positions",
                r.hidden, r.head_dim, r.groups, r.chunk, r.chunks, r.rope.positions
            ),
        ));
    }
    let wg = gpu.tuning.wg;
    let params = [r.hidden, r.head_dim, r.groups, r.chunk, in_width, r.rope.rotary_dim / 2, r.chunks].map(|v| v as u32);
    let scan = Defines::new().set("WG", wg);
    let buffers = [r.proj.into(), r.state.into(), r.scan.into(), r.gate_bias.into()];
    let groups = (2 * r.hidden).div_ceil(wg as usize) as u32;
    plan.dispatch(gpu, "linear/rat.wgsl", &scan, &params, &buffers, Grid::Fixed(groups))?;
    let attend = Defines::new().set("WG", wg).set("HEAD_DIM", r.head_dim).flag("ATTEND", true);
    let buffers =
        [r.proj.into(), r.state.into(), r.scan.into(), r.out.into(), (&r.rope.cos).into(), (&r.rope.sin).into()];
    let grid = Grid::Flat { rows: Rows::Tokens, per_row: (r.hidden / r.head_dim) as u32, per_group: wg };
    plan.dispatch(gpu, "linear/rat.wgsl", &attend, &params, &buffers, grid)
}
