// Multi-head latent attention's weight absorption around a latent-space attention call. kv_b rows per head are
// [k_nope (NOPE rows) | v (VD rows)], each RANK wide (the weight W, decoded by common/weights.wgsl).
//   ABSORB_Q   q [T, H, NOPE + ROPE] -> q_abs [T, H, RANK + ROPE]: q_abs[.., c < RANK] = sum_i q_nope[i] W[h, i, c]
//              (the key up-projection moved onto the query), then the rope part copied.
//   EXPAND_OUT ctx [T, H, RANK] -> out [T, H, VD]: out[.., j] = sum_c ctx[c] W[h, NOPE + j, c].
// One invocation per output value.
#include "common/grid.wgsl"
#include "common/step.wgsl"

struct Params {
    n_heads: u32,
    nope: u32,
    rope: u32,
    v_dim: u32,
    rank: u32,
}
@group(0) @binding(1) var<uniform> params: Params;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
#include "common/weights.wgsl"

// First weight row of head h.
fn head_row(h: u32) -> u32 {
    return h * (params.nope + params.v_dim);
}

@compute @workgroup_size({{WG}})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let idx = flat_group(wid, nwg) * {{WG}}u + lid;
#if ABSORB_Q
    let width = params.rank + params.rope;
    if (idx >= step.n_tokens * params.n_heads * width) {
        return;
    }
    let c = idx % width;
    let th = idx / width;  // token * n_heads + head
    let h = th % params.n_heads;
    let q0 = th * (params.nope + params.rope);
    if (c >= params.rank) {
        y[idx] = x[q0 + params.nope + c - params.rank];
        return;
    }
    var acc = 0.0;
    for (var i = 0u; i < params.nope; i++) {
        acc += x[q0 + i] * w_at((head_row(h) + i) * params.rank + c);
    }
    y[idx] = acc;
#endif
#if EXPAND_OUT
    if (idx >= step.n_tokens * params.n_heads * params.v_dim) {
        return;
    }
    let j = idx % params.v_dim;
    let th = idx / params.v_dim;
    let h = th % params.n_heads;
    let row = (head_row(h) + params.nope + j) * params.rank;
    var acc = 0.0;
    for (var c = 0u; c < params.rank; c++) {
        acc += x[th * params.rank + c] * w_at(row + c);
    }
    y[idx] = acc;
#endif
}
