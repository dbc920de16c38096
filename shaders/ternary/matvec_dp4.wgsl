requires packed_4x8_integer_dot_product;
// Ternary linear layer on int8 activations with dot4I8Packed: the activations arrive as act_quant.wgsl's PACKED
// row records in xq (params.stride words each: i8x4 words [K/4], the dequantisation factor, the HGF values);
// weight codes are 2-bit, 16 per u32 (K a multiple of 16, so rows start on words). Masking a code word with
// 0x03030303 after a shift of 2q leaves the codes c (0..2, trit + 1) of values q, q + 4, q + 8, q + 12 as an i8x4
// word, the activation word q of the group holds those four values, and sum x (c - 1) = dot4(x, codes)
// - dot4(x, 1111). One workgroup computes NR outputs of one token, its lanes splitting K (decode), or with TILED
// (prefill, and decode on CPU adapters) each invocation NR outputs of TM tokens over the whole of K.
// The records are read a 16-byte quad at a time (a code word's four activation words), so their stride is a
// multiple of 4 words. QUADS (K a multiple of 64): the weights too, four code words per load and step; on CPU
// adapters every invocation's load costs about the same whatever its width (docs/perf.md, session 8).
// y[m, n_offset + n] (+)= (that sum) * (row m's factor) * scale.
// STACKED: rows seg1.. come from w2 (scale2, into y2 [rows, seg2 - seg1]), with STACKED3 rows seg2.. from w3
// (scale3, into y3) and with STACKED4 rows seg3.. from w4 (scale4, into y4), so one dispatch serves up to four
// projections of the same activations. GATED: a second matrix w2 of the
// same shape (scale2) gives y = ACT(x w^T scale) * (x w2^T scale2), a gated MLP's two products and activation.
// SWAR (CPU adapters, whose dot4I8Packed is a dozen scalar operations): one 32-bit multiply sums two products
// instead. `operands` turns activation word q (values v0..v3, bytes 0..3) into v2 + v0 * 2^16 and v3 + v1 * 2^16;
// (code word >> (2q + 8h)) & 0x00030003 holds the codes of bytes h and h + 2 of that word in bits 0 and 16; their
// product modulo 2^32 is v_lo c_lo + 2^16 (v0 c0 + v2 c2) (h = 0; v1, v3 for h = 1), and the upper half of a
// running sum of such products is the sum it needs once the low halves' carries are rounded off (settle). That
// holds for the at most 32 pairs a step sums: |v c| <= 256, so the upper half stays within 2^14 and the lower
// within 2^13.
// X_BROADCAST (TILED; the subgroup size, dividing WG): a step's TM STEP_WORDS activation quads, alike for every
// lane of the workgroup, are loaded once per subgroup, X_SLOTS per lane, and reach every lane by subgroupBroadcast
// (CPU adapters load the same address lane by lane; docs/perf.md, session 15).
// Hybrid Gated Flow: HGFi gives projection i (1: w, 2: w2, 3: w3, 4: w4) its correction, added to its product
// before the activation: + sum_r bgi[row, r] mid(m, OFFi + r) (bgi [its rows, RANKi] f32 with the gate folded in:
// matrix BGi from element STARTi on, its own bgi at BGi_BINDING or the bg at BG_PACKED that the projections share;
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
#if QUADS
alias CodeWords = vec4<u32>;
#else
alias CodeWords = u32;
#endif
@group(0) @binding(2) var<storage, read> xq: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<storage, read> w: array<CodeWords>;
#if STACKED
@group(0) @binding(5) var<storage, read> w2: array<CodeWords>;
@group(0) @binding(6) var<storage, read_write> y2: array<f32>;
#endif
#if STACKED3
@group(0) @binding(7) var<storage, read> w3: array<CodeWords>;
@group(0) @binding(8) var<storage, read_write> y3: array<f32>;
#endif
#if STACKED4
@group(0) @binding(9) var<storage, read> w4: array<CodeWords>;
@group(0) @binding(10) var<storage, read_write> y4: array<f32>;
#endif
#if GATED
@group(0) @binding(5) var<storage, read> w2: array<CodeWords>;
#endif

// Word i of the records.
fn record_word(i: u32) -> u32 {
    return xq[i / 4u][i % 4u];
}

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

#if BG_PACKED
@group(0) @binding({{BG_PACKED}}) var<storage, read> bg: array<f32>;
#endif

#if HGF
// Element i of projection p's diag(g) B: of matrix BGp (bgp, its own binding, or bg, shared), from element STARTp.
fn bg_at(p: u32, i: u32) -> f32 {
    switch p {
#if HGF1
        case 1u: {
            return {{BG1}}[{{START1}}u + i];
        }
#endif
#if HGF2
        case 2u: {
            return {{BG2}}[{{START2}}u + i];
        }
#endif
#if HGF3
        case 3u: {
            return {{BG3}}[{{START3}}u + i];
        }
#endif
#if HGF4
        case 4u: {
            return {{BG4}}[{{START4}}u + i];
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
        low_rank[i] = bitcast<f32>(record_word(factor_word(m) + 1u + i % {{MID_WIDTH}}u));
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

// Code words j (QUADS: 4j .. 4j + 3) of output row n of the (stacked) matrix, `words` of them (QUADS: quads) a row.
fn code_words(n: u32, j: u32, words: u32) -> CodeWords {
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
    return bitcast<f32>(record_word(factor_word(m)));
}

// Row m's activation words for code word j: one quad.
fn activations(m: u32, j: u32) -> vec4<u32> {
    return xq[m * params.stride / 4u + j];
}

#if SWAR
// One code word's activation operands: the pair words of its four activation words, bytes 0 and 2 (lo) and 1 and
// 3 (hi) of each.
struct Operands {
    lo: vec4<u32>,
    hi: vec4<u32>,
}

// A running sum of products: 32-bit pair products whose upper halves carry the sum (settle).
alias Partial = u32;

// The pair words of activation quad x.
fn operands(x: vec4<u32>) -> Operands {
    let lo = (bitcast<vec4<i32>>(x << vec4(24u)) >> vec4(8u)) + (bitcast<vec4<i32>>(x << vec4(8u)) >> vec4(24u));
    let hi = ((bitcast<vec4<i32>>(x << vec4(16u)) >> vec4(24u)) << vec4(16u)) + (bitcast<vec4<i32>>(x) >> vec4(24u));
    return Operands(bitcast<vec4<u32>>(lo), bitcast<vec4<u32>>(hi));
}

// Code word c against its operands a: eight pair products, summed.
fn code_dot(a: Operands, c: u32) -> Partial {
    let lo = (vec4(c) >> vec4(0u, 2u, 4u, 6u)) & vec4(0x00030003u);
    let hi = (vec4(c) >> vec4(8u, 10u, 12u, 14u)) & vec4(0x00030003u);
    return dot(a.lo, lo) + dot(a.hi, hi);
}

// The sum a Partial carries: its upper half, rounded past the lower half's carries.
fn settle(p: Partial) -> i32 {
    return bitcast<i32>(p + 0x8000u) >> 16u;
}

// The activations' running sum over operands a: their halves summed, (v2 + v3) + 2^16 (v0 + v1) a word.
fn operand_sum(a: Operands) -> Partial {
    return dot(a.lo + a.hi, vec4(1u));
}

// The sum of both halves of a running operand_sum of at most 64 words (each half within 15 bits and a sign).
fn settle_sum(p: Partial) -> i32 {
    let upper = settle(p);
    return upper + bitcast<i32>(p - bitcast<u32>(upper << 16u));
}
#else
// One code word's activation operands: its four activation words.
alias Operands = vec4<u32>;

// A running sum of products.
alias Partial = i32;

// Activation quad x as operands.
fn operands(x: vec4<u32>) -> Operands {
    return x;
}

// The integer sum over one code word c's 16 inputs against its activations a (codes are trits + 1).
fn code_dot(a: Operands, c: u32) -> Partial {
    return dot4I8Packed(a.x, codes(c, 0u)) + dot4I8Packed(a.y, codes(c, 1u)) + dot4I8Packed(a.z, codes(c, 2u))
        + dot4I8Packed(a.w, codes(c, 3u));
}

// The sum a Partial carries.
fn settle(p: Partial) -> i32 {
    return p;
}

// The activations' running sum over operands a.
fn operand_sum(a: Operands) -> Partial {
    return dot4I8Packed(a.x, 0x01010101u) + dot4I8Packed(a.y, 0x01010101u) + dot4I8Packed(a.z, 0x01010101u)
        + dot4I8Packed(a.w, 0x01010101u);
}

// The sum of a running operand_sum.
fn settle_sum(p: Partial) -> i32 {
    return p;
}
#endif

// The codes of a code word for activation word q of its group, as an i8x4 word of 0..2.
fn codes(word: u32, q: u32) -> u32 {
    return (word >> (2u * q)) & 0x03030303u;
}

// Stores output n of token m from its integer sum (dequantised) and, GATED, the up matrix's.
fn store(m: u32, n: u32, total: f32, up_total: f32) {
#if STACKED4
    if (n >= params.seg3) {
        var v4 = total * params.scale4;
#if HGF4
        v4 += correction(4u, m, n - params.seg3, {{RANK4}}u, {{OFF4}}u);
#endif
        y4[m * (params.n_block - params.seg3) + n - params.seg3] = v4;
        return;
    }
#endif
#if STACKED3
    if (n >= params.seg2) {
        var v3 = total * params.scale3;
#if HGF3
        v3 += correction(3u, m, n - params.seg2, {{RANK3}}u, {{OFF3}}u);
#endif
        y3[m * (params.seg3 - params.seg2) + n - params.seg2] = v3;
        return;
    }
#endif
#if STACKED
    if (n >= params.seg1) {
        var v2 = total * params.scale2;
#if HGF2
        v2 += correction(2u, m, n - params.seg1, {{RANK2}}u, {{OFF2}}u);
#endif
        y2[m * (params.seg2 - params.seg1) + n - params.seg1] = v2;
        return;
    }
#endif
    var v = total * params.scale;
#if HGF1
    v += correction(1u, m, params.w_row0 + n, {{RANK1}}u, {{OFF1}}u);
#endif
#if GATED
    var up = up_total * params.scale2;
#if HGF2
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

// Code words per step: a quad's (QUADS) or one.
const STEP_WORDS: u32 = {{STEP_WORDS}}u;

#if QUADS
// Code word v of a step's quad.
fn word_of(c: CodeWords, v: u32) -> u32 {
    return c[v];
}
#else
// A step's one code word.
fn word_of(c: CodeWords, v: u32) -> u32 {
    return c;
}
#endif

// One token's inputs to a step of STEP_WORDS code words: its activations' operands and their sum.
struct StepInputs {
    x: array<Operands, STEP_WORDS>,
    sum: i32,
}

// A token's inputs to a step from its STEP_WORDS activation quads.
fn inputs_of(quads: array<vec4<u32>, STEP_WORDS>) -> StepInputs {
    var s: StepInputs;
    var sum = Partial();
#unroll v STEP_WORDS
    s.x[{{v}}] = operands(quads[{{v}}]);
    sum += operand_sum(s.x[{{v}}]);
#endunroll
    s.sum = settle_sum(sum);
    return s;
}

// Token m's inputs to step j.
fn step_inputs(m: u32, j: u32) -> StepInputs {
    var quads: array<vec4<u32>, STEP_WORDS>;
#unroll v STEP_WORDS
    quads[{{v}}] = activations(m, j * STEP_WORDS + {{v}});
#endunroll
    return inputs_of(quads);
}

// The integer sum of a step's code words c against their operands x.
fn step_dot(x: array<Operands, STEP_WORDS>, c: CodeWords) -> i32 {
    var p = Partial();
#unroll v STEP_WORDS
    p += code_dot(x[{{v}}], word_of(c, {{v}}));
#endunroll
    return settle(p);
}

#if TILED
// Tokens per workgroup (loops over them and over the NR outputs are unrolled, as in common/matvec.wgsl).
const TM: u32 = {{TM}}u;

// Prefill: each invocation computes NR outputs of TM tokens over the whole of K, each code word loaded once for
// all TM tokens and its activation words once for all NR outputs; no reduction between invocations.
@compute @workgroup_size({{WG}})
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
#if X_BROADCAST
    @builtin(subgroup_invocation_id) lane: u32,
#endif
) {
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
#if X_BROADCAST
    // Invocations past the outputs still load their share of the activations; their outputs are not stored.
    // Quad g of a step is word quad g % STEP_WORDS of token g / STEP_WORDS: this lane's, at step 0.
    var mine_at: array<u32, {{X_SLOTS}}>;
#unroll s X_SLOTS
    {
        let g = min(lane + {{s}} * {{X_BROADCAST}}u, TM * STEP_WORDS - 1u);
        mine_at[{{s}}] = min(m0 + g / STEP_WORDS, rows - 1u) * params.stride / 4u + g % STEP_WORDS;
    }
#endunroll
#else
    if (n0 >= params.n_block) {
        return;
    }
#endif
    let steps = params.k / (16u * STEP_WORDS);
    var acc: array<i32, TM * {{NR}}u>;
#if GATED
    var acc_up: array<i32, TM * {{NR}}u>;
#endif
    var sum_x: array<i32, TM>;
    for (var j = 0u; j < steps; j++) {
        var x: array<StepInputs, TM>;
#if X_BROADCAST
        var mine: array<vec4<u32>, {{X_SLOTS}}>;
#unroll s X_SLOTS
        mine[{{s}}] = xq[mine_at[{{s}}] + j * STEP_WORDS];
#endunroll
#unroll t TM
        {
            var quads: array<vec4<u32>, STEP_WORDS>;
#unroll v STEP_WORDS
            {
                const g = {{t}} * STEP_WORDS + {{v}};
                quads[{{v}}] = subgroupBroadcast(mine[g / {{X_BROADCAST}}u], g % {{X_BROADCAST}}u);
            }
#endunroll
            x[{{t}}] = inputs_of(quads);
            sum_x[{{t}}] += x[{{t}}].sum;
        }
#endunroll
#else
#unroll t TM
        x[{{t}}] = step_inputs(min(m0 + {{t}}, rows - 1u), j);
        sum_x[{{t}}] += x[{{t}}].sum;
#endunroll
#endif
#unroll r NR
        {
            let n = min(n0 + {{r}}, params.n_block - 1u);
            let c = code_words(n, j, steps);
#if GATED
            let u = w2[n * steps + j];
#endif
#unroll t TM
            acc[{{t}} * {{NR}}u + {{r}}] += step_dot(x[{{t}}].x, c);
#if GATED
            acc_up[{{t}} * {{NR}}u + {{r}}] += step_dot(x[{{t}}].x, u);
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
    var acc: array<i32, {{NR}}>;
#if GATED
    var acc_up: array<i32, {{NR}}>;
#endif
    var sum_x = 0;
    // Steps of STEP_WORDS code words (QUADS: 4, one load), the activations' quad for each.
    let steps = words / STEP_WORDS;
    for (var j = lid; j < steps; j += {{WG}}u) {
        let x = step_inputs(m, j);
        sum_x += x.sum;
#unroll r NR
        {
            let n = min(n0 + {{r}}, params.n_block - 1u);
            let c = code_words(n, j, steps);
            acc[{{r}}] += step_dot(x.x, c);
#if GATED
            acc_up[{{r}}] += step_dot(x.x, w2[n * steps + j]);
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
