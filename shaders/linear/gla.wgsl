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
//   Both chunk passes work in tiles of TT tokens; with BROADCAST lane j of each subgroup loads what the tile's
//   j-th token needs and subgroupBroadcast hands it to every lane (CPU adapters load one address in every lane at
//   the cost of eight). KEY_DECAY: the decay runs along the key channels (neither HEAD_DECAY nor VALUE_DECAY).
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

// Tokens per tile of the chunk passes: each state row (each key of a row of A) loaded meets a tile.
const TT: u32 = {{TT}}u;
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

// The per-token log decay of HEAD_DECAY (G_i = (i + 1) slope within a chunk), read at the chunk's first token;
// 0 otherwise.
fn head_slope(t0: u32, h: u32) -> f32 {
#if HEAD_DECAY
    return g_quad(t0, h, 0u).x;
#else
    return 0.0;
#endif
}

// Token t's query channels d0..d0 + 3, scaled, times exp(G_t) with KEY_DECAY.
fn decayed_query(t: u32, h: u32, d0: u32) -> vec4<f32> {
    var q = key_quad(q_index(t, h, d0), d0) * {{Q_SCALE}};
#if KEY_DECAY
    q *= exp(g_keys(t, h, d0));
#endif
    return q;
}

// Token t's key channels d0..d0 + 3 decayed to the chunk's last token: exp(G_last - G_t) with KEY_DECAY,
// exp((last - t) slope) with HEAD_DECAY (VALUE_DECAY decays the values instead).
fn decayed_key(t: u32, last: u32, h: u32, d0: u32, slope: f32) -> vec4<f32> {
    var k = key_quad(k_index(t, h, d0), d0);
#if HEAD_DECAY
    k *= exp(f32(last - t) * slope);
#endif
#if KEY_DECAY
    k *= exp(g_keys(last, h, d0) - g_keys(t, h, d0));
#endif
    return k;
}

// Each invocation owns a block of state columns (`linear/columns.wgsl`), streamed from memory. Per chunk, with
// the chunk's starting state S, tokens TT at a time:
//   1. O_i = (q_i ⊙ exp(G_i)) S, every state row loaded once per tile;
//   2. O_i += sum_{j<=i} A_ij V_j, each V_j loaded once per tile of rows i;
//   3. S = exp(G_C) ⊙ S + (k ⊙ exp(G_C - G))^T V, sixteen rows at a time
// (the decays along the value channels with VALUE_DECAY).
@compute @workgroup_size(COLS)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) c: u32,
#if BROADCAST
        @builtin(subgroup_invocation_id) lane: u32,
#endif
) {
    let h = wid.x;
    let hn = params.n_heads;
    let base = params.state_offset / VW + h * DK * COLS + c;
    let chunks = (step.n_tokens + CH - 1u) / CH;
    for (var ci = 0u; ci < chunks; ci++) {
        let t0 = ci * CH;
        let n = min(CH, step.n_tokens - t0);
        let last = t0 + n - 1u;
        let slope = head_slope(t0, h);
        let square = (ci * hn + h) * CH * CH;
        for (var tb = 0u; tb < n; tb += TT) {
            var qs = array<Col, TT>();
#if BROADCAST
            let mine = t0 + min(tb + lane, n - 1u);
#endif
            for (var d0 = 0u; d0 < DK; d0 += 4u) {
                let s = state_rows(base, d0);
#if BROADCAST
                let my_q = decayed_query(mine, h, d0);
#endif
#unroll j TT
                {
#if BROADCAST
                    let q = subgroupBroadcast(my_q, {{j}});
#else
                    let q = decayed_query(t0 + min(tb + {{j}}, n - 1u), h, d0);
#endif
                    qs[{{j}}] += s[0] * q.x + s[1] * q.y + s[2] * q.z + s[3] * q.w;
                }
#endunroll
            }
#unroll j TT
            if (tb + {{j}} < n) {
                let t = t0 + tb + {{j}};
                var o = qs[{{j}}];
#if HEAD_DECAY
                o *= exp(f32(tb + {{j}} + 1u) * slope);
#endif
#if VALUE_DECAY
                o *= exp(g_values(t, h, c));
#endif
                out[(t * hn + h) * COLS + c] = o;
            }
#endunroll
        }
        for (var ib = 0u; ib < n; ib += TT) {
            var o = array<Col, TT>();
#if VALUE_DECAY
            var g_rows = array<Col, TT>();
#endif
#unroll i TT
            if (ib + {{i}} < n) {
                o[{{i}}] = out[((t0 + ib + {{i}}) * hn + h) * COLS + c];
#if VALUE_DECAY
                g_rows[{{i}}] = g_values(t0 + ib + {{i}}, h, c);
#endif
            }
#endunroll
#if BROADCAST
            // This lane's row of the tile, whose A it loads (0 right of the diagonal).
            let my_row = min(ib + lane, n - 1u);
#endif
            for (var j = 0u; j < min(ib + TT, n); j++) {
                let v = input_col(v_index(t0 + j, h, c * VW));
#if VALUE_DECAY
                let g_j = g_values(t0 + j, h, c);
#endif
#if BROADCAST
                var my_a = 0.0;
                if (j <= my_row) {
                    my_a = a_buf[square + my_row * CH + j];
                }
#endif
#unroll i TT
                if (j <= ib + {{i}}) {
#if BROADCAST
                    let a = subgroupBroadcast(my_a, {{i}});
#else
                    let a = a_buf[square + (ib + {{i}}) * CH + j];
#endif
#if VALUE_DECAY
                    o[{{i}}] += a * v * exp(g_rows[{{i}}] - g_j);
#else
                    o[{{i}}] += a * v;
#endif
                }
#endunroll
            }
#unroll i TT
            if (ib + {{i}} < n) {
                out[((t0 + ib + {{i}}) * hn + h) * COLS + c] = o[{{i}}];
            }
#endunroll
        }
#if VALUE_DECAY
        let g_last = g_values(last, h, c);
#endif
        for (var d0 = 0u; d0 < DK; d0 += 16u) {
            var add = array<Col, 16>();
            for (var tb = 0u; tb < n; tb += TT) {
#if BROADCAST
                let mine = t0 + min(tb + lane, n - 1u);
                var my_k = array<vec4<f32>, 4>();
#unroll p 4
                if (d0 + 4u * {{p}} < DK) {
                    my_k[{{p}}] = decayed_key(mine, last, h, d0 + 4u * {{p}}, slope);
                }
#endunroll
#endif
#unroll j TT
                if (tb + {{j}} < n) {
                    let t = t0 + tb + {{j}};
                    var v = input_col(v_index(t, h, c * VW));
#if VALUE_DECAY
                    v *= exp(g_last - g_values(t, h, c));
#endif
#unroll p 4
                    {
#if BROADCAST
                        let k = subgroupBroadcast(my_k[{{p}}], {{j}});
#else
                        var k = vec4<f32>(0.0);
                        if (d0 + 4u * {{p}} < DK) {
                            k = decayed_key(t, last, h, d0 + 4u * {{p}}, slope);
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
#if HEAD_DECAY
                let decay = vec4<f32>(exp(f32(n) * slope));
#endif
#if KEY_DECAY
                let decay = exp(g_keys(last, h, d0 + 4u * {{p}}));
#endif
#if VALUE_DECAY
                let decay = exp(g_last);
#endif
#unroll r 4
                if (d0 + 4u * {{p}} + {{r}} < DK) {
                    let si = base + (d0 + 4u * {{p}} + {{r}}) * COLS;
#if VALUE_DECAY
                    state[si] = state[si] * decay + add[4u * {{p}} + {{r}}];
#else
                    state[si] = state[si] * decay[{{r}}] + add[4u * {{p}} + {{r}}];
#endif
                }
#endunroll
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
// decay exp(G_i - G_j) per channel, or once per pair for a head's single decay; columns j in tiles of TT, each
// query quad of row i loaded once per tile. With BROADCAST the subgroup runs the tiles its last row needs (rows
// before it mask the rest).
@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32,
#if BROADCAST
        @builtin(subgroup_invocation_id) lane: u32,
#endif
) {
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
    let ti = t0 + min(i, n - 1u);
    let arow = ((chunk.index * hn + h) * CH + i) * CH;
    let top = last_row(i);
    for (var jb = 0u; jb <= top && jb < n; jb += TT) {
        var a = array<f32, TT>();
#if BROADCAST
        let mine = t0 + min(jb + lane, n - 1u);
#endif
        for (var d0 = 0u; d0 < DK; d0 += 4u) {
            let q = key_quad(q_index(ti, h, d0), d0);
#if KEY_DECAY
            let gi = g_quad(ti, h, d0);
#endif
#if BROADCAST
            let my_k = key_quad(k_index(mine, h, d0), d0);
#if KEY_DECAY
            let my_g = g_quad(mine, h, d0);
#endif
#endif
#unroll j TT
            {
#if BROADCAST
                var k = subgroupBroadcast(my_k, {{j}});
#if KEY_DECAY
                let gj = subgroupBroadcast(my_g, {{j}});
#endif
#else
                let tj = t0 + min(jb + {{j}}, n - 1u);
                var k = key_quad(k_index(tj, h, d0), d0);
#if KEY_DECAY
                let gj = g_quad(tj, h, d0);
#endif
#endif
#if KEY_DECAY
                k *= exp(select(vec4<f32>(0.0), gi - gj, jb + {{j}} <= i));
#endif
                a[{{j}}] += dot(q, k);
            }
#endunroll
        }
#if HEAD_DECAY
        let gi = g_quad(ti, h, 0u).x;
#if BROADCAST
        let my_g = g_quad(mine, h, 0u).x;
#endif
#endif
#unroll j TT
        {
            let j = jb + {{j}};
#if HEAD_DECAY
#if BROADCAST
            let gj = subgroupBroadcast(my_g, {{j}});
#else
            let gj = g_quad(t0 + min(j, n - 1u), h, 0u).x;
#endif
            a[{{j}}] *= exp(select(0.0, gi - gj, j <= i));
#endif
            if (i < n && j <= i) {
                a_buf[arow + j] = a[{{j}}] * {{Q_SCALE}};
            }
        }
#endunroll
    }
}
#endif
#endif
