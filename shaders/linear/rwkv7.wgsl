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
//               S = e^{G_last} S + sum_i e^{G_last-G_i} (b_i u_i + k_i v_i); tokens in tiles of TT.
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

// Tokens per tile of the chunk passes: each state row (each key of a row of the square) loaded meets a tile.
const TT: u32 = {{TT}}u;
#endif

#if CHUNK_PREP
// Each invocation's own M_ij (above the diagonal, at [j][i]) and rk_ij (on and below it), which private arrays as
// long as a chunk would spill on CPU adapters.
var<workgroup> pairs: array<f32, CH * CH>;

// Row i of the chunk: G for the chunk, then L and nrb into the head's square, and M v (u's part that needs no
// state) and the chunk's own outputs sum_{j<=i} rk_ij v_j. The state pass solves for u itself.
// Columns j come in tiles of TT, over the key channels four at a time: (a_i e^{G_{i-1}-G_j}) . (b_j, k_j) and
// (r_i e^{G_i-G_j}) . (b_j, k_j) as (L_ij, M_ij, nrb_ij, rk_ij), row i's keys loaded once per tile. With BROADCAST
// lane j of each subgroup loads the tile's j-th column (b_j, k_j, G_j, v_j) and subgroupBroadcast shares it, the
// subgroup running the tiles its last row needs (rows before it mask the rest).
@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) i: u32,
#if BROADCAST
        @builtin(subgroup_invocation_id) lane: u32,
#endif
) {
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
    let square = (chunk.index * heads + h) * CH * CH;
    let ti = min(i, n - 1u);
    let top = last_row(i);
    for (var jb = 0u; jb <= top && jb < n; jb += TT) {
        var p = array<vec4<f32>, TT>();
#if BROADCAST
        let mine = t0 + min(jb + lane, n - 1u);
#endif
        for (var d0 = 0u; d0 < DK; d0 += 4u) {
            let a = keys(t0 + ti, A, h, d0);
            let r = keys(t0 + ti, R, h, d0);
            let g_a = g_before(t0, ti, h, d0);
            let g_r = g_quad(t0 + ti, h, d0);
#if BROADCAST
            let my_b = keys(mine, B, h, d0);
            let my_k = keys(mine, K, h, d0);
            let my_g = g_quad(mine, h, d0);
#endif
#unroll j TT
            {
#if BROADCAST
                let bj = subgroupBroadcast(my_b, {{j}});
                let kj = subgroupBroadcast(my_k, {{j}});
                let gj = subgroupBroadcast(my_g, {{j}});
#else
                let tj = t0 + min(jb + {{j}}, n - 1u);
                let bj = keys(tj, B, h, d0);
                let kj = keys(tj, K, h, d0);
                let gj = g_quad(tj, h, d0);
#endif
                let below = jb + {{j}} <= i;
                let from_a = a * exp(select(vec4<f32>(0.0), g_a - gj, below));
                let from_r = r * exp(select(vec4<f32>(0.0), g_r - gj, below));
                p[{{j}}] += vec4<f32>(dot(from_a, bj), dot(from_a, kj), dot(from_r, bj), dot(from_r, kj));
            }
#endunroll
        }
#unroll j TT
        if (i < n && jb + {{j}} <= i) {
            let j = jb + {{j}};
            squares[square + i * CH + j] = p[{{j}}].z;
            pairs[i * CH + j] = p[{{j}}].w;
            if (j < i) {
                squares[square + j * CH + i] = p[{{j}}].x;
                pairs[j * CH + i] = p[{{j}}].y;
            }
        }
#endunroll
    }
    for (var c = 0u; c < COLS; c++) {
        var mv = Col(0.0);
        var rv = Col(0.0);
        for (var jb = 0u; jb <= top && jb < n; jb += TT) {
#if BROADCAST
            let my_v = input_col(v_index(t0 + min(jb + lane, n - 1u), h, c * VW));
#endif
#unroll j TT
            {
                let j = jb + {{j}};
#if BROADCAST
                let v = subgroupBroadcast(my_v, {{j}});
#else
                let v = input_col(v_index(t0 + min(j, n - 1u), h, c * VW));
#endif
                mv += select(0.0, pairs[j * CH + i], j < i) * v;
                rv += select(0.0, pairs[i * CH + j], j <= i) * v;
            }
#endunroll
        }
        if (i < n) {
            let row = block_row(t0 + i, h, c);
            u_buf[row] = mv;
            out[row] = rv;
        }
    }
}
#endif

#if CHUNK_STATE
@group(0) @binding(7) var<storage, read_write> state: array<Col>;
#include "linear/substitution.wgsl"

// The keys chunk token i reads the chunk's starting state S with, channels d0..d0 + 3: a_i e^{G_{i-1}} (for u)
// and r_i e^{G_i} (for the outputs).
fn a_from_start(t0: u32, i: u32, h: u32, d0: u32) -> vec4<f32> {
    return keys(t0 + i, A, h, d0) * exp(g_before(t0, i, h, d0));
}

fn r_from_start(t0: u32, i: u32, h: u32, d0: u32) -> vec4<f32> {
    return keys(t0 + i, R, h, d0) * exp(g_quad(t0 + i, h, d0));
}

// Token t's keys of kind `part` (B or K), channels d0..d0 + 3, decayed to the chunk's last token: e^{G_last-G_t}.
fn to_last(t: u32, last: u32, part: u32, h: u32, d0: u32) -> vec4<f32> {
    return keys(t, part, h, d0) * exp(g_quad(last, h, d0) - g_quad(t, h, d0));
}

// Each invocation owns a block of state columns (`linear/columns.wgsl`), streamed from memory. Per chunk, with S
// the chunk's starting state, tokens TT at a time:
//   1. u_i = M v_i + (a_i e^{G_{i-1}}) S (over M v in u_buf) and out_i += (r_i e^{G_i}) S, every state row loaded
//      once per tile;
//   2. forward substitution u_i += sum_{j<i} L_ij u_j, out_i += sum_{j<=i} nrb_ij u_j (`linear/substitution.wgsl`);
//   3. S = e^{G_last} S + sum_i e^{G_last-G_i} (b_i u_i + k_i v_i), sixteen rows at a time.
// With BROADCAST lane j of each subgroup loads the keys the tile's j-th token needs and subgroupBroadcast hands
// them to every lane (CPU adapters load one address in every lane at the cost of eight).
@compute @workgroup_size(COLS)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) c: u32,
#if BROADCAST
        @builtin(subgroup_invocation_id) subgroup_lane: u32,
#endif
) {
#if BROADCAST
    lane = subgroup_lane;
#endif
    let h = wid.x;
    let heads = params.heads;
    let base = h * DK * COLS + c;
    let chunks = (step.n_tokens + CH - 1u) / CH;
    for (var ci = 0u; ci < chunks; ci++) {
        let t0 = ci * CH;
        let n = min(CH, step.n_tokens - t0);
        let last = t0 + n - 1u;
        let square = (ci * heads + h) * CH * CH;
        for (var tb = 0u; tb < n; tb += TT) {
            var us = array<Col, TT>();
            var os = array<Col, TT>();
#if BROADCAST
            let mine = min(tb + lane, n - 1u);
#endif
            for (var d0 = 0u; d0 < DK; d0 += 4u) {
                let s = state_rows(base, d0);
#if BROADCAST
                let my_a = a_from_start(t0, mine, h, d0);
                let my_r = r_from_start(t0, mine, h, d0);
#endif
#unroll j TT
                {
#if BROADCAST
                    let a = subgroupBroadcast(my_a, {{j}});
                    let r = subgroupBroadcast(my_r, {{j}});
#else
                    let a = a_from_start(t0, min(tb + {{j}}, n - 1u), h, d0);
                    let r = r_from_start(t0, min(tb + {{j}}, n - 1u), h, d0);
#endif
                    us[{{j}}] += s[0] * a.x + s[1] * a.y + s[2] * a.z + s[3] * a.w;
                    os[{{j}}] += s[0] * r.x + s[1] * r.y + s[2] * r.z + s[3] * r.w;
                }
#endunroll
            }
#unroll j TT
            if (tb + {{j}} < n) {
                let row = block_row(t0 + tb + {{j}}, h, c);
                u_buf[row] += us[{{j}}];
                out[row] += os[{{j}}];
            }
#endunroll
        }
        substitute(square, t0, n, h, heads, c);
        for (var d0 = 0u; d0 < DK; d0 += 16u) {
            var add = array<Col, 16>();
            for (var tb = 0u; tb < n; tb += TT) {
#if BROADCAST
                let mine = t0 + min(tb + lane, n - 1u);
                var my_b = array<vec4<f32>, 4>();
                var my_k = array<vec4<f32>, 4>();
#unroll p 4
                if (d0 + 4u * {{p}} < DK) {
                    my_b[{{p}}] = to_last(mine, last, B, h, d0 + 4u * {{p}});
                    my_k[{{p}}] = to_last(mine, last, K, h, d0 + 4u * {{p}});
                }
#endunroll
#endif
#unroll j TT
                if (tb + {{j}} < n) {
                    let t = t0 + tb + {{j}};
                    let u = u_buf[block_row(t, h, c)];
                    let v = input_col(v_index(t, h, c * VW));
#unroll p 4
                    {
#if BROADCAST
                        let b = subgroupBroadcast(my_b[{{p}}], {{j}});
                        let k = subgroupBroadcast(my_k[{{p}}], {{j}});
#else
                        var b = vec4<f32>(0.0);
                        var k = vec4<f32>(0.0);
                        if (d0 + 4u * {{p}} < DK) {
                            b = to_last(t, last, B, h, d0 + 4u * {{p}});
                            k = to_last(t, last, K, h, d0 + 4u * {{p}});
                        }
#endif
                        add[4u * {{p}}] += b.x * u + k.x * v;
                        add[4u * {{p}} + 1u] += b.y * u + k.y * v;
                        add[4u * {{p}} + 2u] += b.z * u + k.z * v;
                        add[4u * {{p}} + 3u] += b.w * u + k.w * v;
                    }
#endunroll
                }
#endunroll
            }
#unroll p 4
            if (d0 + 4u * {{p}} < DK) {
                let decay = exp(g_quad(last, h, d0 + 4u * {{p}}));
#unroll r 4
                if (d0 + 4u * {{p}} + {{r}} < DK) {
                    let si = base + (d0 + 4u * {{p}} + {{r}}) * COLS;
                    state[si] = state[si] * decay[{{r}}] + add[4u * {{p}} + {{r}}];
                }
#endunroll
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
