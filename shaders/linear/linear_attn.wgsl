// The Hadamard feature map of linear attention, per head: dst[t, h, d] = (W1[d]·x + b1[d]) * (W2[d]·x + b2[d])
// with x = src[t, h, :] (dk channels). src and dst rows are `width` floats; the head vectors start at `offset`.
// W1, W2 [dk, dk] and b1, b2 [dk] are f32. The GLA kernels then run the recurrence with zero decay.
#include "common/grid.wgsl"
#include "common/step.wgsl"

struct Params {
    heads: u32,
    dk: u32,
    width: u32,
    offset: u32,
}
@group(0) @binding(1) var<uniform> params: Params;
@group(0) @binding(2) var<storage, read> src: array<f32>;
@group(0) @binding(3) var<storage, read_write> dst: array<f32>;
@group(0) @binding(4) var<storage, read> w1: array<f32>;
@group(0) @binding(5) var<storage, read> b1: array<f32>;
@group(0) @binding(6) var<storage, read> w2: array<f32>;
@group(0) @binding(7) var<storage, read> b2: array<f32>;

@compute @workgroup_size({{WG}})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let idx = flat_group(wid, nwg) * {{WG}}u + lid;
    let per_token = params.heads * params.dk;
    let t = idx / per_token;
    if (t >= step.n_tokens) {
        return;
    }
    let h = (idx % per_token) / params.dk;
    let d = idx % params.dk;
    let base = t * params.width + params.offset + h * params.dk;
    var a = b1[d];
    var b = b2[d];
    for (var e = 0u; e < params.dk; e++) {
        let x = src[base + e];
        a += w1[d * params.dk + e] * x;
        b += w2[d * params.dk + e] * x;
    }
    dst[base + d] = a * b;
}
