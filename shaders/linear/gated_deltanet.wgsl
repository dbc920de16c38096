// Gated DeltaNet: S_t = exp(g_t) (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T, o_t = S_t^T q_t, with
// q, k L2-normalised (eps 1e-6), q scaled by DK^-0.5, g = -exp(A_log) softplus(a + dt_bias),
// beta = BETA_SCALE sigmoid(b) (2 where negative eigenvalues are allowed).
// Layouts: qkv [T, C] = [q (Hk*DK) | k (Hk*DK) | v (HV*DV)] per token; ab [T, 2*HV] = [b | a]; gate_params
// [2*HV] = [A_log | dt_bias]; state [HV, DK, DV]; out [T, HV*DV]. Value head h reads key head h / (HV/Hk).
// Variants:
//   RECURRENT    one workgroup per value head, one invocation per state column v; tokens in order (decode).
//   CHUNK_PREP   one workgroup per (chunk of 64, value head): gates, cumulative log decay G, the WY transform
//                T = (I + strictLower(diag(beta)(K K^T ⊙ Γ)))^-1 by forward substitution in workgroup memory,
//                U = T (beta v), W = T (beta k ⊙ exp(G)), and Aqk = (q k^T ⊙ Γ) with j <= i.
//   CHUNK_STATE  one workgroup per value head, one invocation per column v, chunks in order:
//                Vn = U - W S, O = (q ⊙ exp(G)) S + Aqk Vn, S = exp(G_C) S + (k ⊙ exp(G_C - G))^T Vn.
#include "linear/chunks.wgsl"

struct Params {
    n_k_heads: u32,
    n_v_heads: u32,
    width: u32,       // C, floats per token in qkv
}
@group(0) @binding(1) var<uniform> params: Params;
@group(0) @binding(2) var<storage, read> qkv: array<f32>;

const DK: u32 = {{DK}}u;
const DV: u32 = {{DV}}u;

fn q_at(t: u32, kh: u32, d: u32) -> f32 {
    return qkv[t * params.width + kh * DK + d];
}

fn k_at(t: u32, kh: u32, d: u32) -> f32 {
    return qkv[t * params.width + params.n_k_heads * DK + kh * DK + d];
}

fn v_at(t: u32, h: u32, c: u32) -> f32 {
    return qkv[t * params.width + 2u * params.n_k_heads * DK + h * DV + c];
}

fn key_head(h: u32) -> u32 {
    return h / (params.n_v_heads / params.n_k_heads);
}

// 1 / |x| with the reference's epsilon, for q (scaled by DK^-0.5) or k of token t.
fn inv_norm(t: u32, kh: u32, is_q: bool) -> f32 {
    var ss = 0.0;
    for (var d = 0u; d < DK; d++) {
        var x = k_at(t, kh, d);
        if (is_q) {
            x = q_at(t, kh, d);
        }
        ss += x * x;
    }
    var r = inverseSqrt(ss + 1e-6);
    if (is_q) {
        r *= inverseSqrt(f32(DK));
    }
    return r;
}

#if CHUNK_STATE
@group(0) @binding(3) var<storage, read_write> state: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;
@group(0) @binding(5) var<storage, read> u_buf: array<f32>;
@group(0) @binding(6) var<storage, read> w_buf: array<f32>;
@group(0) @binding(7) var<storage, read> aqk: array<f32>;
@group(0) @binding(8) var<storage, read> info: array<f32>;  // [T, HV, 4] = (G, beta, 1/|q|, 1/|k|)

@compute @workgroup_size(DV)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) v: u32) {
    let h = wid.x;
    let hv = params.n_v_heads;
    let kh = key_head(h);
    var s: array<f32, DK>;
    for (var d = 0u; d < DK; d++) {
        s[d] = state[(h * DK + d) * DV + v];
    }
    let chunks = (step.n_tokens + CH - 1u) / CH;
    for (var c = 0u; c < chunks; c++) {
        let t0 = c * CH;
        let n = min(CH, step.n_tokens - t0);
        var vn: array<f32, CH>;
        for (var i = 0u; i < n; i++) {
            let row = (t0 + i) * hv + h;
            var ws = 0.0;
            for (var d = 0u; d < DK; d++) {
                ws += w_buf[row * DK + d] * s[d];
            }
            vn[i] = u_buf[row * DV + v] - ws;
        }
        for (var i = 0u; i < n; i++) {
            let ii = ((t0 + i) * hv + h) * 4u;
            var qs = 0.0;
            for (var d = 0u; d < DK; d++) {
                qs += q_at(t0 + i, kh, d) * s[d];
            }
            var o = exp(info[ii]) * qs * info[ii + 2u];
            let arow = ((c * hv + h) * CH + i) * CH;
            for (var j = 0u; j <= i; j++) {
                o += aqk[arow + j] * vn[j];
            }
            out[((t0 + i) * hv + h) * DV + v] = o;
        }
        let g_last = info[((t0 + n - 1u) * hv + h) * 4u];
        for (var d = 0u; d < DK; d++) {
            var add = 0.0;
            for (var i = 0u; i < n; i++) {
                let ii = ((t0 + i) * hv + h) * 4u;
                add += k_at(t0 + i, kh, d) * info[ii + 3u] * exp(g_last - info[ii]) * vn[i];
            }
            s[d] = exp(g_last) * s[d] + add;
        }
    }
    for (var d = 0u; d < DK; d++) {
        state[(h * DK + d) * DV + v] = s[d];
    }
}
#else
@group(0) @binding(3) var<storage, read> ab: array<f32>;
@group(0) @binding(4) var<storage, read> gate_params: array<f32>;

fn softplus(x: f32) -> f32 {
    if (x > 20.0) {
        return x;
    }
    return log(1.0 + exp(x));
}

// (g, beta) of token t, value head h.
fn gates(t: u32, h: u32) -> vec2<f32> {
    let hv = params.n_v_heads;
    let a = ab[t * 2u * hv + hv + h];
    let b = ab[t * 2u * hv + h];
    let g = -exp(gate_params[h]) * softplus(a + gate_params[hv + h]);
    return vec2<f32>(g, {{BETA_SCALE}} / (1.0 + exp(-b)));
}

#if RECURRENT
@group(0) @binding(5) var<storage, read_write> state: array<f32>;
@group(0) @binding(6) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(DV)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) v: u32) {
    let h = wid.x;
    let kh = key_head(h);
    var s: array<f32, DK>;
    for (var d = 0u; d < DK; d++) {
        s[d] = state[(h * DK + d) * DV + v];
    }
    for (var t = 0u; t < step.n_tokens; t++) {
        let gb = gates(t, h);
        let decay = exp(gb.x);
        let rk = inv_norm(t, kh, false);
        let rq = inv_norm(t, kh, true);
        var kv = 0.0;
        for (var d = 0u; d < DK; d++) {
            s[d] *= decay;
            kv += s[d] * k_at(t, kh, d) * rk;
        }
        let delta = gb.y * (v_at(t, h, v) - kv);
        var o = 0.0;
        for (var d = 0u; d < DK; d++) {
            s[d] += k_at(t, kh, d) * rk * delta;
            o += s[d] * q_at(t, kh, d) * rq;
        }
        out[(t * params.n_v_heads + h) * DV + v] = o;
    }
    for (var d = 0u; d < DK; d++) {
        state[(h * DK + d) * DV + v] = s[d];
    }
}
#endif

#if CHUNK_PREP
@group(0) @binding(5) var<storage, read_write> u_buf: array<f32>;
@group(0) @binding(6) var<storage, read_write> w_buf: array<f32>;
@group(0) @binding(7) var<storage, read_write> aqk: array<f32>;
@group(0) @binding(8) var<storage, read_write> info: array<f32>;

var<workgroup> a_mat: array<f32, CH * CH>;
var<workgroup> g_cum: array<f32, CH>;
var<workgroup> beta_s: array<f32, CH>;
var<workgroup> rk_s: array<f32, CH>;
var<workgroup> new_row: array<f32, CH>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) i: u32) {
    let hv = params.n_v_heads;
    let chunk = chunk_of(wid, nwg, hv);
    if (chunk.len == 0u) {
        return;
    }
    let c = chunk.index;
    let h = chunk.head;
    let t0 = chunk.t0;
    let n = chunk.len;
    let kh = key_head(h);
    let live = i < n;
    var rq = 0.0;
    if (live) {
        let gb = gates(t0 + i, h);
        g_cum[i] = gb.x;
        beta_s[i] = gb.y;
        rk_s[i] = inv_norm(t0 + i, kh, false);
        rq = inv_norm(t0 + i, kh, true);
    }
    workgroupBarrier();
    var gi = 0.0;
    if (live) {
        for (var j = 0u; j <= i; j++) {
            gi += g_cum[j];
        }
    }
    workgroupBarrier();
    g_cum[i] = gi;
    workgroupBarrier();
    if (live) {
        let ii = ((t0 + i) * hv + h) * 4u;
        info[ii] = gi;
        info[ii + 1u] = beta_s[i];
        info[ii + 2u] = rq;
        info[ii + 3u] = rk_s[i];
    }
    let arow = ((c * hv + h) * CH + i) * CH;
    for (var j = 0u; j < CH; j++) {
        var kk = 0.0;
        var qk = 0.0;
        if (live && j <= i) {
            for (var d = 0u; d < DK; d++) {
                let kj = k_at(t0 + j, kh, d);
                kk += k_at(t0 + i, kh, d) * kj;
                qk += q_at(t0 + i, kh, d) * kj;
            }
            let gam = exp(gi - g_cum[j]) * rk_s[j];
            kk *= -beta_s[i] * rk_s[i] * gam;
            qk *= rq * gam;
        }
        if (j == i) {
            kk = 0.0;
        }
        a_mat[i * CH + j] = kk;
        if (live) {
            aqk[arow + j] = qk;
        }
    }
    workgroupBarrier();
    // Forward substitution: row r += (old row r) · (final rows < r).
    for (var r = 1u; r < n; r++) {
        var val = 0.0;
        if (i < r) {
            val = a_mat[r * CH + i];
            for (var m = i + 1u; m < r; m++) {
                val += a_mat[r * CH + m] * a_mat[m * CH + i];
            }
        }
        new_row[i] = val;
        workgroupBarrier();
        if (i < r) {
            a_mat[r * CH + i] = new_row[i];
        }
        workgroupBarrier();
    }
    a_mat[i * CH + i] = 1.0;
    workgroupBarrier();
    if (live) {
        let row = (t0 + i) * hv + h;
        for (var col = 0u; col < DV; col++) {
            var acc = 0.0;
            for (var j = 0u; j <= i; j++) {
                acc += a_mat[i * CH + j] * beta_s[j] * v_at(t0 + j, h, col);
            }
            u_buf[row * DV + col] = acc;
        }
        for (var d = 0u; d < DK; d++) {
            var acc = 0.0;
            for (var j = 0u; j <= i; j++) {
                acc += a_mat[i * CH + j] * beta_s[j] * exp(g_cum[j]) * k_at(t0 + j, kh, d) * rk_s[j];
            }
            w_buf[row * DK + d] = acc;
        }
    }
}
#endif
#endif
