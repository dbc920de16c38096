// RWKV-7's time mixer around the generalised delta rule, per head with state S [DK, DV]:
//   S_t = diag(exp(w_t)) S_{t-1} + b_t (a_t^T S_{t-1}) + k_t v_t^T,   o_t = S_t^T r_t.
// x [T, width] holds per token [r | w | k | a | b | v] (K = heads * DK channels each, then heads * DV values).
// The projections write r, raw w, raw k, raw a and raw v there; PREPARE turns them into the rule's inputs.
// Variants:
//   PREPARE     one invocation per (token, head): w = -e^{-1/2} sigmoid(w), a' = sigmoid(a), kk = l2norm(k k_k),
//               k = k (1 + (a' - 1) k_a), a = -kk, b = kk a'; v lerps towards v_first by sigmoid(v_mix) (V_MIX),
//               else becomes v_first.
//   RECURRENT   one workgroup per head, one invocation per block of state columns (`linear/columns.wgsl`); tokens
//               in order (decode).
//   CHUNK_PREP  one workgroup per (chunk of 64, head), one invocation per row i (G = running sum of w, G_{-1} = 0):
//               L_ij = (a_i e^{G_{i-1}-G_j}) . b_j (j < i), M_ij = (a_i e^{G_{i-1}-G_j}) . k_j (j < i),
//               nrb_ij = (r_i e^{G_i-G_j}) . b_j (j <= i), M v, and out_i = sum_{j<=i} ((r_i e^{G_i-G_j}) . k_j) v_j.
//   CHUNK_STATE one workgroup per head, one invocation per block of state columns, chunks in order:
//               u = (I - L)^-1 (M v + (a e^{G_{-1}}) S) by forward substitution, out += (r e^G) S + nrb u,
//               S = e^{G_last} S + sum_i e^{G_last-G_i} (b_i u_i + k_i v_i).
//   COLUMN_BLOCKS (RECURRENT and both chunk kernels): the input through `linear/input.wgsl`, key channels four
//               at a time, values in column blocks. CHUNKED: both chunk kernels.
//   FINISH      one invocation per (token, head): group norm of out (weight, bias over all values), plus
//               sum(r k r_k) v, times the output gate.
#include "linear/chunks.wgsl"

struct Params {
    heads: u32,
    width: u32,  // floats per token in x: 5 K + V
    eps: f32,    // FINISH's group-norm epsilon
}
@group(0) @binding(1) var<uniform> params: Params;

const DK: u32 = {{DK}}u;
const DV: u32 = {{DV}}u;
const R: u32 = 0u;
const W: u32 = 1u;
const K: u32 = 2u;
const A: u32 = 3u;
const B: u32 = 4u;

fn sigmoid(z: f32) -> f32 {
    return 1.0 / (1.0 + exp(-z));
}

#if PREPARE
@group(0) @binding(2) var<storage, read_write> x: array<f32>;
@group(0) @binding(3) var<storage, read> k_k: array<f32>;
@group(0) @binding(4) var<storage, read> k_a: array<f32>;
@group(0) @binding(5) var<storage, read_write> v_first: array<f32>;
#if V_MIX
@group(0) @binding(6) var<storage, read> v_mix: array<f32>;
#endif

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let item = flat_group(wid, nwg) * 64u + lid;
    if (item >= step.n_tokens * params.heads) {
        return;
    }
    let t = item / params.heads;
    let h = item % params.heads;
    let kw = params.heads * DK;
    let row = t * params.width;
    var ss = 0.0;
    for (var d = 0u; d < DK; d++) {
        let c = h * DK + d;
        let kk = x[row + K * kw + c] * k_k[c];
        ss += kk * kk;
    }
    let inv = 1.0 / max(sqrt(ss), 1e-12);
    for (var d = 0u; d < DK; d++) {
        let c = h * DK + d;
        let k = x[row + K * kw + c];
        let a = sigmoid(x[row + A * kw + c]);
        let kk = k * k_k[c] * inv;
        x[row + W * kw + c] = -0.60653066 * sigmoid(x[row + W * kw + c]);
        x[row + K * kw + c] = k * (1.0 + (a - 1.0) * k_a[c]);
        x[row + A * kw + c] = -kk;
        x[row + B * kw + c] = kk * a;
    }
    let vw = params.heads * DV;
    for (var j = 0u; j < DV; j++) {
        let c = h * DV + j;
        let at = row + 5u * kw + c;
#if V_MIX
        x[at] += (v_first[t * vw + c] - x[at]) * sigmoid(v_mix[t * vw + c]);
#else
        v_first[t * vw + c] = x[at];
#endif
    }
}
#endif

#if !PREPARE
#if COLUMN_BLOCKS
#include "linear/input.wgsl"
#include "linear/columns.wgsl"

// Key channels d0..d0 + 3 of part `part` of token t, head h, those past DK as 0.
fn keys(t: u32, part: u32, h: u32, d0: u32) -> vec4<f32> {
    return key_quad(t * params.width + part * params.heads * DK + h * DK + d0, d0);
}
#else
@group(0) @binding(2) var<storage, read> x: array<f32>;

fn input_at(i: u32) -> f32 {
    return x[i];
}
#endif

fn at(t: u32, part: u32, h: u32, d: u32) -> f32 {
    return input_at(t * params.width + part * params.heads * DK + h * DK + d);
}

// Input float of value channel j of head h, token t.
fn v_index(t: u32, h: u32, j: u32) -> u32 {
    return t * params.width + 5u * params.heads * DK + h * DV + j;
}

fn v_at(t: u32, h: u32, j: u32) -> f32 {
    return input_at(v_index(t, h, j));
}
#endif

#if RECURRENT
@group(0) @binding(3) var<storage, read_write> state: array<Col>;
@group(0) @binding(4) var<storage, read_write> out: array<Col>;

// Each token streams the invocation's block twice: first for a^T S, then to update it, giving o on the way. Key
// channels go four at a time.
@compute @workgroup_size(COLS)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) c: u32) {
    let h = wid.x;
    let base = h * DK * COLS + c;
    for (var t = 0u; t < step.n_tokens; t++) {
        var sa = Col(0.0);
        for (var d0 = 0u; d0 < DK; d0 += 4u) {
            let a = keys(t, A, h, d0);
#unroll j 4
            if (d0 + {{j}} < DK) {
                sa += state[base + (d0 + {{j}}) * COLS] * a[{{j}}];
            }
#endunroll
        }
        let value = input_col(v_index(t, h, c * VW));
        var o = Col(0.0);
        for (var d0 = 0u; d0 < DK; d0 += 4u) {
            let w = exp(keys(t, W, h, d0));
            let b = keys(t, B, h, d0);
            let k = keys(t, K, h, d0);
            let r = keys(t, R, h, d0);
#unroll j 4
            if (d0 + {{j}} < DK) {
                let i = base + (d0 + {{j}}) * COLS;
                let s = state[i] * w[{{j}}] + b[{{j}}] * sa + k[{{j}}] * value;
                state[i] = s;
                o += r[{{j}}] * s;
            }
#endunroll
        }
        out[(t * params.heads + h) * COLS + c] = o;
    }
}
#endif

#if CHUNKED
// The chunk kernels' scratch: G (`linear/running.wgsl`); u per (token, head) and the chunk outputs in column
// blocks; and per (chunk, head) a [64, 64] square holding nrb_ij below and on its diagonal and L_ij above it (at
// [j][i]).
const DG: u32 = DK;

fn decay_heads() -> u32 {
    return params.heads;
}
#include "linear/running.wgsl"
@group(0) @binding(4) var<storage, read_write> u_buf: array<Col>;
@group(0) @binding(5) var<storage, read_write> squares: array<f32>;
@group(0) @binding(6) var<storage, read_write> out: array<Col>;

// G of the token before t0 + i inside the chunk (0 before its first token), channels d0..d0 + 3.
fn g_before(t0: u32, i: u32, h: u32, d0: u32) -> vec4<f32> {
    if (i == 0u) {
        return vec4<f32>(0.0);
    }
    return g_quad(t0 + i - 1u, h, d0);
}

// The column block of u (or of the chunk outputs in `out`) of token t, head h, block c.
fn block_row(t: u32, h: u32, c: u32) -> u32 {
    return (t * params.heads + h) * COLS + c;
}
#endif

#if CHUNK_PREP
// Row i's products with row j <= i, over the key channels four at a time: (a_i e^{G_{i-1}-G_j}) . (b_j, k_j) and
// (r_i e^{G_i-G_j}) . (b_j, k_j), as (L_ij, M_ij, nrb_ij, rk_ij).
fn pair_products(t0: u32, i: u32, j: u32, h: u32) -> vec4<f32> {
    var p = vec4<f32>(0.0);
    for (var d0 = 0u; d0 < DK; d0 += 4u) {
        let gj = g_quad(t0 + j, h, d0);
        let from_a = keys(t0 + i, A, h, d0) * exp(g_before(t0, i, h, d0) - gj);
        let from_r = keys(t0 + i, R, h, d0) * exp(g_quad(t0 + i, h, d0) - gj);
        let bj = keys(t0 + j, B, h, d0);
        let kj = keys(t0 + j, K, h, d0);
        p += vec4<f32>(dot(from_a, bj), dot(from_a, kj), dot(from_r, bj), dot(from_r, kj));
    }
    return p;
}

// Each invocation's own M_ij (above the diagonal, at [j][i]) and rk_ij (on and below it), which private arrays as
// long as a chunk would spill on CPU adapters.
var<workgroup> pairs: array<f32, CH * CH>;

// Row i of the chunk: G for the chunk, then L and nrb into the head's square, and M v (u's part that needs no
// state) and the chunk's own outputs sum_{j<=i} rk_ij v_j. The state pass solves for u itself.
@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) i: u32) {
    let heads = params.heads;
    let chunk = chunk_of(wid, nwg, heads);
    if (chunk.len == 0u) {
        return;
    }
    let h = chunk.head;
    let t0 = chunk.t0;
    let n = chunk.len;
    for (var d0 = 4u * i; d0 < DK; d0 += 4u * CH) {
        var acc = vec4<f32>(0.0);
        for (var j = 0u; j < n; j++) {
            acc += keys(t0 + j, W, h, d0);
            store_g(t0 + j, h, d0, acc);
        }
    }
    storageBarrier();
    workgroupBarrier();
    if (i >= n) {
        return;
    }
    let square = (chunk.index * heads + h) * CH * CH;
    for (var j = 0u; j <= i; j++) {
        let p = pair_products(t0, i, j, h);
        squares[square + i * CH + j] = p.z;
        pairs[i * CH + j] = p.w;
        if (j < i) {
            squares[square + j * CH + i] = p.x;
            pairs[j * CH + i] = p.y;
        }
    }
    for (var c = 0u; c < COLS; c++) {
        var mv = Col(0.0);
        var rv = Col(0.0);
        for (var j = 0u; j < i; j++) {
            let v = input_col(v_index(t0 + j, h, c * VW));
            mv += pairs[j * CH + i] * v;
            rv += pairs[i * CH + j] * v;
        }
        let row = block_row(t0 + i, h, c);
        u_buf[row] = mv;
        out[row] = rv + pairs[i * CH + i] * input_col(v_index(t0 + i, h, c * VW));
    }
}
#endif

#if CHUNK_STATE
@group(0) @binding(7) var<storage, read_write> state: array<Col>;

// Each invocation owns a block of state columns (`linear/columns.wgsl`), streamed from memory. Per chunk, token by
// token, with S the chunk's starting state: u_i = M v_i + (a_i e^{G_{i-1}}) S + sum_{j<i} L_ij u_j (forward
// substitution for u = (I - L)^-1 (M v + A S), written over M v) and out_i += (r_i e^{G_i}) S + sum_{j<=i} nrb_ij u_j;
// then row by row S = e^{G_last} S + sum_i e^{G_last-G_i} (b_i u_i + k_i v_i), four rows at a time.
@compute @workgroup_size(COLS)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) c: u32) {
    let h = wid.x;
    let heads = params.heads;
    let base = h * DK * COLS + c;
    let chunks = (step.n_tokens + CH - 1u) / CH;
    for (var ci = 0u; ci < chunks; ci++) {
        let t0 = ci * CH;
        let n = min(CH, step.n_tokens - t0);
        let last = t0 + n - 1u;
        let square = (ci * heads + h) * CH * CH;
        for (var i = 0u; i < n; i++) {
            let t = t0 + i;
            var u = Col(0.0);
            var o = Col(0.0);
            for (var d0 = 0u; d0 < DK; d0 += 4u) {
                let a = keys(t, A, h, d0) * exp(g_before(t0, i, h, d0));
                let r = keys(t, R, h, d0) * exp(g_quad(t, h, d0));
#unroll j 4
                if (d0 + {{j}} < DK) {
                    let sv = state[base + (d0 + {{j}}) * COLS];
                    u += sv * a[{{j}}];
                    o += sv * r[{{j}}];
                }
#endunroll
            }
            for (var j = 0u; j < i; j++) {
                let uj = u_buf[block_row(t0 + j, h, c)];
                u += squares[square + j * CH + i] * uj;
                o += squares[square + i * CH + j] * uj;
            }
            let row = block_row(t, h, c);
            u += u_buf[row];
            u_buf[row] = u;
            out[row] += o + squares[square + i * CH + i] * u;
        }
        for (var d0 = 0u; d0 < DK; d0 += 4u) {
            let g_last = g_quad(last, h, d0);
            var add = array<Col, 4>(Col(0.0), Col(0.0), Col(0.0), Col(0.0));
            for (var i = 0u; i < n; i++) {
                let t = t0 + i;
                let decay = exp(g_last - g_quad(t, h, d0));
                let b = keys(t, B, h, d0) * decay;
                let k = keys(t, K, h, d0) * decay;
                let u = u_buf[block_row(t, h, c)];
                let v = input_col(v_index(t, h, c * VW));
#unroll j 4
                add[{{j}}] += b[{{j}}] * u + k[{{j}}] * v;
#endunroll
            }
            let decay = exp(g_last);
#unroll j 4
            if (d0 + {{j}} < DK) {
                let si = base + (d0 + {{j}}) * COLS;
                state[si] = state[si] * decay[{{j}}] + add[{{j}}];
            }
#endunroll
        }
    }
}
#endif

#if FINISH
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<storage, read> gate: array<f32>;
@group(0) @binding(5) var<storage, read> norm_w: array<f32>;
@group(0) @binding(6) var<storage, read> norm_b: array<f32>;
@group(0) @binding(7) var<storage, read> r_k: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let item = flat_group(wid, nwg) * 64u + lid;
    if (item >= step.n_tokens * params.heads) {
        return;
    }
    let t = item / params.heads;
    let h = item % params.heads;
    let base = item * DV;
    var mean = 0.0;
    for (var j = 0u; j < DV; j++) {
        mean += out[base + j];
    }
    mean /= f32(DV);
    var var_sum = 0.0;
    for (var j = 0u; j < DV; j++) {
        let c = out[base + j] - mean;
        var_sum += c * c;
    }
    let inv = inverseSqrt(var_sum / f32(DV) + params.eps);
    var bonus = 0.0;
    for (var d = 0u; d < DK; d++) {
        bonus += at(t, R, h, d) * at(t, K, h, d) * r_k[h * DK + d];
    }
    for (var j = 0u; j < DV; j++) {
        let c = h * DV + j;
        let normed = (out[base + j] - mean) * inv * norm_w[c] + norm_b[c];
        out[base + j] = (normed + bonus * v_at(t, h, j)) * gate[t * params.heads * DV + c];
    }
}
#endif
