//! Gated element-wise products (MLP activations, output gates) (`common/gated_act.wgsl`); reference: `reference::mlp::gated`.

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
    for (what, b) in [("gate", gate), ("up", up), ("output", out)] {
        plan.check_rows("gated_act", what, b, Rows::Tokens, width)?;
    }
    let wg = gpu.tuning.wg;
    let name = match act {
        Activation::Silu => "silu",
        Activation::GeluTanh => "gelu_tanh",
        Activation::Sigmoid => "sigmoid",
        Activation::Identity => "identity",
    };
    let defines = Defines::new().set("WG", wg).set("ACT", name);
    let grid = Grid::Flat { rows: Rows::Tokens, per_row: width as u32, per_group: wg };
    plan.dispatch(
        gpu,
        "common/gated_act.wgsl",
        &defines,
        &[width as u32, Rows::Tokens.selector()],
        &[gate.into(), up.into(), out.into()],
        grid,
    )
}
