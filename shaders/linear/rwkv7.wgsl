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
//               L_ij = (a_i e^{G_{i-1}-G_j}) . b_j (j < i), T = (I - L)^-1 by forward substitution,
//               u = T (M v) with M_ij = (a_i e^{G_{i-1}-G_j}) . k_j (j < i), W = T (a e^{G_{i-1}}),
//               nrb_ij = (r_i e^{G_i-G_j}) . b_j (j <= i), out_i = sum_{j<=i} ((r_i e^{G_i-G_j}) . k_j) v_j.
//   CHUNK_STATE one workgroup per head, one invocation per column, chunks in order: u = W S + u,
//               out += (r e^G) S + nrb u, S = e^{G_last} S + sum_i e^{G_last-G_i} (b_i u_i + k_i v_i).
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
#if !RECURRENT

fn input_at(i: u32) -> f32 {
    return x[i];
}
#endif
#endif

#if RECURRENT
#include "linear/input.wgsl"

// Key channels d0..d0 + 3 of part `part` of token t, head h, those past DK as 0.
fn keys(t: u32, part: u32, h: u32, d0: u32) -> vec4<f32> {
    return key_quad(t * params.width + part * params.heads * DK + h * DK + d0, d0);
}
#include "linear/columns.wgsl"
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

#if CHUNK_PREP
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read_write> g_buf: array<f32>;  // [T, heads, DK] running log decay
@group(0) @binding(4) var<storage, read_write> w_buf: array<f32>;  // [T, heads, DK]
@group(0) @binding(5) var<storage, read_write> u_buf: array<f32>;  // [T, heads, DV]
@group(0) @binding(6) var<storage, read_write> nrb: array<f32>;    // [chunks, heads, 64, 64]
@group(0) @binding(7) var<storage, read_write> out: array<f32>;    // [T, heads * DV]


fn g_at(t: u32, h: u32, d: u32) -> f32 {
    return g_buf[(t * params.heads + h) * DK + d];
}

// G of the token before t0 + i inside the chunk (0 before its first token).
fn g_before(t0: u32, i: u32, h: u32, d: u32) -> f32 {
    if (i == 0u) {
        return 0.0;
    }
    return g_at(t0 + i - 1u, h, d);
}

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
    let live = i < n;
    for (var d = i; d < DK; d += 64u) {
        var acc = 0.0;
        for (var j = 0u; j < n; j++) {
            acc += at(t0 + j, W, h, d);
            g_buf[((t0 + j) * heads + h) * DK + d] = acc;
        }
    }
    storageBarrier();
    workgroupBarrier();
    let ti = t0 + i;
    let row = ti * heads + h;
    let nrow = ((chunk.index * heads + h) * CH + i) * CH;
    var mv: array<f32, DV>;
    var rv: array<f32, DV>;
    for (var j = 0u; j < CH; j++) {
        var l = 0.0;
        if (live && j <= i) {
            var ab = 0.0;
            var ak = 0.0;
            var rb = 0.0;
            var rk = 0.0;
            for (var d = 0u; d < DK; d++) {
                let gj = g_at(t0 + j, h, d);
                let from_a = at(ti, A, h, d) * exp(g_before(t0, i, h, d) - gj);
                let from_r = at(ti, R, h, d) * exp(g_at(ti, h, d) - gj);
                let bj = at(t0 + j, B, h, d);
                let kj = at(t0 + j, K, h, d);
                ab += from_a * bj;
                ak += from_a * kj;
                rb += from_r * bj;
                rk += from_r * kj;
            }
            if (j < i) {
                l = ab;
                for (var c = 0u; c < DV; c++) {
                    mv[c] += ak * v_at(t0 + j, h, c);
                }
            }
            for (var c = 0u; c < DV; c++) {
                rv[c] += rk * v_at(t0 + j, h, c);
            }
            nrb[nrow + j] = rb;
        }
        tri[i * CH + j] = l;
    }
    if (live) {
        for (var c = 0u; c < DV; c++) {
            u_buf[row * DV + c] = mv[c];
            out[row * DV + c] = rv[c];
        }
    }
    storageBarrier();
    workgroupBarrier();
    solve_unit_lower(i, n);
    var u: array<f32, DV>;
    if (live) {
        for (var j = 0u; j <= i; j++) {
            let tij = tri[i * CH + j];
            for (var c = 0u; c < DV; c++) {
                u[c] += tij * u_buf[((t0 + j) * heads + h) * DV + c];
            }
        }
        for (var d = 0u; d < DK; d++) {
            var acc = 0.0;
            for (var j = 0u; j <= i; j++) {
                acc += tri[i * CH + j] * at(t0 + j, A, h, d) * exp(g_before(t0, j, h, d));
            }
            w_buf[row * DK + d] = acc;
        }
    }
    storageBarrier();
    workgroupBarrier();
    if (live) {
        for (var c = 0u; c < DV; c++) {
            u_buf[row * DV + c] = u[c];
        }
    }
}
#endif

#if CHUNK_STATE
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read_write> state: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;
@group(0) @binding(5) var<storage, read> g_buf: array<f32>;
@group(0) @binding(6) var<storage, read> w_buf: array<f32>;
@group(0) @binding(7) var<storage, read> u_buf: array<f32>;
@group(0) @binding(8) var<storage, read> nrb: array<f32>;

fn g_at(t: u32, h: u32, d: u32) -> f32 {
    return g_buf[(t * params.heads + h) * DK + d];
}

@compute @workgroup_size(DV)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) v: u32) {
    let h = wid.x;
    let heads = params.heads;
    var s: array<f32, DK>;
    for (var d = 0u; d < DK; d++) {
        s[d] = state[(h * DK + d) * DV + v];
    }
    let chunks = (step.n_tokens + CH - 1u) / CH;
    for (var c = 0u; c < chunks; c++) {
        let t0 = c * CH;
        let n = min(CH, step.n_tokens - t0);
        var u: array<f32, CH>;
        for (var i = 0u; i < n; i++) {
            let row = (t0 + i) * heads + h;
            var ws = 0.0;
            for (var d = 0u; d < DK; d++) {
                ws += w_buf[row * DK + d] * s[d];
            }
            u[i] = ws + u_buf[row * DV + v];
        }
        for (var i = 0u; i < n; i++) {
            let row = (t0 + i) * heads + h;
            var o = out[row * DV + v];
            for (var d = 0u; d < DK; d++) {
                o += at(t0 + i, R, h, d) * exp(g_at(t0 + i, h, d)) * s[d];
            }
            let nrow = ((c * heads + h) * CH + i) * CH;
            for (var j = 0u; j <= i; j++) {
                o += nrb[nrow + j] * u[j];
            }
            out[row * DV + v] = o;
        }
        let last = t0 + n - 1u;
        for (var d = 0u; d < DK; d++) {
            let g_last = g_at(last, h, d);
            var add = 0.0;
            for (var i = 0u; i < n; i++) {
                let decay = exp(g_last - g_at(t0 + i, h, d));
                add += decay * (at(t0 + i, B, h, d) * u[i] + at(t0 + i, K, h, d) * v_at(t0 + i, h, v));
            }
            s[d] = exp(g_last) * s[d] + add;
        }
    }
    for (var d = 0u; d < DK; d++) {
        state[(h * DK + d) * DV + v] = s[d];
    }
}
#endif

#if FINISH
@group(0) @binding(2) var<storage, read> x: array<f32>;
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
