// Shared I/O of the linear-layer kernels: Y[m, n_offset + n] (+)= acc (+ bias[w_row0 + n]) for one row block
// of W. Variants: BIAS, ACCUMULATE (a fused residual add), GATED (W is a gated MLP's gate projection and w2 its up
// projection: store_pair writes Y[m, n_offset + n] = ACT(g) * u, no bias). W may be a row-wise stack of up to three
// matrices (w, w2, w3: see segment), written side by side, or with SPLIT_OUT each to its own output (y, and y2 at
// binding Y2_BINDING, y3 at Y3_BINDING), whose rows are as wide as the matrix.
#include "common/step.wgsl"

struct Params {
    k: u32,
    n_block: u32,
    n_offset: u32,
    n_total: u32,
    row_sel: u32,
    w_row0: u32,      // first weight row of this block (bias index)
    scale: f32,       // multiplier of x W^T (muP multipliers), before the bias
    norm_eps: f32,    // NORM_IN (matvec): the input's RMSNorm epsilon
    norm_offset: f32, // NORM_IN: added to the norm weight (1 for Gemma's 1 + w), else 0
    seg1: u32,        // first row of w2 in a row-wise stack (w, w2, w3), n_block when none
    seg2: u32,        // first row of w3, n_block when none
}

// Row n of the layer as (matrix, row within it): the stack's segments.
fn segment(n: u32) -> vec2<u32> {
    if (n >= params.seg2) {
        return vec2<u32>(2u, n - params.seg2);
    }
    if (n >= params.seg1) {
        return vec2<u32>(1u, n - params.seg1);
    }
    return vec2<u32>(0u, n);
}
@group(0) @binding(1) var<uniform> params: Params;
#if W_QUADS
// The input in quads too (see weights.wgsl).
@group(0) @binding(2) var<storage, read> x: array<vec4<f32>>;
#else
@group(0) @binding(2) var<storage, read> x: array<f32>;
#endif
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
#include "common/weights.wgsl"
#if GATED
#include "common/activations.wgsl"

// Output n from its gate and up products.
fn store_pair(m: u32, n: u32, gate: f32, up: f32) {
    let o = m * params.n_total + params.n_offset + n;
    y[o] = {{ACT}}(gate * params.scale) * (up * params.scale);
}
#endif
#if BIAS
@group(0) @binding(5) var<storage, read> bias: array<f32>;
#endif

#if SPLIT_OUT
@group(0) @binding({{Y2_BINDING}}) var<storage, read_write> y2: array<f32>;
#if Y3_BINDING
@group(0) @binding({{Y3_BINDING}}) var<storage, read_write> y3: array<f32>;
#endif
#endif

fn store(m: u32, n: u32, acc: f32) {
    var v = acc * params.scale;
#if BIAS
    v += bias[params.w_row0 + n];
#endif
#if SPLIT_OUT
    let part = segment(n);
#if Y3_BINDING
    if (part.x == 2u) {
        y3[m * (params.n_block - params.seg2) + part.y] = v;
        return;
    }
#endif
    if (part.x == 1u) {
        y2[m * (params.seg2 - params.seg1) + part.y] = v;
        return;
    }
    y[m * params.seg1 + part.y] = v;
#else
    let o = m * params.n_total + params.n_offset + n;
#if ACCUMULATE
    y[o] = y[o] + v;
#else
    y[o] = v;
#endif
#endif
}
