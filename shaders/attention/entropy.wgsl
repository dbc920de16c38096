// Attention entropy for the router of `route:` policies: for the last token of the forward, per query head, the
// entropy of its causal softmax over every cached key, normalised by ln(keys) (0: one key takes all the weight,
// 1: spread evenly). One invocation per head; an online pass keeps the running max m, Σe^(s-m) and Σe^(s-m)·s, so
// H = m + ln Σe^(s-m) - Σe^(s-m)·s / Σe^(s-m). Keys of a whole-context cache: position j in row j.
#include "common/grid.wgsl"
#include "common/step.wgsl"

struct Params {
    n_heads: u32,
    n_kv_heads: u32,
    scale: f32,
    offset: u32,
}
@group(0) @binding(1) var<uniform> params: Params;
@group(0) @binding(2) var<storage, read> q: array<f32>;
@group(0) @binding(3) var<storage, read> k_cache: array<f32>;
@group(0) @binding(4) var<storage, read_write> entropies: array<f32>;

const D: u32 = {{HEAD_DIM}}u;

@compute @workgroup_size({{WG}})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let h = flat_group(wid, nwg) * {{WG}}u + lid;
    if (h >= params.n_heads || step.n_tokens == 0u) {
        return;
    }
    let t = step.n_tokens - 1u;
    let keys = step.pos0 + t + 1u;
    let kvh = h / (params.n_heads / params.n_kv_heads);
    let qi = (t * params.n_heads + h) * D;
    var m = -3.0e38;
    var l = 0.0;
    var a = 0.0;
    for (var j = 0u; j < keys; j++) {
        let kb = (j * params.n_kv_heads + kvh) * D;
        var s = 0.0;
        for (var d = 0u; d < D; d++) {
            s += q[qi + d] * k_cache[kb + d];
        }
        s *= params.scale;
        let next = max(m, s);
        let fade = exp(m - next);
        let e = exp(s - next);
        l = l * fade + e;
        a = a * fade + e * s;
        m = next;
    }
    var h_norm = 0.0;
    if (keys > 1u) {
        h_norm = (m + log(l) - a / l) / log(f32(keys));
    }
    entropies[params.offset + h] = h_norm;
}
