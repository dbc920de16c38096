// HGRN2 gates, in place, turning its projections into GLA inputs for each (token, channel) of the forget width:
// q <- silu(q); g = logsigmoid(f), raised to log(lb + (1 - lb) exp(g)) with LOWER_BOUND; k <- 1 - exp(g); f <- g.
// qkv [T, width] holds q at columns [0, key) and receives k at [key, 2 key); gk [T, key] holds f, then g.
#include "common/grid.wgsl"
#include "common/step.wgsl"

struct Params {
    width: u32,
    key: u32,
}
@group(0) @binding(1) var<uniform> params: Params;
@group(0) @binding(2) var<storage, read_write> qkv: array<f32>;
@group(0) @binding(3) var<storage, read_write> gk: array<f32>;
#if LOWER_BOUND
@group(0) @binding(4) var<storage, read> lower_bound: array<f32>;
#endif

@compute @workgroup_size({{WG}})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let idx = flat_group(wid, nwg) * {{WG}}u + lid;
    let t = idx / params.key;
    let c = idx % params.key;
    if (t >= step.n_tokens) {
        return;
    }
    let q = qkv[t * params.width + c];
    qkv[t * params.width + c] = q / (1.0 + exp(-q));
    let f = gk[idx];
    var g = min(f, 0.0) - log(1.0 + exp(-abs(f)));
#if LOWER_BOUND
    let b = lower_bound[c];
    g = log(b + (1.0 - b) * exp(g));
#endif
    gk[idx] = g;
    qkv[t * params.width + params.key + c] = 1.0 - exp(g);
}
