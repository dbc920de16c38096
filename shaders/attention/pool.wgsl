// Mean-pooled keys for InfLLM-V2 block selection: when this forward completes a fine window (KERNEL positions
// starting at a multiple of STRIDE), its mean key row goes to pooled [windows, n_kv_heads, D]. One invocation per
// (token, kv head, channel); the token whose position ends a window writes it.
#include "common/grid.wgsl"
#include "common/step.wgsl"

struct Params {
    row: u32,     // n_kv_heads * D
    kernel: u32,
    stride: u32,
}
@group(0) @binding(1) var<uniform> params: Params;
@group(0) @binding(2) var<storage, read> k_cache: array<f32>;
@group(0) @binding(3) var<storage, read_write> pooled: array<f32>;

@compute @workgroup_size({{WG}})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let idx = flat_group(wid, nwg) * {{WG}}u + lid;
    let t = idx / params.row;
    let r = idx % params.row;
    let end = step.pos0 + t + 1u;
    if (t >= step.n_tokens || end < params.kernel || (end - params.kernel) % params.stride != 0u) {
        return;
    }
    let i = (end - params.kernel) / params.stride;
    var sum = 0.0;
    for (var j = i * params.stride; j < end; j++) {
        sum += k_cache[j * params.row + r];
    }
    pooled[i * params.row + r] = sum / f32(params.kernel);
}
