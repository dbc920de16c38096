// Scaled residual (MiniMax): x = ALPHA * h + BETA * y over [tokens, width], h the block's normed input, y its output.
#include "common/grid.wgsl"
#include "common/step.wgsl"

struct Params {
    width: u32,
    alpha: f32,
    beta: f32,
}
@group(0) @binding(1) var<uniform> params: Params;
@group(0) @binding(2) var<storage, read> h: array<f32>;
@group(0) @binding(3) var<storage, read> y: array<f32>;
@group(0) @binding(4) var<storage, read_write> x: array<f32>;

@compute @workgroup_size({{WG}})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let idx = flat_group(wid, nwg) * {{WG}}u + lid;
    if (idx >= step.n_tokens * params.width) {
        return;
    }
    x[idx] = params.alpha * h[idx] + params.beta * y[idx];
}
