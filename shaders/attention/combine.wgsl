// Flash-decoding's second pass: merges the partial softmax sums attention/decode.wgsl's splits left for each
// (token, head). Split s left its max m_s, normaliser l_s and unnormalised sums o_s; with m the largest m_s the
// output is sum_s e^(m_s - m) o_s / sum_s e^(m_s - m) l_s (a split with no keys left m_s = -3e38 and weighs 0).
// One invocation per output channel; OUT_GATE multiplies it by the sigmoid of the gate at binding OUT_GATE.
#include "common/grid.wgsl"
#include "common/step.wgsl"

struct Params {
    n_heads: u32,
    v_dim: u32,
    splits: u32,
    stride: u32,      // scratch floats per (token, head)
    partial_at: u32,  // where the row's partial records start: v_dim + 2 floats per split
}
@group(0) @binding(1) var<uniform> params: Params;
@group(0) @binding(2) var<storage, read> scratch: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
#if OUT_GATE
@group(0) @binding({{OUT_GATE}}) var<storage, read> out_gate: array<f32>;
#endif

@compute @workgroup_size({{WG}})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = flat_group(wid, nwg) * {{WG}}u + lid;
    let group = i / params.v_dim;
    if (group / params.n_heads >= step.n_tokens) {
        return;
    }
    let size = params.v_dim + 2u;
    let base = group * params.stride + params.partial_at;
    var m = -3.0e38;
    for (var s = 0u; s < params.splits; s++) {
        m = max(m, scratch[base + s * size]);
    }
    var l = 0.0;
    var o = 0.0;
    for (var s = 0u; s < params.splits; s++) {
        let at = base + s * size;
        let w = exp(scratch[at] - m);
        l += w * scratch[at + 1u];
        o += w * scratch[at + 2u + i % params.v_dim];
    }
#if OUT_GATE
    out[i] = o / l / (1.0 + exp(-out_gate[i]));
#else
    out[i] = o / l;
#endif
}
