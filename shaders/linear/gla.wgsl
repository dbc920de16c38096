// Gated Linear Attention: S_t = diag(exp(g_t)) S_{t-1} + k_t v_t^T, o_t = S_t^T q_t Q_SCALE, with the per-channel
// log decay g = logsigmoid(gk) / NORMALIZER computed here from the raw gate logits gk [T, H*DK], or, with
// LOG_DECAY, read from gk as is (HGRN2 computes its own), or, with HEAD_DECAY, one constant gk[h] per head
// (Lightning attention). With VALUE_DECAY the decay runs along the value channels instead: S_t = S_{t-1} diag(exp(g_t))
// + k_t v_t^T with g [T, H*DV] (the first pass of Gated Slot Attention).
// Layouts: qkv [T, C] = [q (H*DK) | k (H*DK) | v (H*DV)]; state [H, DK, DV]; out [T, H*DV].
// Variants:
//   RECURRENT   one workgroup per head, one invocation per block of state columns (`linear/columns.wgsl`); tokens
//               in order (decode), each streaming its block once.
//   CHUNK_PREP  one workgroup per (chunk of 64, head): cumulative decay G [T, H, DK] and the intra-chunk
//               matrix A[i][j] = sum_d q_id k_jd exp(G_id - G_jd) (j <= i, q scaled).
//   CHUNK_STATE one workgroup per head, one invocation per block of state columns, chunks in order:
//               O = (q ⊙ exp(G)) S + A V, S = exp(G_C) ⊙ S + (k ⊙ exp(G_C - G))^T V.
#include "linear/chunks.wgsl"

struct Params {
    n_heads: u32,
    width: u32,
    state_offset: u32,  // first float of this layer's state in the state buffer
}
@group(0) @binding(1) var<uniform> params: Params;
#include "linear/qkv.wgsl"

const DK: u32 = {{DK}}u;
const DV: u32 = {{DV}}u;
#if VALUE_DECAY
const DG: u32 = DV;
#else
const DG: u32 = DK;
#endif

fn key_heads() -> u32 {
    return params.n_heads;
}

#if !RECURRENT
fn decay_heads() -> u32 {
    return params.n_heads;
}
#include "linear/running.wgsl"
#endif

#if CHUNK_STATE
#include "linear/columns.wgsl"
@group(0) @binding(3) var<storage, read_write> state: array<Col>;
@group(0) @binding(4) var<storage, read_write> out: array<Col>;
@group(0) @binding(6) var<storage, read> a_buf: array<f32>;

// Cumulative log decays G of token t, head h, over key channels d0..d0 + 3 (0 past DK, and with VALUE_DECAY).
fn g_keys(t: u32, h: u32, d0: u32) -> vec4<f32> {
#if VALUE_DECAY
    return vec4<f32>(0.0);
#else
    return g_quad(t, h, d0);
#endif
}

#if VALUE_DECAY
// Cumulative log decays G of token t, head h, over the value channels of column block c.
fn g_values(t: u32, h: u32, c: u32) -> Col {
#if VEC
    return g_quad(t, h, c * VW);
#else
    let i = g_index(t, h, c);
#if QUAD_INPUT
    return g_buf[i / 4u][i % 4u];
#else
    return g_buf[i];
#endif
#endif
}
#endif

// Each invocation owns a block of state columns (`linear/columns.wgsl`), streamed from memory. Per chunk, token
// by token: O_i = (q_i ⊙ exp(G_i)) S + sum_{j<=i} A_ij V_j; then four rows at a time
// S = exp(G_C) ⊙ S + (k ⊙ exp(G_C - G))^T V (the decays along the value channels with VALUE_DECAY).
@compute @workgroup_size(COLS)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) c: u32) {
    let h = wid.x;
    let hn = params.n_heads;
    let base = params.state_offset / VW + h * DK * COLS + c;
    let chunks = (step.n_tokens + CH - 1u) / CH;
    for (var ci = 0u; ci < chunks; ci++) {
        let t0 = ci * CH;
        let n = min(CH, step.n_tokens - t0);
        let last = t0 + n - 1u;
#if HEAD_DECAY
        // The head's one log decay per token: G_i = (i + 1) slope within the chunk.
        let slope = g_quad(t0, h, 0u).x;
#endif
        for (var i = 0u; i < n; i++) {
            let t = t0 + i;
            var qs = Col(0.0);
            for (var d0 = 0u; d0 < DK; d0 += 4u) {
                var q = key_quad(q_index(t, h, d0), d0) * {{Q_SCALE}};
#if !HEAD_DECAY
#if !VALUE_DECAY
                q *= exp(g_keys(t, h, d0));
#endif
#endif
#unroll j 4
                if (d0 + {{j}} < DK) {
                    qs += state[base + (d0 + {{j}}) * COLS] * q[{{j}}];
                }
#endunroll
            }
#if HEAD_DECAY
            qs *= exp(f32(i + 1u) * slope);
#endif
#if VALUE_DECAY
            let g_i = g_values(t, h, c);
            qs *= exp(g_i);
#endif
            let arow = ((ci * hn + h) * CH + i) * CH;
            for (var j = 0u; j <= i; j++) {
                var v = input_col(v_index(t0 + j, h, c * VW));
#if VALUE_DECAY
                v *= exp(g_i - g_values(t0 + j, h, c));
#endif
                qs += a_buf[arow + j] * v;
            }
            out[(t * hn + h) * COLS + c] = qs;
        }
#if VALUE_DECAY
        let g_last = g_values(last, h, c);
#endif
        for (var d0 = 0u; d0 < DK; d0 += 4u) {
#if !HEAD_DECAY
            let gk_last = g_keys(last, h, d0);
#endif
            var add = array<Col, 4>(Col(0.0), Col(0.0), Col(0.0), Col(0.0));
            for (var i = 0u; i < n; i++) {
                var k = key_quad(k_index(t0 + i, h, d0), d0);
#if HEAD_DECAY
                k *= exp(f32(n - 1u - i) * slope);
#else
#if !VALUE_DECAY
                k *= exp(gk_last - g_keys(t0 + i, h, d0));
#endif
#endif
                var v = input_col(v_index(t0 + i, h, c * VW));
#if VALUE_DECAY
                v *= exp(g_last - g_values(t0 + i, h, c));
#endif
#unroll j 4
                add[{{j}}] += k[{{j}}] * v;
#endunroll
            }
#if HEAD_DECAY
            let decay = vec4<f32>(exp(f32(n) * slope));
#else
            let decay = exp(gk_last);
#endif
#unroll j 4
            if (d0 + {{j}} < DK) {
                let si = base + (d0 + {{j}}) * COLS;
#if VALUE_DECAY
                state[si] = state[si] * exp(g_last) + add[{{j}}];
#else
                state[si] = state[si] * decay[{{j}}] + add[{{j}}];
#endif
            }
#endunroll
        }
    }
}
#else
@group(0) @binding(3) var<storage, read> gk: array<f32>;

// logsigmoid(x) / NORMALIZER for gate logit (t, h, d).
fn log_decay(t: u32, h: u32, d: u32) -> f32 {
#if HEAD_DECAY
    return gk[h];
#else
    let x = gk[(t * params.n_heads + h) * DG + d];
#if LOG_DECAY
    return x;
#else
    return (min(x, 0.0) - log(1.0 + exp(-abs(x)))) / {{NORMALIZER}};
#endif
#endif
}

#if RECURRENT
#include "linear/columns.wgsl"
@group(0) @binding(4) var<storage, read_write> state: array<Col>;
@group(0) @binding(5) var<storage, read_write> out: array<Col>;

// exp of the log decays of token t along head h's value channels in block c (VALUE_DECAY).
fn value_decays(t: u32, h: u32, c: u32) -> Col {
    let i = (t * params.n_heads + h) * DV + c * VW;
#if VEC
    return exp(vec4<f32>(gk[i], gk[i + 1u], gk[i + 2u], gk[i + 3u]));
#else
    return exp(gk[i]);
#endif
}

@compute @workgroup_size(COLS)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) c: u32) {
    let h = wid.x;
    let base = params.state_offset / VW + h * DK * COLS + c;
    for (var t = 0u; t < step.n_tokens; t++) {
        let vt = input_col(v_index(t, h, c * VW));
#if VALUE_DECAY
        let decay = value_decays(t, h, c);
#endif
        var o = Col(0.0);
        for (var d0 = 0u; d0 < DK; d0 += 4u) {
            let k = key_quad(k_index(t, h, d0), d0);
            let q = key_quad(q_index(t, h, d0), d0) * {{Q_SCALE}};
#if !VALUE_DECAY
            let decay = exp(vec4<f32>(log_decay(t, h, d0), log_decay(t, h, d0 + 1u), log_decay(t, h, d0 + 2u),
                                      log_decay(t, h, d0 + 3u)));
#endif
#unroll j 4
            if (d0 + {{j}} < DK) {
                let i = base + (d0 + {{j}}) * COLS;
#if VALUE_DECAY
                let s = state[i] * decay + k[{{j}}] * vt;
#else
                let s = state[i] * decay[{{j}}] + k[{{j}}] * vt;
#endif
                state[i] = s;
                o += s * q[{{j}}];
            }
#endunroll
        }
        out[(t * params.n_heads + h) * COLS + c] = o;
    }
}
#endif

#if CHUNK_PREP
@group(0) @binding(4) var<storage, read_write> a_buf: array<f32>;

// Row i of the chunk: first G (four channels per invocation), then A_ij over the key channels four at a time, the
// decay exp(G_i - G_j) per channel, or once per pair for a head's single decay.
@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let hn = params.n_heads;
    let chunk = chunk_of(wid, nwg, hn);
    if (chunk.len == 0u) {
        return;
    }
    let h = chunk.head;
    let t0 = chunk.t0;
    let n = chunk.len;
    for (var d0 = 4u * lid; d0 < DG; d0 += 4u * CH) {
        var acc = vec4<f32>(0.0);
        for (var i = 0u; i < n; i++) {
            let t = t0 + i;
            acc += vec4<f32>(log_decay(t, h, d0), log_decay(t, h, d0 + 1u), log_decay(t, h, d0 + 2u),
                             log_decay(t, h, d0 + 3u));
            store_g(t, h, d0, acc);
        }
    }
    storageBarrier();
    let i = lid;
    if (i < n) {
        let arow = ((chunk.index * hn + h) * CH + i) * CH;
        for (var j = 0u; j <= i; j++) {
            var a = 0.0;
            for (var d0 = 0u; d0 < DK; d0 += 4u) {
                var k = key_quad(k_index(t0 + j, h, d0), d0);
#if !VALUE_DECAY
#if !HEAD_DECAY
                k *= exp(g_quad(t0 + i, h, d0) - g_quad(t0 + j, h, d0));
#endif
#endif
                a += dot(key_quad(q_index(t0 + i, h, d0), d0), k);
            }
#if HEAD_DECAY
            a *= exp(g_quad(t0 + i, h, 0u).x - g_quad(t0 + j, h, 0u).x);
#endif
            a_buf[arow + j] = a * {{Q_SCALE}};
        }
    }
}
#endif
#endif
