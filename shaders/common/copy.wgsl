// A streaming copy, dst = src, four floats per invocation: what the device's memory moves per second, the roofline
// decode speed is measured against (`ternlight bench --roofline`).
#include "common/grid.wgsl"
#include "common/step.wgsl"

struct Params {
    quads: u32,
}
@group(0) @binding(1) var<uniform> params: Params;
@group(0) @binding(2) var<storage, read> src: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> dst: array<vec4<f32>>;

@compute @workgroup_size({{WG}})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let idx = flat_group(wid, nwg) * {{WG}}u + lid;
    if (idx < params.quads && step.n_tokens > 0u) {
        dst[idx] = src[idx];
    }
}
