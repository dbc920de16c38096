// Rotary embedding in place on x [tokens, heads, head_dim], rotate-half on the first 2*half channels.
// cos/sin are [positions, half] tables computed on the host exactly as transformers does.
// PAIR: a second buffer x2 [tokens, heads2, head_dim] (the keys beside the queries) rotates in the same dispatch.
// HEAD_NORM (with PAIR): each head is first RMSNormed over head_dim with its buffer's weight (q_norm, k_norm; eps,
// norm_offset added to the weight), one invocation per head doing the whole head.
#include "common/grid.wgsl"
#include "common/step.wgsl"

struct Params {
    heads: u32,
    head_dim: u32,
    half: u32,
    positions: u32,
    heads2: u32,
    eps: f32,
    norm_offset: f32,
}
@group(0) @binding(1) var<uniform> params: Params;
@group(0) @binding(2) var<storage, read_write> x: array<f32>;
@group(0) @binding(3) var<storage, read> cos_t: array<f32>;
@group(0) @binding(4) var<storage, read> sin_t: array<f32>;
#if PAIR
@group(0) @binding(5) var<storage, read_write> x2: array<f32>;
#endif
#if HEAD_NORM
@group(0) @binding(6) var<storage, read> q_norm: array<f32>;
@group(0) @binding(7) var<storage, read> k_norm: array<f32>;

// Element i of the first buffer, or of the second when `second`.
fn load(second: bool, i: u32) -> f32 {
    if (second) {
        return x2[i];
    }
    return x[i];
}

fn put(second: bool, i: u32, v: f32) {
    if (second) {
        x2[i] = v;
    } else {
        x[i] = v;
    }
}

// Normalises then rotates head h of token t (heads of the second buffer after the first's).
fn norm_and_rotate(t: u32, h: u32, pos: u32) {
    let second = h >= params.heads;
    var base = (t * params.heads + h) * params.head_dim;
    if (second) {
        base = (t * params.heads2 + h - params.heads) * params.head_dim;
    }
    var squares = 0.0;
    for (var d = 0u; d < params.head_dim; d++) {
        let v = load(second, base + d);
        squares += v * v;
    }
    let inv = inverseSqrt(squares / f32(params.head_dim) + params.eps);
    for (var i = 0u; i < params.half; i++) {
        var wa = q_norm[i];
        var wb = q_norm[i + params.half];
        if (second) {
            wa = k_norm[i];
            wb = k_norm[i + params.half];
        }
        let a = load(second, base + i) * inv * (wa + params.norm_offset);
        let b = load(second, base + i + params.half) * inv * (wb + params.norm_offset);
        let c = cos_t[pos * params.half + i];
        let s = sin_t[pos * params.half + i];
        put(second, base + i, a * c - b * s);
        put(second, base + i + params.half, b * c + a * s);
    }
    // Channels past the rotary ones (partial rotation) are only normalised.
    for (var d = 2u * params.half; d < params.head_dim; d++) {
        var wd = q_norm[d];
        if (second) {
            wd = k_norm[d];
        }
        put(second, base + d, load(second, base + d) * inv * (wd + params.norm_offset));
    }
}
#endif

@compute @workgroup_size({{WG}})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let idx = flat_group(wid, nwg) * {{WG}}u + lid;
    let all_heads = params.heads + params.heads2;
#if HEAD_NORM
    let t_head = idx / all_heads;
    if (t_head < step.n_tokens && step.pos0 + t_head < params.positions) {
        norm_and_rotate(t_head, idx % all_heads, step.pos0 + t_head);
    }
#else
    let i = idx % params.half;
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
#endif
}
