// Rotary embedding in place on x [tokens, heads, head_dim], rotate-half on the first 2*half channels.
// cos/sin are [positions, half] tables computed on the host exactly as transformers does.
// PAIR: a second buffer x2 [tokens, heads2, head_dim] (the keys beside the queries) rotates in the same dispatch.
#include "common/grid.wgsl"
#include "common/step.wgsl"

struct Params {
    heads: u32,
    head_dim: u32,
    half: u32,
    positions: u32,
    heads2: u32,
}
@group(0) @binding(1) var<uniform> params: Params;
@group(0) @binding(2) var<storage, read_write> x: array<f32>;
@group(0) @binding(3) var<storage, read> cos_t: array<f32>;
@group(0) @binding(4) var<storage, read> sin_t: array<f32>;
#if PAIR
@group(0) @binding(5) var<storage, read_write> x2: array<f32>;
#endif

@compute @workgroup_size({{WG}})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let idx = flat_group(wid, nwg) * {{WG}}u + lid;
    let i = idx % params.half;
    let all_heads = params.heads + params.heads2;
    let t = idx / params.half / all_heads;
    let h = idx / params.half % all_heads;
    let pos = step.pos0 + t;
    if (t >= step.n_tokens || pos >= params.positions) {
        return;
    }
    let c = cos_t[pos * params.half + i];
    let s = sin_t[pos * params.half + i];
    if (h < params.heads) {
        let base = (t * params.heads + h) * params.head_dim;
        let a = x[base + i];
        let b = x[base + i + params.half];
        x[base + i] = a * c - b * s;
        x[base + i + params.half] = b * c + a * s;
    }
#if PAIR
    if (h >= params.heads) {
        let base = (t * params.heads2 + h - params.heads) * params.head_dim;
        let a = x2[base + i];
        let b = x2[base + i + params.half];
        x2[base + i] = a * c - b * s;
        x2[base + i + params.half] = b * c + a * s;
    }
#endif
}
