//! Gated element-wise products (MLP activations, output gates) (`common/gated_act.wgsl`); reference: `reference::mlp::gated`.

/// The WGSL function of `act` (`common/activations.wgsl`, or a built-in).
pub(crate) fn act_name(act: Activation) -> &'static str {
    match act {
        Activation::Silu => "silu",
        Activation::GeluTanh => "gelu_tanh",
        Activation::Sigmoid => "sigmoid",
        Activation::Identity => "identity",
        Activation::Relu2 => "relu2",
        // WGSL's own built-in.
        Activation::Tanh => "tanh",
    }
}

use crate::device::Gpu;
use crate::error::Result;
use crate::plan::{Grid, Plan, Rows};
use crate::shader::Defines;
use ternlight_core::spec::Activation;

/// Records `out = act(gate) * up` over `[tokens, width]`.
pub fn gated_act(
    gpu: &Gpu,
    plan: &mut Plan,
    act: Activation,
    gate: &wgpu::Buffer,
    up: &wgpu::Buffer,
    out: &wgpu::Buffer,
    width: usize,
) -> Result<()> {
    record(gpu, plan, act, (gate, Some(up), out), width, None)
}

/// Records `out = act(gate) * up * sigmoid(row_gate[t])` over `[tokens, width]`, with `row_gate` `[tokens]` (the
/// scalar gate of a MoE shared expert).
pub fn gated_act_row_gated(
    gpu: &Gpu,
    plan: &mut Plan,
    act: Activation,
    [gate, up, out]: [&wgpu::Buffer; 3],
    width: usize,
    row_gate: &wgpu::Buffer,
) -> Result<()> {
    plan.check_rows("gated_act", "row gate", row_gate, Rows::Tokens, 1)?;
    record(gpu, plan, act, (gate, Some(up), out), width, Some(row_gate))
}

/// Records `out = act(x)` over `[tokens, width]`.
pub fn activation(
    gpu: &Gpu,
    plan: &mut Plan,
    act: Activation,
    x: &wgpu::Buffer,
    out: &wgpu::Buffer,
    width: usize,
) -> Result<()> {
    record(gpu, plan, act, (x, None, out), width, None)
}

/// One dispatch of `common/gated_act.wgsl`: `act(gate)`, times `up` when given, times the row gate when given.
fn record(
    gpu: &Gpu,
    plan: &mut Plan,
    act: Activation,
    (gate, up, out): (&wgpu::Buffer, Option<&wgpu::Buffer>, &wgpu::Buffer),
    width: usize,
    row_gate: Option<&wgpu::Buffer>,
) -> Result<()> {
    for (what, b) in [("gate", Some(gate)), ("up", up), ("output", Some(out))] {
        if let Some(b) = b {
            plan.check_rows("gated_act", what, b, Rows::Tokens, width)?;
        }
    }
    let no_up = up.is_none();
    let wg = gpu.tuning.wg;
    let defines = Defines::new()
        .set("WG", wg)
        .set("ACT", act_name(act))
        .flag("ROW_GATE", row_gate.is_some())
        .flag("NO_UP", no_up);
    let grid = Grid::Flat { rows: Rows::Tokens, per_row: width as u32, per_group: wg };
    let mut buffers = vec![gate.into()];
    if let Some(up) = up {
        buffers.push(up.into());
    }
    buffers.push(out.into());
    if let Some(g) = row_gate {
        buffers.push(g.into());
    }
    plan.dispatch(gpu, "common/gated_act.wgsl", &defines, &[width as u32, Rows::Tokens.selector()], &buffers, grid)
}
