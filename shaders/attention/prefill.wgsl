// Causal softmax attention for a block of queries against the KV cache, one invocation per (token, head),
// online softmax in registers (flash-attention recurrence), GQA by head grouping, optional sliding window.
// Keys outside [first, p] are never visited, so fully masked key ranges cost nothing.
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
