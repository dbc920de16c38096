requires packed_4x8_integer_dot_product;
// Ternary linear layer on int8 activations with dot4I8Packed: the activations arrive as act_quant.wgsl's PACKED
// row records in xq (params.stride words each: i8x4 words [K/4], the dequantisation factor, the HGF values);
// weight codes are 2-bit, 16 per u32 (K a multiple of 16, so rows start on words). Masking a code word with
// 0x03030303 after a shift of 2q leaves the codes c (0..2, trit + 1) of values q, q + 4, q + 8, q + 12 as an i8x4 word, the activation word q of the
// group holds those four values, and sum x (c - 1) = dot4(x, codes) - dot4(x, 1111). One workgroup computes NR
// outputs of one token, its lanes splitting K (decode), or with TILED (prefill) each invocation NR outputs of TM
// tokens over the whole of K.
// y[m, n_offset + n] (+)= (that sum) * (row m's factor) * scale.
// STACKED: rows seg1.. come from w2 (scale2, into y2 [rows, seg2 - seg1]), with STACKED3 rows seg2.. from w3
// (scale3, into y3) and with STACKED4 rows seg3.. from w4 (scale4, into y4), so one dispatch serves up to four
// projections of the same activations. GATED: a second matrix w2 of the
// same shape (scale2) gives y = ACT(x w^T scale) * (x w2^T scale2), a gated MLP's two products and activation.
// Hybrid Gated Flow: BGi_BINDING gives projection i (1: w, 2: w2, 3: w3, 4: w4) its correction, added to its product
// before the activation: + sum_r bgi[row, r] mid(m, OFFi + r) (bgi [its rows, RANKi] f32 with the gate folded in;
// mid the low-rank values act_quant.wgsl wrote into row m's record beside the quantisation).
#include "common/step.wgsl"
#if GATED
#include "common/activations.wgsl"
#endif

struct Params {
    k: u32,
    n_block: u32,
    n_offset: u32,
    n_total: u32,
    row_sel: u32,
    scale: f32,
    accumulate: u32,
    w_row0: u32,  // first weight row of this block
    seg1: u32,    // STACKED: first row from w2 (n_block when nothing is stacked)
    seg2: u32,    // STACKED3: first row from w3 (n_block without it)
    scale2: f32,
    scale3: f32,
    seg3: u32,    // STACKED4: first row from w4 (n_block without it)
    scale4: f32,
    stride: u32,  // words per activation record
}
@group(0) @binding(1) var<uniform> params: Params;
@group(0) @binding(2) var<storage, read> xq: array<u32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<storage, read> w: array<u32>;
#if STACKED
@group(0) @binding(5) var<storage, read> w2: array<u32>;
@group(0) @binding(6) var<storage, read_write> y2: array<f32>;
#endif
#if STACKED3
@group(0) @binding(7) var<storage, read> w3: array<u32>;
@group(0) @binding(8) var<storage, read_write> y3: array<f32>;
#endif
#if STACKED4
@group(0) @binding(9) var<storage, read> w4: array<u32>;
@group(0) @binding(10) var<storage, read_write> y4: array<f32>;
#endif
#if GATED
@group(0) @binding(5) var<storage, read> w2: array<u32>;
#endif

#if BG1_BINDING
@group(0) @binding({{BG1_BINDING}}) var<storage, read> bg1: array<f32>;
#endif
#if BG2_BINDING
@group(0) @binding({{BG2_BINDING}}) var<storage, read> bg2: array<f32>;
#endif
#if BG3_BINDING
@group(0) @binding({{BG3_BINDING}}) var<storage, read> bg3: array<f32>;
#endif
#if BG4_BINDING
@group(0) @binding({{BG4_BINDING}}) var<storage, read> bg4: array<f32>;
#endif

#if HGF
// Element i of projection p's diag(g) B.
fn bg_at(p: u32, i: u32) -> f32 {
    switch p {
#if BG1_BINDING
        case 1u: {
            return bg1[i];
        }
#endif
#if BG2_BINDING
        case 2u: {
            return bg2[i];
        }
#endif
#if BG3_BINDING
        case 3u: {
            return bg3[i];
        }
#endif
#if BG4_BINDING
        case 4u: {
            return bg4[i];
        }
#endif
        default: {
            return 0.0;
        }
    }
}

// The low-rank values of the workgroup's TOKENS tokens, staged once (stage_low_rank, then a barrier): lavapipe
// ran the default model's corrections about 25 times slower where each output read them from the records itself.
var<workgroup> low_rank: array<f32, {{TOKENS}} * {{MID_WIDTH}}>;
var<private> first_token: u32;

// Copies the values of tokens m0.. (the last of `rows` repeated past the end) into low_rank.
fn stage_low_rank(m0: u32, rows: u32, lid: u32) {
    first_token = m0;
    for (var i = lid; i < {{TOKENS}}u * {{MID_WIDTH}}u; i += {{WG}}u) {
        let m = min(m0 + i / {{MID_WIDTH}}u, rows - 1u);
        low_rank[i] = bitcast<f32>(xq[factor_word(m) + 1u + i % {{MID_WIDTH}}u]);
    }
}

// Projection p's correction of its output row `row` at token m: its rank values from value `offset` on.
fn correction(p: u32, m: u32, row: u32, rank: u32, offset: u32) -> f32 {
    var c = 0.0;
    for (var r = 0u; r < rank; r++) {
        c += bg_at(p, row * rank + r) * low_rank[(m - first_token) * {{MID_WIDTH}}u + offset + r];
    }
    return c;
}
#endif

// Code word j of output row n of the (stacked) matrix.
fn code_word(n: u32, j: u32, words: u32) -> u32 {
#if STACKED4
    if (n >= params.seg3) {
        return w4[(n - params.seg3) * words + j];
    }
#endif
#if STACKED3
    if (n >= params.seg2) {
        return w3[(n - params.seg2) * words + j];
    }
#endif
#if STACKED
    if (n >= params.seg1) {
        return w2[(n - params.seg1) * words + j];
    }
#endif
    return w[n * words + j];
}

// Where row m's dequantisation factor is in xq: after its activation words, before its low-rank values.
fn factor_word(m: u32) -> u32 {
    return m * params.stride + params.k / 4u;
}

// Row m's dequantisation factor.
fn factor(m: u32) -> f32 {
    return bitcast<f32>(xq[factor_word(m)]);
}

// The codes of a code word for activation word q of its group, as an i8x4 word of 0..2.
fn codes(word: u32, q: u32) -> u32 {
    return (word >> (2u * q)) & 0x03030303u;
}

// Stores output n of token m from its integer sum (dequantised) and, GATED, the up matrix's.
fn store(m: u32, n: u32, total: f32, up_total: f32) {
#if STACKED4
    if (n >= params.seg3) {
        var v4 = total * params.scale4;
#if BG4_BINDING
        v4 += correction(4u, m, n - params.seg3, {{RANK4}}u, {{OFF4}}u);
#endif
        y4[m * (params.n_block - params.seg3) + n - params.seg3] = v4;
        return;
    }
#endif
#if STACKED3
    if (n >= params.seg2) {
        var v3 = total * params.scale3;
#if BG3_BINDING
        v3 += correction(3u, m, n - params.seg2, {{RANK3}}u, {{OFF3}}u);
#endif
        y3[m * (params.seg3 - params.seg2) + n - params.seg2] = v3;
        return;
    }
#endif
#if STACKED
    if (n >= params.seg1) {
        var v2 = total * params.scale2;
#if BG2_BINDING
        v2 += correction(2u, m, n - params.seg1, {{RANK2}}u, {{OFF2}}u);
#endif
        y2[m * (params.seg2 - params.seg1) + n - params.seg1] = v2;
        return;
    }
#endif
    var v = total * params.scale;
#if BG1_BINDING
    v += correction(1u, m, params.w_row0 + n, {{RANK1}}u, {{OFF1}}u);
#endif
#if GATED
    var up = up_total * params.scale2;
#if BG2_BINDING
    up += correction(2u, m, n, {{RANK2}}u, {{OFF2}}u);
#endif
    v = {{ACT}}(v) * up;
#endif
    let o = m * params.n_total + params.n_offset + n;
    if (params.accumulate == 1u) {
        y[o] = y[o] + v;
    } else {
        y[o] = v;
    }
}

#if TILED
// Tokens per workgroup (loops over them and over the NR outputs are unrolled, as in common/matvec.wgsl).
const TM: u32 = {{TM}}u;

// Prefill: each invocation computes NR outputs of TM tokens over the whole of K, each code word loaded once for
// all TM tokens and its activation words once for all NR outputs; no reduction between invocations.
@compute @workgroup_size({{WG}})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let rows = row_count(params.row_sel);
    let m0 = wid.y * TM;
    if (m0 >= rows) {
        return;
    }
#if HGF
    stage_low_rank(m0, rows, lid);
    workgroupBarrier();
#endif
    let n0 = (wid.x * {{WG}}u + lid) * {{NR}}u;
    if (n0 >= params.n_block) {
        return;
    }
    let words = params.k / 16u;
    var acc: array<i32, TM * {{NR}}u>;
#if GATED
    var acc_up: array<i32, TM * {{NR}}u>;
#endif
    var sum_x: array<i32, TM>;
    for (var j = 0u; j < words; j++) {
        var x: array<vec4<u32>, TM>;
#unroll t TM
        {
            let base = min(m0 + {{t}}, rows - 1u) * params.stride + 4u * j;
            x[{{t}}] = vec4<u32>(xq[base], xq[base + 1u], xq[base + 2u], xq[base + 3u]);
            sum_x[{{t}}] += dot4I8Packed(x[{{t}}].x, 0x01010101u) + dot4I8Packed(x[{{t}}].y, 0x01010101u)
                + dot4I8Packed(x[{{t}}].z, 0x01010101u) + dot4I8Packed(x[{{t}}].w, 0x01010101u);
        }
#endunroll
#unroll r NR
        {
            let n = min(n0 + {{r}}, params.n_block - 1u);
            let c = code_word(n, j, words);
            let cs = vec4<u32>(codes(c, 0u), codes(c, 1u), codes(c, 2u), codes(c, 3u));
#if GATED
            let u = w2[n * words + j];
            let us = vec4<u32>(codes(u, 0u), codes(u, 1u), codes(u, 2u), codes(u, 3u));
#endif
#unroll t TM
            acc[{{t}} * {{NR}}u + {{r}}] += dot4I8Packed(x[{{t}}].x, cs.x) + dot4I8Packed(x[{{t}}].y, cs.y)
                + dot4I8Packed(x[{{t}}].z, cs.z) + dot4I8Packed(x[{{t}}].w, cs.w);
#if GATED
            acc_up[{{t}} * {{NR}}u + {{r}}] += dot4I8Packed(x[{{t}}].x, us.x) + dot4I8Packed(x[{{t}}].y, us.y)
                + dot4I8Packed(x[{{t}}].z, us.z) + dot4I8Packed(x[{{t}}].w, us.w);
#endif
#endunroll
        }
#endunroll
    }
#unroll t TM
#unroll r NR
    if (m0 + {{t}} < rows && n0 + {{r}} < params.n_block) {
        let m = m0 + {{t}};
        let total = f32(acc[{{t}} * {{NR}}u + {{r}}] - sum_x[{{t}}]) * factor(m);
        var up_total = 0.0;
#if GATED
        up_total = f32(acc_up[{{t}} * {{NR}}u + {{r}}] - sum_x[{{t}}]) * factor(m);
#endif
        store(m, n0 + {{r}}, total, up_total);
    }
#endunroll
#endunroll
}
#else
#if GATED
// Accumulators per output: the gate's NR, the up matrix's NR, then the activations' sum.
const SLOTS: u32 = 2u * {{NR}}u + 1u;
#else
const SLOTS: u32 = {{NR}}u + 1u;
#endif
var<workgroup> partial: array<i32, {{WG}} * SLOTS>;

// Decode: one workgroup computes NR outputs of one token, its lanes splitting K.
@compute @workgroup_size({{WG}})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let m = wid.y;
    if (m >= row_count(params.row_sel)) {
        return;
    }
    let n0 = wid.x * {{NR}}u;
    let words = params.k / 16u;
    let xbase = m * params.stride;
    var acc: array<i32, {{NR}}>;
#if GATED
    var acc_up: array<i32, {{NR}}>;
#endif
    var sum_x = 0;
    for (var j = lid; j < words; j += {{WG}}u) {
        let x = vec4<u32>(xq[xbase + 4u * j], xq[xbase + 4u * j + 1u], xq[xbase + 4u * j + 2u], xq[xbase + 4u * j + 3u]);
        sum_x += dot4I8Packed(x.x, 0x01010101u) + dot4I8Packed(x.y, 0x01010101u) + dot4I8Packed(x.z, 0x01010101u)
            + dot4I8Packed(x.w, 0x01010101u);
#unroll r NR
        {
            let n = min(n0 + {{r}}, params.n_block - 1u);
            let c = code_word(n, j, words);
            acc[{{r}}] += dot4I8Packed(x.x, codes(c, 0u)) + dot4I8Packed(x.y, codes(c, 1u))
                + dot4I8Packed(x.z, codes(c, 2u)) + dot4I8Packed(x.w, codes(c, 3u));
#if GATED
            let u = w2[n * words + j];
            acc_up[{{r}}] += dot4I8Packed(x.x, codes(u, 0u)) + dot4I8Packed(x.y, codes(u, 1u))
                + dot4I8Packed(x.z, codes(u, 2u)) + dot4I8Packed(x.w, codes(u, 3u));
#endif
        }
#endunroll
    }
#unroll r NR
    partial[{{r}} * {{WG}}u + lid] = acc[{{r}}];
#if GATED
    partial[({{NR}}u + {{r}}) * {{WG}}u + lid] = acc_up[{{r}}];
#endif
#endunroll
    partial[(SLOTS - 1u) * {{WG}}u + lid] = sum_x;
    workgroupBarrier();
    for (var s = {{WG}}u / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            for (var r = 0u; r < SLOTS; r++) {
                partial[r * {{WG}}u + lid] += partial[r * {{WG}}u + lid + s];
            }
        }
        workgroupBarrier();
    }
#if HGF
    stage_low_rank(m, m + 1u, lid);
    workgroupBarrier();
#endif
    if (lid >= {{NR}}u || n0 + lid >= params.n_block) {
        return;
    }
    let sum_all = partial[(SLOTS - 1u) * {{WG}}u];
    var up_total = 0.0;
#if GATED
    up_total = f32(partial[({{NR}}u + lid) * {{WG}}u] - sum_all) * factor(m);
#endif
    store(m, n0 + lid, f32(partial[lid * {{WG}}u] - sum_all) * factor(m), up_total);
}
#endif
