#if PACKED
requires packed_4x8_integer_dot_product;
#endif
// Per-token int8 activation fake-quantisation for ternary (BitNet) linear layers, one workgroup per row of WIDTH:
// out = clamp(round(x * s), -128, 127) / s with s = 127 / max(max|x|, 1e-5). With NORM, x is first RMSNormed with
// weight norm_w and eps (fla's BitLinear normalises its own input). With PACKED each row becomes one record of
// params.stride words for matvec_dp4.wgsl instead of f32: the int8 values as i8x4 words [WIDTH/4] (WIDTH a multiple
// of 16; each group of 16 values interleaved, see below), the row's dequantisation factor 1/s (f32 bits), then the
// HGF values below (f32 bits). One buffer carries all three, so the product kernels bind one buffer for them.
// With HGF the row's unquantised input also goes through Hybrid Gated Flow's down projections, up to three matrices
// A [RANK_i, WIDTH] of one stored dtype (common/weights.wgsl's w, w2, w3: the distinct corrections of the
// projections that share this quantisation): MID_WIDTH values per row hold x A^T of each side by side (MID_WIDTH =
// RANK1 + RANK2 + RANK3), of the raw x, or of the normalised x with HGF_NORMED (the norm is the block's pre-norm
// folded in here, not the layer's own); without PACKED they go to mid [rows, MID_WIDTH].
#include "common/grid.wgsl"
#include "common/step.wgsl"

struct Params {
    width: u32,
    row_sel: u32,
    eps: f32,
    norm_offset: f32, // added to norm_w (1 for norms stored as w - 1)
    stride: u32,      // PACKED: words per row record
}
@group(0) @binding(1) var<uniform> params: Params;
@group(0) @binding(2) var<storage, read> x: array<f32>;
#if PACKED
@group(0) @binding(3) var<storage, read_write> out: array<u32>;
#else
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
#endif
#if NORM
@group(0) @binding({{NORM_BINDING}}) var<storage, read> norm_w: array<f32>;
#endif
#if HGF
#if !PACKED
@group(0) @binding({{MID_BINDING}}) var<storage, read_write> mid: array<f32>;
#endif
#include "common/weights.wgsl"
#endif

// The row's reductions, all in one tree (the loops over the lanes are unrolled, as in common/matvec.wgsl): lane 0 the sum of squares (NORM), lane 1 the largest |x * norm_w|, lanes
// 2.. the HGF down projections' sums. LANES is 2, or 2 + MID_WIDTH with HGF.
var<workgroup> partial: array<f32, {{WG}} * {{LANES}}>;

// Input i of the row at base, normalised when NORM.
fn value(base: u32, i: u32, inv: f32) -> f32 {
#if NORM
    return x[base + i] * inv * (norm_w[i] + params.norm_offset);
#else
    return x[base + i];
#endif
}

@compute @workgroup_size({{WG}})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let row = flat_group(wid, nwg);
    if (row >= row_count(params.row_sel)) {
        return;
    }
    let base = row * params.width;
    // One pass over the row: the norm's 1/rms scales every normalised value alike, so the largest |value| is
    // 1/rms times the largest |x * norm_w|, and the HGF sums of normalised values are 1/rms times those of x * norm_w.
    var lanes: array<f32, {{LANES}}>;
    for (var i = lid; i < params.width; i += {{WG}}u) {
        let xi = x[base + i];
        var v = xi;
#if NORM
        v *= norm_w[i] + params.norm_offset;
#endif
        lanes[0] += xi * xi;
        lanes[1] = max(lanes[1], abs(v));
#if HGF
#if HGF_NORMED
        let h = v;
#else
        let h = xi;
#endif
#unroll r RANK1
        lanes[2u + {{r}}] += h * weight_at({{r}} * params.width + i, 0u);
#endunroll
#if W2_BINDING
#unroll r RANK2
        lanes[2u + {{RANK1}}u + {{r}}] += h * weight_at({{r}} * params.width + i, 1u);
#endunroll
#endif
#if W3_BINDING
#unroll r RANK3
        lanes[2u + {{RANK1}}u + {{RANK2}}u + {{r}}] += h * weight_at({{r}} * params.width + i, 2u);
#endunroll
#endif
#endif
    }
#unroll c LANES
    partial[{{c}} * {{WG}}u + lid] = lanes[{{c}}];
#endunroll
    workgroupBarrier();
    for (var s = {{WG}}u / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            partial[{{WG}}u + lid] = max(partial[{{WG}}u + lid], partial[{{WG}}u + lid + s]);
            for (var c = 0u; c < {{LANES}}u; c++) {
                if (c != 1u) {
                    partial[c * {{WG}}u + lid] += partial[c * {{WG}}u + lid + s];
                }
            }
        }
        workgroupBarrier();
    }
    var inv = 1.0;
#if NORM
    inv = inverseSqrt(partial[0] / f32(params.width) + params.eps);
#endif
    let scale = 127.0 / max(partial[{{WG}}u] * inv, 1e-5);
#if PACKED
    // Word j of the 16 values of group j / 4 holds values q, q + 4, q + 8, q + 12 of the group (q = j % 4) in its
    // bytes: the values whose weight codes matvec_dp4.wgsl masks out of a code word together.
    for (var j = lid; j < params.width / 4u; j += {{WG}}u) {
        let first = 16u * (j / 4u) + j % 4u;
        var q: vec4<i32>;
        for (var b = 0u; b < 4u; b++) {
            q[b] = i32(clamp(round(value(base, first + 4u * b, inv) * scale), -128.0, 127.0));
        }
        out[row * params.stride + j] = pack4xI8(q);
    }
    if (lid == 0u) {
        out[row * params.stride + params.width / 4u] = bitcast<u32>(1.0 / scale);
    }
#else
    for (var i = lid; i < params.width; i += {{WG}}u) {
        out[base + i] = clamp(round(value(base, i, inv) * scale), -128.0, 127.0) / scale;
    }
#endif
#if HGF
    var mid_scale = 1.0;
#if HGF_NORMED
    mid_scale = inv;
#endif
    for (var r = lid; r < {{MID_WIDTH}}u; r += {{WG}}u) {
        let v = partial[(2u + r) * {{WG}}u] * mid_scale;
#if PACKED
        out[row * params.stride + params.width / 4u + 1u + r] = bitcast<u32>(v);
#else
        mid[row * {{MID_WIDTH}}u + r] = v;
#endif
    }
#endif
}
