//! RMSNorm (`common/rmsnorm.wgsl`); reference: `reference::norm::rms_norm`.

use super::f32_word;
use crate::device::Gpu;
use crate::error::{GpuError, Result};
use crate::plan::{Grid, Plan, Rows};
use crate::shader::Defines;

/// Where a norm's result goes.
pub enum NormOutput<'a> {
    /// Overwrite the input.
    InPlace,
    /// Write to another buffer.
    Write(&'a wgpu::Buffer),
    /// Add to another buffer (a residual stream).
    Residual(&'a wgpu::Buffer),
}

/// Shape and constants of one RMSNorm.
pub struct NormArgs<'a> {
    /// Weight vector, f32 `[dim]`.
    pub weight: &'a wgpu::Buffer,
    /// Values normalised together.
    pub dim: usize,
    /// Groups of `dim` per row (heads for per-head norms, else 1).
    pub groups_per_row: usize,
    /// Which row count applies.
    pub rows: Rows,
    /// Epsilon.
    pub eps: f32,
    /// `(1 + w)` weights.
    pub unit_offset: bool,
}

/// Records an RMSNorm of `x` per `args`, written per `output`.
pub fn rms_norm(gpu: &Gpu, plan: &mut Plan, args: &NormArgs, x: &wgpu::Buffer, output: NormOutput) -> Result<()> {
    if args.dim == 0 || args.groups_per_row == 0 {
        return Err(GpuError::shape("rms_norm", "empty norm"));
    }
    let wg = gpu.tuning.wg;
    let defines = Defines::new().set("WG", wg);
    let params = [
        args.dim as u32,
        args.groups_per_row as u32,
        args.rows.selector(),
        args.unit_offset as u32,
        f32_word(args.eps),
    ];
    let grid = Grid::Flat { rows: args.rows, per_row: args.groups_per_row as u32, per_group: 1 };
    let shader = "common/rmsnorm.wgsl";
    match output {
        NormOutput::InPlace => {
            plan.dispatch(gpu, shader, &defines.flag("INPLACE", true), &params, &[args.weight.into(), x.into()], grid)
        }
        NormOutput::Write(out) => {
            plan.dispatch(gpu, shader, &defines, &params, &[args.weight.into(), x.into(), out.into()], grid)
        }
        NormOutput::Residual(out) => plan.dispatch(
            gpu,
            shader,
            &defines.flag("RESIDUAL", true),
            &params,
            &[args.weight.into(), x.into(), out.into()],
            grid,
        ),
    }
}
