requires packed_4x8_integer_dot_product;
// One-token ternary linear layer on int8 activations with dot4I8Packed: the activations arrive as i8x4 words
// xq [rows, K/4] with their dequantisation factor xs [rows] (act_quant.wgsl, PACKED); weight codes are 2-bit, 16 per
// u32 (K a multiple of 16, so rows start on words). A byte of 4 codes c (0..2, trit + 1) spreads to an i8x4 word, so
// sum x (c - 1) = dot4(x, spread) - dot4(x, 1111). One workgroup computes NR outputs of one row, its lanes splitting K.
// y[m, n_offset + n] (+)= (that sum) * xs[m] * scale. With HGF, plus Hybrid Gated Flow's up projection of the
// row's low-rank values: + sum_r bg[w_row0 + n, r] mid[m, r] (bg [rows, RANK] f32, the gate folded in).
#include "common/step.wgsl"

struct Params {
    k: u32,
    n_block: u32,
    n_offset: u32,
    n_total: u32,
    row_sel: u32,
    scale: f32,
    accumulate: u32,
    w_row0: u32,  // first weight row of this block
}
@group(0) @binding(1) var<uniform> params: Params;
@group(0) @binding(2) var<storage, read> xq: array<u32>;
@group(0) @binding(3) var<storage, read> xs: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
@group(0) @binding(5) var<storage, read> w: array<u32>;
#if HGF
@group(0) @binding(6) var<storage, read> mid: array<f32>;
@group(0) @binding(7) var<storage, read> bg: array<f32>;
#endif

var<workgroup> partial: array<i32, {{WG}} * ({{NR}} + 1)>;

// Four 2-bit codes of a byte as an i8x4 word of 0..2.
fn spread(byte: u32) -> u32 {
    return (byte & 3u) | (((byte >> 2u) & 3u) << 8u) | (((byte >> 4u) & 3u) << 16u) | (((byte >> 6u) & 3u) << 24u);
}

@compute @workgroup_size({{WG}})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let m = wid.y;
    if (m >= row_count(params.row_sel)) {
        return;
    }
    let n0 = wid.x * {{NR}}u;
    let words = params.k / 16u;
    let xbase = m * (params.k / 4u);
    var acc: array<i32, {{NR}}>;
    var sum_x = 0;
    for (var j = lid; j < words; j += {{WG}}u) {
        let x0 = xq[xbase + 4u * j];
        let x1 = xq[xbase + 4u * j + 1u];
        let x2 = xq[xbase + 4u * j + 2u];
        let x3 = xq[xbase + 4u * j + 3u];
        sum_x += dot4I8Packed(x0, 0x01010101u) + dot4I8Packed(x1, 0x01010101u) + dot4I8Packed(x2, 0x01010101u)
            + dot4I8Packed(x3, 0x01010101u);
        for (var r = 0u; r < {{NR}}u; r++) {
            let n = min(n0 + r, params.n_block - 1u);
            let c = w[n * words + j];
            acc[r] += dot4I8Packed(x0, spread(c & 255u)) + dot4I8Packed(x1, spread((c >> 8u) & 255u))
                + dot4I8Packed(x2, spread((c >> 16u) & 255u)) + dot4I8Packed(x3, spread(c >> 24u));
        }
    }
    for (var r = 0u; r < {{NR}}u; r++) {
        partial[r * {{WG}}u + lid] = acc[r];
    }
    partial[{{NR}}u * {{WG}}u + lid] = sum_x;
    workgroupBarrier();
    for (var s = {{WG}}u / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            for (var r = 0u; r <= {{NR}}u; r++) {
                partial[r * {{WG}}u + lid] += partial[r * {{WG}}u + lid + s];
            }
        }
        workgroupBarrier();
    }
    if (lid >= {{NR}}u || n0 + lid >= params.n_block) {
        return;
    }
    let total = partial[lid * {{WG}}u] - partial[{{NR}}u * {{WG}}u];
    var v = f32(total) * xs[m] * params.scale;
#if HGF
    let brow = (params.w_row0 + n0 + lid) * {{RANK}}u;
    for (var r = 0u; r < {{RANK}}u; r++) {
        v += bg[brow + r] * mid[m * {{RANK}}u + r];
    }
#endif
    let o = m * params.n_total + params.n_offset + n0 + lid;
    if (params.accumulate == 1u) {
        y[o] = y[o] + v;
    } else {
        y[o] = v;
    }
}
