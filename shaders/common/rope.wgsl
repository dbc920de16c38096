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
#endif

// Element i of the first buffer, or of the second when `second`.
fn load(second: bool, i: u32) -> f32 {
#if PAIR
    if (second) {
        return x2[i];
    }
#endif
    return x[i];
}

fn put(second: bool, i: u32, v: f32) {
#if PAIR
    if (second) {
        x2[i] = v;
        return;
    }
#endif
    x[i] = v;
}

// Where head h of token t starts, in the first buffer or (h past its heads) the second.
fn head_base(t: u32, h: u32) -> u32 {
    if (h >= params.heads) {
        return (t * params.heads2 + h - params.heads) * params.head_dim;
    }
    return (t * params.heads + h) * params.head_dim;
}

// Rotates the pair (i, i + half) of the head at base, its values already read as a and b.
fn rotate(second: bool, base: u32, i: u32, pos: u32, a: f32, b: f32) {
    let c = cos_t[pos * params.half + i];
    let s = sin_t[pos * params.half + i];
    put(second, base + i, a * c - b * s);
    put(second, base + i + params.half, b * c + a * s);
}

#if HEAD_NORM
// The norm weight of channel d of the first buffer's heads, or of the second's.
fn norm_weight(second: bool, d: u32) -> f32 {
    if (second) {
        return k_norm[d] + params.norm_offset;
    }
    return q_norm[d] + params.norm_offset;
}

// Normalises then rotates head h of token t.
fn norm_and_rotate(t: u32, h: u32, pos: u32) {
    let second = h >= params.heads;
    let base = head_base(t, h);
    var squares = 0.0;
    for (var d = 0u; d < params.head_dim; d++) {
        let v = load(second, base + d);
        squares += v * v;
    }
    let inv = inverseSqrt(squares / f32(params.head_dim) + params.eps);
    for (var i = 0u; i < params.half; i++) {
        let a = load(second, base + i) * inv * norm_weight(second, i);
        let b = load(second, base + i + params.half) * inv * norm_weight(second, i + params.half);
        rotate(second, base, i, pos, a, b);
    }
    // Channels past the rotary ones (partial rotation) are only normalised.
    for (var d = 2u * params.half; d < params.head_dim; d++) {
        put(second, base + d, load(second, base + d) * inv * norm_weight(second, d));
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
    let second = h >= params.heads;
    let base = head_base(t, h);
    rotate(second, base, i, pos, load(second, base + i), load(second, base + i + params.half));
#endif
}
