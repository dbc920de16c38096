// Causal softmax attention for a block of queries against the KV cache: one invocation per (token, head),
// online softmax in registers, GQA by head grouping, optional sliding window. Keys outside a query's
// [first, p] are never visited, so fully masked key ranges cost nothing.
// Variants: streaming (default; each invocation reads K/V itself, best on CPU adapters where barriers are slow)
// and KV_TILE (a workgroup is WG consecutive queries of one head; K/V tiles of KV_TILE keys are staged in
// workgroup memory and shared by all of them, best on GPUs).
#include "attention/common.wgsl"

#if KV_TILE
const TK: u32 = {{KV_TILE}}u;
var<workgroup> k_tile: array<f32, TK * D>;
var<workgroup> v_tile: array<f32, TK * DV>;

@compute @workgroup_size({{WG}})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let h = wid.x;
    let t0 = wid.y * {{WG}}u;
    let t = t0 + lid;
    let live = t < step.n_tokens;
    let p = step.pos0 + t;
    let first = first_key(p);
    // Keys of the whole block: from the first query's window start to the last live query.
    let block_first = first_key(step.pos0 + t0);
    let block_last = step.pos0 + min(t0 + {{WG}}u, step.n_tokens) - 1u;
    let kvh = kv_head(h);
    let qi = (t * params.n_heads + h) * D;
    var qv: array<f32, D>;
    var acc: array<f32, DV>;
    if (live) {
        for (var d = 0u; d < D; d++) {
            qv[d] = q[qi + d] * params.scale;
        }
    }
    var st = online_start();
    for (var j0 = block_first; j0 <= block_last; j0 += TK) {
        let n = min(TK, block_last + 1u - j0);
        for (var e = lid; e < n * D; e += {{WG}}u) {
            k_tile[e] = k_cache[kv_base(j0 + e / D, kvh) + e % D];
        }
        for (var e = lid; e < n * DV; e += {{WG}}u) {
            v_tile[e] = v_cache[kv_base(j0 + e / DV, kvh) + e % DV];
        }
        workgroupBarrier();
        if (live) {
            for (var j = max(j0, first); j < min(j0 + n, p + 1u); j++) {
                let kb = (j - j0) * D;
                var s = 0.0;
                for (var d = 0u; d < D; d++) {
                    s += qv[d] * k_tile[kb + d];
                }
                let f = online_step(&st, s);
                let vb = (j - j0) * DV;
                for (var d = 0u; d < DV; d++) {
                    acc[d] = acc[d] * f.x + f.y * v_tile[vb + d];
                }
            }
        }
        workgroupBarrier();
    }
    if (live) {
        let oi = (t * params.n_heads + h) * DV;
        for (var d = 0u; d < DV; d++) {
            out[oi + d] = acc[d] / st.l;
        }
    }
}
#else
@compute @workgroup_size({{WG}})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let idx = flat_group(wid, nwg) * {{WG}}u + lid;
    let t = idx / params.n_heads;
    if (t >= step.n_tokens) {
        return;
    }
    let p = step.pos0 + t;
    let kvh = kv_head(idx % params.n_heads);
    var qv: array<f32, D>;
    var acc: array<f32, DV>;
    for (var d = 0u; d < D; d++) {
        qv[d] = q[idx * D + d] * params.scale;
    }
    var st = online_start();
    for (var j = first_key(p); j <= p; j++) {
        let kb = kv_base(j, kvh);
        var s = 0.0;
        for (var d = 0u; d < D; d++) {
            s += qv[d] * k_cache[kb + d];
        }
        let f = online_step(&st, s);
        for (var d = 0u; d < DV; d++) {
            acc[d] = acc[d] * f.x + f.y * v_cache[kb + d];
        }
    }
    for (var d = 0u; d < DV; d++) {
        out[idx * DV + d] = acc[d] / st.l;
    }
}
#endif
