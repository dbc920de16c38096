// Mixture-of-Head attention (reference::moh). Default variant: one invocation per token turns its router logits
// [routed | shared (when more than one) | 2 head-type] into head weights [heads] (shared heads first): routed
// softmax kept on the top K (rank by gate, the earlier head on ties), renormalised, times K; shared softmax times
// S (ones for one); groups scaled by 2 softmax(type). SCALE variant: one invocation per output channel multiplies
// each head's attention output by its weight.
#include "common/grid.wgsl"
#include "common/step.wgsl"

struct Params {
    heads: u32,
    n_shared: u32,
    top_k: u32,
    head_dim: u32,
}
@group(0) @binding(1) var<uniform> params: Params;
@group(0) @binding(2) var<storage, read> src: array<f32>;
@group(0) @binding(3) var<storage, read_write> dst: array<f32>;
#if SCALE
@group(0) @binding(4) var<storage, read> weights: array<f32>;

@compute @workgroup_size({{WG}})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let idx = flat_group(wid, nwg) * {{WG}}u + lid;
    let width = params.heads * params.head_dim;
    let t = idx / width;
    if (t >= step.n_tokens) {
        return;
    }
    dst[idx] = src[idx] * weights[t * params.heads + (idx % width) / params.head_dim];
}
#else
const MAX_HEADS: u32 = {{MAX_HEADS}}u;

@compute @workgroup_size({{WG}})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let t = flat_group(wid, nwg) * {{WG}}u + lid;
    if (t >= step.n_tokens) {
        return;
    }
    let routed = params.heads - params.n_shared;
    let shared_logits = select(0u, params.n_shared, params.n_shared > 1u);
    let row = t * (routed + shared_logits + 2u);
    var gate: array<f32, MAX_HEADS>;
    var m = -3.0e38;
    for (var i = 0u; i < routed; i++) {
        m = max(m, src[row + i]);
    }
    var total = 0.0;
    for (var i = 0u; i < routed; i++) {
        gate[i] = exp(src[row + i] - m);
        total += gate[i];
    }
    var kept_total = 0.0;
    for (var i = 0u; i < routed; i++) {
        gate[i] /= total;
    }
    for (var i = 0u; i < routed; i++) {
        var rank = 0u;
        for (var j = 0u; j < routed; j++) {
            if (gate[j] > gate[i] || (gate[j] == gate[i] && j < i)) {
                rank++;
            }
        }
        if (rank < params.top_k) {
            kept_total += gate[i];
        } else {
            gate[i] = -1.0;
        }
    }
    let type_row = row + routed + shared_logits;
    let tm = max(src[type_row], src[type_row + 1u]);
    let e0 = exp(src[type_row] - tm);
    let e1 = exp(src[type_row + 1u] - tm);
    let a_shared = 2.0 * e0 / (e0 + e1);
    let a_routed = 2.0 * e1 / (e0 + e1);
    let out = t * params.heads;
    if (params.n_shared > 1u) {
        var sm = -3.0e38;
        for (var i = 0u; i < params.n_shared; i++) {
            sm = max(sm, src[row + routed + i]);
        }
        var st = 0.0;
        for (var i = 0u; i < params.n_shared; i++) {
            st += exp(src[row + routed + i] - sm);
        }
        for (var i = 0u; i < params.n_shared; i++) {
            dst[out + i] = a_shared * exp(src[row + routed + i] - sm) / st * f32(params.n_shared);
        }
    } else if (params.n_shared == 1u) {
        dst[out] = a_shared;
    }
    for (var i = 0u; i < routed; i++) {
        var w = 0.0;
        if (gate[i] >= 0.0) {
            w = gate[i] / kept_total * f32(params.top_k);
        }
        dst[out + params.n_shared + i] = a_routed * w;
    }
}
#endif
