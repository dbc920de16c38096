// Embedding gather for one row block of the table: out[t, :] = table[ids[t], :] * scale when ids[t] is in the block.
#include "common/grid.wgsl"
#include "common/step.wgsl"

struct Params {
    dim: u32,
    row0: u32,
    rows: u32,
    scale: f32,
}
@group(0) @binding(1) var<uniform> params: Params;
@group(0) @binding(2) var<storage, read> ids: array<u32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
#include "common/weights.wgsl"

@compute @workgroup_size({{WG}})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let idx = flat_group(wid, nwg) * {{WG}}u + lid;
    let t = idx / params.dim;
    let d = idx % params.dim;
    if (t >= step.n_tokens) {
        return;
    }
    let id = ids[t];
    if (id < params.row0 || id >= params.row0 + params.rows) {
        return;
    }
    out[idx] = w_at((id - params.row0) * params.dim + d) * params.scale;
}
