// Causal softmax attention for a block of queries against the KV cache: one invocation per (token, head),
// online softmax in registers (the flash-attention recurrence), GQA by head grouping, optional sliding window.
// Keys outside a query's [first, p] are never visited, so fully masked key ranges cost nothing.
// Variants: streaming (default; each invocation reads K/V itself, best on CPU adapters where barriers are slow)
// and KV_TILE (a workgroup is WG consecutive queries of one head; K/V tiles of KV_TILE keys are staged in
// workgroup memory and shared by all of them, best on GPUs).
#include "common/grid.wgsl"
#include "common/step.wgsl"

struct Params {
    n_heads: u32,
    n_kv_heads: u32,
    window: u32,   // 0 = unlimited
    scale: f32,
}
@group(0) @binding(1) var<uniform> params: Params;
@group(0) @binding(2) var<storage, read> q: array<f32>;
@group(0) @binding(3) var<storage, read> k_cache: array<f32>;
@group(0) @binding(4) var<storage, read> v_cache: array<f32>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;

const D: u32 = {{HEAD_DIM}}u;

#if KV_TILE
const TK: u32 = {{KV_TILE}}u;
var<workgroup> k_tile: array<f32, TK * D>;
var<workgroup> v_tile: array<f32, TK * D>;

@compute @workgroup_size({{WG}})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let h = wid.x;
    let t0 = wid.y * {{WG}}u;
    let t = t0 + lid;
    let live = t < step.n_tokens;
    let p = step.pos0 + t;
    var first = 0u;
    if (params.window > 0u && p + 1u > params.window) {
        first = p + 1u - params.window;
    }
    // Key range of the whole block: from the first query's window start to the last live query.
    let t_last = min(t0 + {{WG}}u, step.n_tokens) - 1u;
    var block_first = 0u;
    if (params.window > 0u && step.pos0 + t0 + 1u > params.window) {
        block_first = step.pos0 + t0 + 1u - params.window;
    }
    let block_last = step.pos0 + t_last;
    let kvh = h / (params.n_heads / params.n_kv_heads);
    let kv_stride = params.n_kv_heads * D;
    let qi = (t * params.n_heads + h) * D;
    var qv: array<f32, D>;
    var acc: array<f32, D>;
    if (live) {
        for (var d = 0u; d < D; d++) {
            qv[d] = q[qi + d] * params.scale;
        }
    }
    var m = -3.0e38;
    var l = 0.0;
    for (var j0 = block_first; j0 <= block_last; j0 += TK) {
        let n = min(TK, block_last + 1u - j0);
        for (var e = lid; e < n * D; e += {{WG}}u) {
            let src = (j0 + e / D) * kv_stride + kvh * D + e % D;
            k_tile[e] = k_cache[src];
            v_tile[e] = v_cache[src];
        }
        workgroupBarrier();
        if (live) {
            let lo = max(j0, first);
            let hi = min(j0 + n, p + 1u);
            for (var j = lo; j < hi; j++) {
                let kb = (j - j0) * D;
                var s = 0.0;
                for (var d = 0u; d < D; d++) {
                    s += qv[d] * k_tile[kb + d];
                }
                let m_new = max(m, s);
                let corr = exp(m - m_new);
                let e = exp(s - m_new);
                l = l * corr + e;
                for (var d = 0u; d < D; d++) {
                    acc[d] = acc[d] * corr + e * v_tile[kb + d];
                }
                m = m_new;
            }
        }
        workgroupBarrier();
    }
    if (live) {
        for (var d = 0u; d < D; d++) {
            out[qi + d] = acc[d] / l;
        }
    }
}
#else

@compute @workgroup_size({{WG}})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let idx = flat_group(wid, nwg) * {{WG}}u + lid;
    let t = idx / params.n_heads;
    let h = idx % params.n_heads;
    if (t >= step.n_tokens) {
        return;
    }
    let p = step.pos0 + t;
    var first = 0u;
    if (params.window > 0u && p + 1u > params.window) {
        first = p + 1u - params.window;
    }
    let kvh = h / (params.n_heads / params.n_kv_heads);
    let kv_stride = params.n_kv_heads * D;
    var qv: array<f32, D>;
    var acc: array<f32, D>;
    for (var d = 0u; d < D; d++) {
        qv[d] = q[idx * D + d] * params.scale;
    }
    var m = -3.0e38;
    var l = 0.0;
    for (var j = first; j <= p; j++) {
        let kb = j * kv_stride + kvh * D;
        var s = 0.0;
        for (var d = 0u; d < D; d++) {
            s += qv[d] * k_cache[kb + d];
        }
        let m_new = max(m, s);
        let corr = exp(m - m_new);
        let e = exp(s - m_new);
        l = l * corr + e;
        for (var d = 0u; d < D; d++) {
            acc[d] = acc[d] * corr + e * v_cache[kb + d];
        }
        m = m_new;
    }
    for (var d = 0u; d < D; d++) {
        out[idx * D + d] = acc[d] / l;
    }
}
#endif
