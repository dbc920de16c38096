// Linear attention around the GLA recurrence (which runs with zero decay), two passes:
//   default  FEATURES: per token, the feature maps of each q and k head and the value heads laid out for GLA.
//            src row [q (H*DK) | k (H*DK) | v (H*DV)], `src_width` floats; dst row [φq (H*F) | φk (H*F) | v' (H*DV')]
//            with DV' = DV + 1 under NORMALIZE (a column of ones, so the recurrence also sums φ(k)).
//            Maps: HADAMARD (W1 x + b1) ⊙ (W2 x + b2); TAYLOR [1, x/d^¼, x_i²/(√2√d), x_i x_j/√d (i<j)];
//            HEDGEHOG softmax([2y, -2y]), y = W x + b. Learned maps read `map` = [q's layers | k's layers], each
//            layer a [DK, DK] weight then a [DK] bias.
//   DIVIDE   out[t, h, j] = carried[t, h, j] / (carried[t, h, DV] + 1e-12): the normalised form of Based and Hedgehog.
#include "common/grid.wgsl"
#include "common/step.wgsl"

struct Params {
    heads: u32,
    dk: u32,
    dv: u32,
    features: u32,
    src_width: u32,
    dst_width: u32,
}
@group(0) @binding(1) var<uniform> params: Params;
@group(0) @binding(2) var<storage, read> src: array<f32>;
@group(0) @binding(3) var<storage, read_write> dst: array<f32>;
#if MAP
@group(0) @binding(4) var<storage, read> fmap: array<f32>;
#endif

#if DIVIDE
@compute @workgroup_size({{WG}})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let idx = flat_group(wid, nwg) * {{WG}}u + lid;
    let per_token = params.heads * params.dv;
    let t = idx / per_token;
    if (t >= step.n_tokens) {
        return;
    }
    let h = (idx % per_token) / params.dv;
    let j = idx % params.dv;
    let carried = t * params.heads * (params.dv + 1u) + h * (params.dv + 1u);
    dst[idx] = src[carried + j] / (src[carried + params.dv] + 1e-12);
}
#else
#if NORMALIZE
const CARRIED: u32 = 1u;
#else
const CARRIED: u32 = 0u;
#endif

// One learned layer's output channel e: W[e]·x + b[e], the layer starting at float `at` of `map`.
#if MAP
fn layer(at: u32, x0: u32, e: u32) -> f32 {
    let d = params.dk;
    var y = fmap[at + d * d + e];
    for (var i = 0u; i < d; i++) {
        y += fmap[at + e * d + i] * src[x0 + i];
    }
    return y;
}
#endif

// Writes the F features of the head vector at src[x0..x0 + DK] to dst[y0..]; `which` is 0 for q, 1 for k.
fn features(x0: u32, y0: u32, which: u32) {
    let d = params.dk;
#if HADAMARD
    let at = which * 2u * d * (d + 1u);
    for (var e = 0u; e < d; e++) {
        dst[y0 + e] = layer(at, x0, e) * layer(at + d * (d + 1u), x0, e);
    }
#endif
#if TAYLOR
    let root = sqrt(f32(d));
    let quarter = sqrt(root);
    dst[y0] = 1.0;
    var o = y0 + 1u;
    for (var i = 0u; i < d; i++) {
        dst[o + i] = src[x0 + i] / quarter;
        dst[o + d + i] = src[x0 + i] * src[x0 + i] / (1.4142135 * root);
    }
    o += 2u * d;
    for (var i = 0u; i < d; i++) {
        for (var j = i + 1u; j < d; j++) {
            dst[o] = src[x0 + i] * src[x0 + j] / root;
            o++;
        }
    }
#endif
#if HEDGEHOG
    let at = which * d * (d + 1u);
    var top = 0.0;
    for (var e = 0u; e < d; e++) {
        let y = layer(at, x0, e);
        dst[y0 + e] = y;
        top = max(top, abs(y));
    }
    var sum = 0.0;
    for (var e = 0u; e < d; e++) {
        let y = dst[y0 + e];
        let up = exp(2.0 * (y - top));
        let down = exp(2.0 * (-y - top));
        dst[y0 + e] = up;
        dst[y0 + d + e] = down;
        sum += up + down;
    }
    for (var e = 0u; e < 2u * d; e++) {
        dst[y0 + e] /= sum;
    }
#endif
}

@compute @workgroup_size({{WG}})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let idx = flat_group(wid, nwg) * {{WG}}u + lid;
    let h_count = params.heads;
    let t = idx / (3u * h_count);
    if (t >= step.n_tokens) {
        return;
    }
    let slot = idx % (3u * h_count);
    let x_row = t * params.src_width;
    let y_row = t * params.dst_width;
    if (slot < 2u * h_count) {
        let which = slot / h_count;
        let h = slot % h_count;
        features(x_row + (which * h_count + h) * params.dk, y_row + (which * h_count + h) * params.features, which);
        return;
    }
    let h = slot - 2u * h_count;
    let x0 = x_row + 2u * h_count * params.dk + h * params.dv;
    let y0 = y_row + 2u * h_count * params.features + h * (params.dv + CARRIED);
    for (var j = 0u; j < params.dv; j++) {
        dst[y0 + j] = src[x0 + j];
    }
    if (CARRIED == 1u) {
        dst[y0 + params.dv] = 1.0;
    }
}
#endif
