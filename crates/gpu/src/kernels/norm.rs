//! RMSNorm and LayerNorm (`common/rmsnorm.wgsl`); reference: `reference::norm::{rms_norm, layer_norm}`.

use super::f32_word;
use crate::device::Gpu;
use crate::error::{GpuError, Result};
use crate::plan::{Grid, Plan, Rows};
use crate::shader::Defines;
use ternlight_core::spec::Activation;

/// Where a norm's result goes.
pub enum NormOutput<'a> {
    /// Overwrite the input.
    InPlace,
    /// Write to another buffer.
    Write(&'a wgpu::Buffer),
    /// Add to another buffer (a residual stream).
    Residual(&'a wgpu::Buffer),
}

/// Shape and constants of one RMSNorm (or LayerNorm, when `centered`).
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
    /// Floats from one row to the next; 0 means `dim * groups_per_row` (rows hold nothing else).
    pub row_stride: usize,
    /// LayerNorm: the mean is subtracted first.
    pub centered: bool,
    /// Bias `[dim]` added after the weight.
    pub bias: Option<&'a wgpu::Buffer>,
}

/// Records an RMSNorm of `x` per `args`, written per `output`.
pub fn rms_norm(gpu: &Gpu, plan: &mut Plan, args: &NormArgs, x: &wgpu::Buffer, output: NormOutput) -> Result<()> {
    rms_norm_gated(gpu, plan, args, x, output, None)
}

/// Records an RMSNorm whose result is multiplied by `act(gate)` element-wise when a gate is given (`act` SiLU or
/// sigmoid).
pub fn rms_norm_gated(
    gpu: &Gpu,
    plan: &mut Plan,
    args: &NormArgs,
    x: &wgpu::Buffer,
    output: NormOutput,
    gate: Option<(&wgpu::Buffer, Activation)>,
) -> Result<()> {
    if args.dim == 0 || args.groups_per_row == 0 {
        return Err(GpuError::shape("rms_norm", "empty norm"));
    }
    let width = args.dim * args.groups_per_row;
    let stride = if args.row_stride == 0 { width } else { args.row_stride };
    if stride < width {
        return Err(GpuError::shape("rms_norm", format!("row stride {stride} under the {width} normalised values")));
    }
    plan.check_rows("rms_norm", "input", x, args.rows, stride)?;
    if let NormOutput::Write(out) | NormOutput::Residual(out) = &output {
        plan.check_rows("rms_norm", "output", out, args.rows, stride)?;
    }
    let mut defines = Defines::new().set("WG", gpu.tuning.wg).flag("CENTERED", args.centered);
    if let Some((g, act)) = gate {
        plan.check_rows("rms_norm", "gate", g, args.rows, width)?;
        let act = match act {
            Activation::Silu => "silu",
            Activation::Sigmoid => "sigmoid",
            other => return Err(GpuError::shape("rms_norm", format!("gate activation {other:?}"))),
        };
        defines = defines.flag("GATE", true).set("GATE_ACT", act);
    }
    let params = [
        args.dim as u32,
        args.groups_per_row as u32,
        args.rows.selector(),
        args.unit_offset as u32,
        f32_word(args.eps),
        stride as u32,
    ];
    let grid = Grid::Flat { rows: args.rows, per_row: args.groups_per_row as u32, per_group: 1 };
    let shader = "common/rmsnorm.wgsl";
    let (defines, mut buffers) = match output {
        NormOutput::InPlace => (defines.flag("INPLACE", true), vec![args.weight.into(), x.into()]),
        NormOutput::Write(out) => (defines, vec![args.weight.into(), x.into(), out.into()]),
        NormOutput::Residual(out) => (defines.flag("RESIDUAL", true), vec![args.weight.into(), x.into(), out.into()]),
    };
    let mut defines = defines.flag("BIAS", args.bias.is_some());
    if let Some(b) = args.bias {
        defines = defines.set("BIAS_BINDING", 2 + buffers.len());
        buffers.push(b.into());
    }
    let defines = defines.set("GATE_BINDING", 2 + buffers.len());
    if let Some((g, _)) = gate {
        buffers.push(g.into());
    }
    plan.dispatch(gpu, shader, &defines, &params, &buffers, grid)
}
