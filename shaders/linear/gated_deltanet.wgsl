// Gated DeltaNet: S_t = exp(g_t) (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T, o_t = S_t^T q_t, with
// q, k L2-normalised (eps 1e-6), q scaled by DK^-0.5, g = -exp(A_log) softplus(a + dt_bias),
// beta = BETA_SCALE sigmoid(b) (2 where negative eigenvalues are allowed). With PER_CHANNEL (Kimi Delta Attention)
// the decay is per key channel: S_t = diag(exp(g_t)) (...), g_t,d = -exp(A_log) softplus(a_t,d + dt_bias_d).
// Layouts: qkv [T, C] = [q (Hk*DK) | k (Hk*DK) | v (HV*DV)] per token; ab: [b | a] (2*HV floats; PER_CHANNEL:
// HV + HV*DK) per token, at columns ab_offset.. of rows ab_stride wide; gate_params [2*HV] = [A_log | dt_bias]
// (PER_CHANNEL: [HV + HV*DK]); state [HV, DK, DV]; out [T, HV*DV]. Value head h reads key head h / (HV/Hk).
// Variants:
//   RECURRENT    one workgroup per value head, one invocation per block of state columns (`linear/columns.wgsl`);
//                tokens in order (decode).
//                OUT_NORM: each head's DV outputs leave through the layer's output norm, RMSNorm with norm_w [DV]
//                (plus NORM_OFFSET) and NORM_EPS, times GATE_ACT(z) with GATE (z [T, HV*DV], silu or sigmoid).
//   CHUNK_PREP   one workgroup per (chunk of 64, value head): gates, cumulative log decay G, the WY form's
//                L = -strictLower(diag(beta)(K K^T ⊙ Γ)) and Aqk = (q k^T ⊙ Γ) with j <= i, in one square.
//   CHUNK_STATE  one workgroup per value head, one invocation per block of state columns, chunks in order:
//                Vn = (I - L)^-1 diag(beta) (V - (K ⊙ exp(G)) S) by forward substitution (in u_buf),
//                O = (q ⊙ exp(G)) S + Aqk Vn, S = exp(G_C) S + (k ⊙ exp(G_C - G))^T Vn.
//   PER_CHANNEL keeps G per channel in g_buf [T, HV, DK] and applies Γ channel-wise inside the products.
#include "linear/chunks.wgsl"

struct Params {
    n_k_heads: u32,
    n_v_heads: u32,
    width: u32,       // C, floats per token in qkv
    ab_offset: u32,   // first float of a token's gate inputs in its ab row
    ab_stride: u32,   // floats per token in ab
}
@group(0) @binding(1) var<uniform> params: Params;
#include "linear/qkv.wgsl"

const DK: u32 = {{DK}}u;
const DV: u32 = {{DV}}u;

fn key_heads() -> u32 {
    return params.n_k_heads;
}

fn key_head(h: u32) -> u32 {
    return h / (params.n_v_heads / params.n_k_heads);
}

// 1 / |x| with the reference's epsilon of the key channels starting at input float i (q's scaled by DK^-0.5).
fn inv_norm(i: u32, is_q: bool) -> f32 {
    var ss = 0.0;
    for (var d0 = 0u; d0 < DK; d0 += 4u) {
        let x = key_quad(i + d0, d0);
        ss += dot(x, x);
    }
    var r = inverseSqrt(ss + 1e-6);
    if (is_q) {
        r *= inverseSqrt(f32(DK));
    }
    return r;
}

#if !RECURRENT
// Tokens per tile of the chunk passes: each state row (each key of the square's row) loaded meets a tile.
const TT: u32 = {{TT}}u;

#if PER_CHANNEL
// G of token t, value head h, channels d0..d0 + 3 (0 past DK), from the chunk kernels' g_buf.
fn g_quad(t: u32, h: u32, d0: u32) -> vec4<f32> {
    let i = (t * params.n_v_heads + h) * DK + d0;
    let g = vec4<f32>(g_buf[i], g_buf[i + 1u], g_buf[i + 2u], g_buf[i + 3u]);
    return select(vec4<f32>(0.0), g, channels_below(d0, DK));
}
#endif
#endif

#if CHUNK_STATE
#include "linear/columns.wgsl"
@group(0) @binding(3) var<storage, read_write> state: array<Col>;
@group(0) @binding(4) var<storage, read_write> out: array<Col>;
@group(0) @binding(5) var<storage, read_write> u_buf: array<Col>;  // Vn
@group(0) @binding(6) var<storage, read> squares: array<f32>;  // Aqk and L (CHUNK_PREP)
#include "linear/substitution.wgsl"
@group(0) @binding(7) var<storage, read> info: array<f32>;  // [T, HV, 4] = (G, beta, 1/|q|, 1/|k|)
#if PER_CHANNEL
@group(0) @binding(8) var<storage, read> g_buf: array<f32>;
#endif

// The head's cumulative log decay G of token t (0 with PER_CHANNEL, whose G is per channel: g_channels).
fn g_head(t: u32, h: u32) -> f32 {
#if PER_CHANNEL
    return 0.0;
#else
    return info[(t * params.n_v_heads + h) * 4u];
#endif
}

// G of token t, value head h, channels d0..d0 + 3 with PER_CHANNEL (else 0: the head's G is g_head).
fn g_channels(t: u32, h: u32, d0: u32) -> vec4<f32> {
#if PER_CHANNEL
    return g_quad(t, h, d0);
#else
    return vec4<f32>(0.0);
#endif
}

// Key (or query) channels d0..d0 + 3 from input float i, times `scale` and, with PER_CHANNEL, exp(log_decay).
fn decayed_quad(i: u32, d0: u32, scale: f32, log_decay: vec4<f32>) -> vec4<f32> {
#if PER_CHANNEL
    return key_quad(i, d0) * scale * exp(log_decay);
#else
    return key_quad(i, d0) * scale;
#endif
}

// Each invocation owns a block of state columns (`linear/columns.wgsl`), streamed from memory. Per chunk, with
// the chunk's starting state S, tokens TT at a time:
//   1. U_i = beta_i (v_i - (k_i ⊙ exp(G_i))^T S) into u_buf and (q_i ⊙ exp(G_i))^T S / |q_i| into out, every
//      state row loaded once per tile;
//   2. forward substitution Vn_i = U_i + sum_{j<i} L_ij Vn_j (Vn = (I - L)^-1 diag(beta) (V - (K ⊙ exp(G)) S)) and
//      O_i += sum_{j<=i} Aqk_ij Vn_j, earlier tiles' Vn loaded once per tile, the tile's own held;
//   3. S = exp(G_C) S + (k ⊙ exp(G_C - G))^T Vn, sixteen rows at a time.
// With BROADCAST (CPU adapters, whose loads of one address in every lane cost as much as eight), lane j of each
// subgroup loads what the tile's j-th token needs and subgroupBroadcast hands it to every lane.
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
    let hv = params.n_v_heads;
    let kh = key_head(h);
    let base = h * DK * COLS + c;
    let chunks = (step.n_tokens + CH - 1u) / CH;
    for (var ci = 0u; ci < chunks; ci++) {
        let t0 = ci * CH;
        let n = min(CH, step.n_tokens - t0);
        let last = t0 + n - 1u;
        let square = (ci * hv + h) * CH * CH;
        for (var tb = 0u; tb < n; tb += TT) {
            var ks = array<Col, TT>();
            var qs = array<Col, TT>();
#if BROADCAST
            let mine = t0 + tb + lane;
            let live = lane < TT && tb + lane < n;
            var q_scale = 0.0;
            var k_scale = 0.0;
            if (live) {
                q_scale = exp(g_head(mine, h));
                k_scale = info[(mine * hv + h) * 4u + 3u] * q_scale;
            }
#else
            var q_scale = array<f32, TT>();
            var k_scale = array<f32, TT>();
#unroll j TT
            if (tb + {{j}} < n) {
                q_scale[{{j}}] = exp(g_head(t0 + tb + {{j}}, h));
                k_scale[{{j}}] = info[((t0 + tb + {{j}}) * hv + h) * 4u + 3u] * q_scale[{{j}}];
            }
#endunroll
#endif
            for (var d0 = 0u; d0 < DK; d0 += 4u) {
                let s = state_rows(base, d0);
#if BROADCAST
                var my_k = vec4<f32>(0.0);
                var my_q = vec4<f32>(0.0);
                if (live) {
                    my_k = decayed_quad(k_index(mine, kh, d0), d0, k_scale, g_channels(mine, h, d0));
                    my_q = decayed_quad(q_index(mine, kh, d0), d0, q_scale, g_channels(mine, h, d0));
                }
#endif
#unroll j TT
                {
#if BROADCAST
                    let k = subgroupBroadcast(my_k, {{j}});
                    let q = subgroupBroadcast(my_q, {{j}});
#else
                    var k = vec4<f32>(0.0);
                    var q = vec4<f32>(0.0);
                    let t = t0 + tb + {{j}};
                    if (tb + {{j}} < n) {
                        k = decayed_quad(k_index(t, kh, d0), d0, k_scale[{{j}}], g_channels(t, h, d0));
                        q = decayed_quad(q_index(t, kh, d0), d0, q_scale[{{j}}], g_channels(t, h, d0));
                    }
#endif
                    ks[{{j}}] += s[0] * k.x + s[1] * k.y + s[2] * k.z + s[3] * k.w;
                    qs[{{j}}] += s[0] * q.x + s[1] * q.y + s[2] * q.z + s[3] * q.w;
                }
#endunroll
            }
#unroll j TT
            if (tb + {{j}} < n) {
                let t = t0 + tb + {{j}};
                let row = t * hv + h;
                u_buf[row * COLS + c] = info[row * 4u + 1u] * (input_col(v_index(t, h, c * VW)) - ks[{{j}}]);
                out[row * COLS + c] = qs[{{j}}] * info[row * 4u + 2u];
            }
#endunroll
        }
        substitute(square, t0, n, h, hv, c);
        let g_end = g_head(last, h);
        for (var d0 = 0u; d0 < DK; d0 += 16u) {
            var add = array<Col, 16>();
            for (var tb = 0u; tb < n; tb += TT) {
#if BROADCAST
                let mine = t0 + tb + lane;
                var my_k = array<vec4<f32>, 4>();
                if (lane < TT && tb + lane < n) {
                    let scale = info[(mine * hv + h) * 4u + 3u] * exp(g_end - g_head(mine, h));
#unroll p 4
                    if (d0 + 4u * {{p}} < DK) {
                        let d = d0 + 4u * {{p}};
                        let span = g_channels(last, h, d) - g_channels(mine, h, d);
                        my_k[{{p}}] = decayed_quad(k_index(mine, kh, d), d, scale, span);
                    }
#endunroll
                }
#endif
#unroll j TT
                if (tb + {{j}} < n) {
                    let t = t0 + tb + {{j}};
                    let v = u_buf[(t * hv + h) * COLS + c];
#if !BROADCAST
                    let scale = info[(t * hv + h) * 4u + 3u] * exp(g_end - g_head(t, h));
#endif
#unroll p 4
                    {
#if BROADCAST
                        let k = subgroupBroadcast(my_k[{{p}}], {{j}});
#else
                        var k = vec4<f32>(0.0);
                        let d = d0 + 4u * {{p}};
                        if (d < DK) {
                            let span = g_channels(last, h, d) - g_channels(t, h, d);
                            k = decayed_quad(k_index(t, kh, d), d, scale, span);
                        }
#endif
                        add[4u * {{p}}] += k.x * v;
                        add[4u * {{p}} + 1u] += k.y * v;
                        add[4u * {{p}} + 2u] += k.z * v;
                        add[4u * {{p}} + 3u] += k.w * v;
                    }
#endunroll
                }
#endunroll
            }
#unroll p 4
            if (d0 + 4u * {{p}} < DK) {
                let decay = exp(g_channels(last, h, d0 + 4u * {{p}}) + g_end);
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
#else
@group(0) @binding(3) var<storage, read> ab: array<f32>;

// Gate input i of token t.
fn ab_at(t: u32, i: u32) -> f32 {
    return ab[t * params.ab_stride + params.ab_offset + i];
}
@group(0) @binding(4) var<storage, read> gate_params: array<f32>;

fn softplus(x: f32) -> f32 {
    if (x > 20.0) {
        return x;
    }
    return log(1.0 + exp(x));
}

// (g, beta) of token t, value head h (g is 0 with PER_CHANNEL: see channel_decay).
fn gates(t: u32, h: u32) -> vec2<f32> {
    let hv = params.n_v_heads;
    let b = ab_at(t, h);
    var g = 0.0;
#if !PER_CHANNEL
    g = -exp(gate_params[h]) * softplus(ab_at(t, hv + h) + gate_params[hv + h]);
#endif
    return vec2<f32>(g, {{BETA_SCALE}} / (1.0 + exp(-b)));
}

// Log decay of token t, value head h, key channel d: per channel with PER_CHANNEL, else the head's.
fn channel_decay(t: u32, h: u32, d: u32) -> f32 {
#if PER_CHANNEL
    let hv = params.n_v_heads;
    let a = ab_at(t, hv + h * DK + d);
    return -exp(gate_params[h]) * softplus(a + gate_params[hv + h * DK + d]);
#else
    return gates(t, h).x;
#endif
}

#if RECURRENT
#include "linear/columns.wgsl"
@group(0) @binding(5) var<storage, read_write> state: array<Col>;
@group(0) @binding(6) var<storage, read_write> out: array<Col>;
#if OUT_NORM
@group(0) @binding(7) var<storage, read> norm_w: array<Col>;
#if GATE
#include "common/activations.wgsl"
@group(0) @binding(8) var<storage, read> z: array<Col>;

fn gated(z: Col) -> Col {
#if VEC
    return vec4<f32>({{GATE_ACT}}(z.x), {{GATE_ACT}}(z.y), {{GATE_ACT}}(z.z), {{GATE_ACT}}(z.w));
#else
    return {{GATE_ACT}}(z);
#endif
}
#endif

// The head's squared outputs per column block, summed by a tree over the next power of two (COLS_POW2).
var<workgroup> squares: array<f32, COLS>;

// o through the output norm: every invocation of the head calls it with its own column block.
fn normed(o: Col, t: u32, h: u32, c: u32) -> Col {
    workgroupBarrier();
    squares[c] = squared(o);
    workgroupBarrier();
    for (var s = {{COLS_POW2}}u / 2u; s > 0u; s >>= 1u) {
        if (c < s && c + s < COLS) {
            squares[c] += squares[c + s];
        }
        workgroupBarrier();
    }
    var y = o * inverseSqrt(squares[0] / f32(DV) + {{NORM_EPS}}) * (norm_w[c] + {{NORM_OFFSET}});
#if GATE
    y *= gated(z[(t * params.n_v_heads + h) * COLS + c]);
#endif
    return y;
}
#endif

// The decay factors of key channels d0..d0 + 3: `head` (the head's exp(g)) unless the decay is per channel.
#if PER_CHANNEL
var<workgroup> decays: array<vec4<f32>, (DK + 3u) / 4u>;
#endif
fn decay_quad(d0: u32, head: f32) -> vec4<f32> {
#if PER_CHANNEL
    return decays[d0 / 4u];
#else
    return vec4<f32>(head);
#endif
}

// Each token streams the invocation's block twice: first for S^T k and |k|, then to update it, giving o and |q|
// on the way. The second pass finds the block in cache.
@compute @workgroup_size(COLS)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) c: u32) {
    let h = wid.x;
    let kh = key_head(h);
    let base = h * DK * COLS + c;
    for (var t = 0u; t < step.n_tokens; t++) {
        let gb = gates(t, h);
        let head_decay = exp(gb.x);
#if PER_CHANNEL
        workgroupBarrier();
        for (var d = c; d < DK; d += COLS) {
            decays[d / 4u][d % 4u] = exp(channel_decay(t, h, d));
        }
        workgroupBarrier();
#endif
        let row = t * params.width + kh * DK;
        let k_row = row + params.n_k_heads * DK;
        var kv = Col(0.0);
        var kk = 0.0;
        for (var d0 = 0u; d0 < DK; d0 += 4u) {
            let k = key_quad(k_row + d0, d0);
            kk += dot(k, k);
            let kg = k * decay_quad(d0, head_decay);
#unroll j 4
            if (d0 + {{j}} < DK) {
                kv += state[base + (d0 + {{j}}) * COLS] * kg[{{j}}];
            }
#endunroll
        }
        let rk = inverseSqrt(kk + 1e-6);
        let delta = gb.y * (input_col(v_index(t, h, c * VW)) - kv * rk);
        var o = Col(0.0);
        var qq = 0.0;
        for (var d0 = 0u; d0 < DK; d0 += 4u) {
            let k = key_quad(k_row + d0, d0) * rk;
            let q = key_quad(row + d0, d0);
            qq += dot(q, q);
            let g = decay_quad(d0, head_decay);
#unroll j 4
            if (d0 + {{j}} < DK) {
                let i = base + (d0 + {{j}}) * COLS;
                let s = state[i] * g[{{j}}] + k[{{j}}] * delta;
                state[i] = s;
                o += s * q[{{j}}];
            }
#endunroll
        }
        out[(t * params.n_v_heads + h) * COLS + c] = o * (inverseSqrt(qq + 1e-6) * inverseSqrt(f32(DK)));
    }
#if OUT_NORM
    // After the recurrence, so that no state is held across the norm's barriers (CPU adapters save it at each).
    for (var t = 0u; t < step.n_tokens; t++) {
        let i = (t * params.n_v_heads + h) * COLS + c;
        out[i] = normed(out[i], t, h, c);
    }
#endif
}
#endif

#if CHUNK_PREP
@group(0) @binding(5) var<storage, read_write> squares: array<f32>;
@group(0) @binding(6) var<storage, read_write> info: array<f32>;
#if PER_CHANNEL
@group(0) @binding(7) var<storage, read_write> g_buf: array<f32>;
#endif

var<workgroup> g_cum: array<f32, CH>;
var<workgroup> beta_s: array<f32, CH>;
var<workgroup> rk_s: array<f32, CH>;

// Channels d0..d0 + 3's factors of Γ_ij = exp(G_i - G_j) within the chunk at t0 (1 for per-head decay, applied
// outside).
fn gamma_quad(t0: u32, i: u32, j: u32, h: u32, d0: u32) -> vec4<f32> {
#if PER_CHANNEL
    return exp(g_quad(t0 + i, h, d0) - g_quad(t0 + j, h, d0));
#else
    return vec4<f32>(1.0);
#endif
}

// exp(G_j) of channels d0..d0 + 3 within the chunk at t0.
fn decay_in_chunk(t0: u32, j: u32, h: u32, d0: u32) -> vec4<f32> {
#if PER_CHANNEL
    return exp(g_quad(t0 + j, h, d0));
#else
    return vec4<f32>(exp(g_cum[j]));
#endif
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) i: u32,
#if BROADCAST
        @builtin(subgroup_invocation_id) lane: u32,
#endif
) {
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
        rk_s[i] = inv_norm(k_index(t0 + i, kh, 0u), false);
        rq = inv_norm(q_index(t0 + i, kh, 0u), true);
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
#if PER_CHANNEL
    for (var d = i; d < DK; d += 64u) {
        var acc = 0.0;
        for (var j = 0u; j < n; j++) {
            acc += channel_decay(t0 + j, h, d);
            g_buf[((t0 + j) * hv + h) * DK + d] = acc;
        }
    }
    storageBarrier();
#endif
    workgroupBarrier();
    if (live) {
        let ii = ((t0 + i) * hv + h) * 4u;
        info[ii] = gi;
        info[ii + 1u] = beta_s[i];
        info[ii + 2u] = rq;
        info[ii + 3u] = rk_s[i];
    }
    // Row i of the chunk's square: Aqk_ij on and below the diagonal, L_ij above it (at [j][i]); columns j in tiles
    // of TT, each key quad of row i loaded once per tile. With BROADCAST lane j of each subgroup loads what the
    // tile's j-th column needs, the subgroup running the tiles its last row needs (rows before mask the rest).
    let square = (c * hv + h) * CH * CH;
    let ti = t0 + min(i, n - 1u);
    let top = last_row(i);
    for (var jb = 0u; jb <= top && jb < n; jb += TT) {
        var kk = array<f32, TT>();
        var qk = array<f32, TT>();
#if BROADCAST
        let mine = t0 + min(jb + lane, n - 1u);
#endif
        for (var d0 = 0u; d0 < DK; d0 += 4u) {
            let ki = key_quad(k_index(ti, kh, d0), d0);
            let qi = key_quad(q_index(ti, kh, d0), d0);
#if PER_CHANNEL
            let gq = g_quad(ti, h, d0);
#endif
#if BROADCAST
            let my_k = key_quad(k_index(mine, kh, d0), d0);
#if PER_CHANNEL
            let my_g = g_quad(mine, h, d0);
#endif
#endif
#unroll j TT
            {
#if BROADCAST
                var kj = subgroupBroadcast(my_k, {{j}});
#if PER_CHANNEL
                kj *= exp(select(vec4<f32>(0.0), gq - subgroupBroadcast(my_g, {{j}}), jb + {{j}} <= i));
#endif
#else
                let tj = t0 + min(jb + {{j}}, n - 1u);
                var kj = key_quad(k_index(tj, kh, d0), d0);
#if PER_CHANNEL
                kj *= exp(select(vec4<f32>(0.0), gq - g_quad(tj, h, d0), jb + {{j}} <= i));
#endif
#endif
                kk[{{j}}] += dot(ki, kj);
                qk[{{j}}] += dot(qi, kj);
            }
#endunroll
        }
#if BROADCAST
        let my_rk = rk_s[mine - t0];
        let my_gc = g_cum[mine - t0];
#endif
#unroll j TT
        {
            let j = jb + {{j}};
#if BROADCAST
            var gam = subgroupBroadcast(my_rk, {{j}});
            let gj = subgroupBroadcast(my_gc, {{j}});
#else
            var gam = rk_s[j];
            let gj = g_cum[j];
#endif
#if !PER_CHANNEL
            gam *= exp(select(0.0, gi - gj, j <= i));
#endif
            if (live && j <= i) {
                squares[square + i * CH + j] = qk[{{j}}] * rq * gam;
                if (j < i) {
                    squares[square + j * CH + i] = -kk[{{j}}] * beta_s[i] * rk_s[i] * gam;
                }
            }
        }
#endunroll
    }
}
#endif
#endif
