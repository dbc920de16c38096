// Gated element-wise product: out = act(gate) * up, ACT in {silu, gelu_tanh, sigmoid, identity, relu2, tanh} (MLPs, output gates,
// gated convolutions); ROW_GATE also multiplies row t by sigmoid(row_gate[t]) (a MoE shared expert's gate); NO_UP
// computes out = act(gate) alone.
#include "common/grid.wgsl"
#include "common/step.wgsl"
#include "common/activations.wgsl"

struct Params {
    width: u32,
    row_sel: u32,
}
@group(0) @binding(1) var<uniform> params: Params;
@group(0) @binding(2) var<storage, read> gate: array<f32>;
#if NO_UP
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
#else
@group(0) @binding(3) var<storage, read> up: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;
#endif
#if ROW_GATE
@group(0) @binding(5) var<storage, read> row_gate: array<f32>;
#endif

@compute @workgroup_size({{WG}})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let idx = flat_group(wid, nwg) * {{WG}}u + lid;
    if (idx >= row_count(params.row_sel) * params.width) {
        return;
    }
#if NO_UP
    out[idx] = {{ACT}}(gate[idx]);
#else
#if ROW_GATE
    out[idx] = {{ACT}}(gate[idx]) * up[idx] * sigmoid(row_gate[idx / params.width]);
#else
    out[idx] = {{ACT}}(gate[idx]) * up[idx];
#endif
#endif
}
