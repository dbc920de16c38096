// Gated Slot Attention glue around its two GLA passes (linear/gla.wgsl).
//   GATES    one invocation per (token, head): from the projections raw [T, H K (q) | H K (k) | H V (v)] and the
//            slot gate logits gk [T, H M], writes the log gates g = logsigmoid(f) / NORMALIZER into gk, pass one's
//            inputs first [T, H K (swish q) | H K (swish k) | H M (s = 1 - exp g)] and the key and value parts of
//            pass two's inputs second [T, H M (filled by SOFTMAX) | H M (s) | H V (silu v)].
//   SOFTMAX  one invocation per (token, head): softmax over the M slot scores of pass one into pass two's queries.
#include "common/grid.wgsl"
#include "common/step.wgsl"

struct Params {
    n_heads: u32,
    dk: u32,
    dv: u32,
    slots: u32,
}
@group(0) @binding(1) var<uniform> params: Params;

fn first_width() -> u32 {
    return params.n_heads * (2u * params.dk + params.slots);
}

fn second_width() -> u32 {
    return params.n_heads * (2u * params.slots + params.dv);
}

fn silu(x: f32) -> f32 {
    return x / (1.0 + exp(-x));
}

#if GATES
@group(0) @binding(2) var<storage, read> raw: array<f32>;
@group(0) @binding(3) var<storage, read_write> gk: array<f32>;
@group(0) @binding(4) var<storage, read_write> first: array<f32>;
@group(0) @binding(5) var<storage, read_write> second: array<f32>;

@compute @workgroup_size({{WG}})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let idx = flat_group(wid, nwg) * {{WG}}u + lid;
    let hn = params.n_heads;
    if (idx >= step.n_tokens * hn) {
        return;
    }
    let t = idx / hn;
    let h = idx % hn;
    let k = params.dk;
    let v = params.dv;
    let m = params.slots;
    let raw0 = t * hn * (2u * k + v);
    let f0 = t * first_width();
    let s0 = t * second_width();
    for (var i = 0u; i < k; i++) {
        first[f0 + h * k + i] = silu(raw[raw0 + h * k + i]);
        first[f0 + hn * k + h * k + i] = silu(raw[raw0 + hn * k + h * k + i]);
    }
    for (var j = 0u; j < m; j++) {
        let x = gk[idx * m + j];
        let g = (min(x, 0.0) - log(1.0 + exp(-abs(x)))) / {{NORMALIZER}};
        gk[idx * m + j] = g;
        let s = 1.0 - exp(g);
        first[f0 + 2u * hn * k + h * m + j] = s;
        second[s0 + hn * m + h * m + j] = s;
    }
    for (var c = 0u; c < v; c++) {
        second[s0 + 2u * hn * m + h * v + c] = silu(raw[raw0 + 2u * hn * k + h * v + c]);
    }
}
#endif

#if SOFTMAX
@group(0) @binding(2) var<storage, read> scores: array<f32>;
@group(0) @binding(3) var<storage, read_write> second: array<f32>;

@compute @workgroup_size({{WG}})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let idx = flat_group(wid, nwg) * {{WG}}u + lid;
    let hn = params.n_heads;
    if (idx >= step.n_tokens * hn) {
        return;
    }
    let m = params.slots;
    var top = -3.0e38;
    for (var j = 0u; j < m; j++) {
        top = max(top, scores[idx * m + j]);
    }
    var total = 0.0;
    for (var j = 0u; j < m; j++) {
        total += exp(scores[idx * m + j] - top);
    }
    let q0 = (idx / hn) * second_width() + (idx % hn) * m;
    for (var j = 0u; j < m; j++) {
        second[q0 + j] = exp(scores[idx * m + j] - top) / total;
    }
}
#endif
