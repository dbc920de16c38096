// Mamba2 around the GLA kernels (linear/gla.wgsl with per-channel log decays and unscaled queries):
//   PREP  one invocation per (token, head): dt = clamp(softplus(dt_raw + dt_bias), lo, hi), and from the conv output
//         xbc [T, inner + 2 G N] = [x | B | C] writes qkv [T, H N (q = C) | H N (k = B) | H P (v = dt x)] and log
//         decays gk [T, H N] = -exp(A_log) dt (head h reads group h / (H / G)).
//   SKIP  one invocation per (token, channel): y += D_h x (the skip connection).
// params: [A_log | dt_bias | D], each [H].
#include "common/grid.wgsl"
#include "common/step.wgsl"

struct Params {
    n_heads: u32,
    head_dim: u32,
    n_groups: u32,
    state: u32,
    dt_lo: f32,
    dt_hi: f32,
}
@group(0) @binding(1) var<uniform> params: Params;
@group(0) @binding(2) var<storage, read> xbc: array<f32>;
@group(0) @binding(3) var<storage, read> ssm: array<f32>;

fn inner() -> u32 {
    return params.n_heads * params.head_dim;
}

fn xbc_width() -> u32 {
    return inner() + 2u * params.n_groups * params.state;
}

#if PREP
@group(0) @binding(4) var<storage, read> dt_raw: array<f32>;
@group(0) @binding(5) var<storage, read_write> qkv: array<f32>;
@group(0) @binding(6) var<storage, read_write> gk: array<f32>;

fn softplus(x: f32) -> f32 {
    if (x > 20.0) {
        return x;
    }
    return log(1.0 + exp(x));
}

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
    let n = params.state;
    let p = params.head_dim;
    let g = h / (hn / params.n_groups);
    let dt = clamp(softplus(dt_raw[t * hn + h] + ssm[hn + h]), params.dt_lo, params.dt_hi);
    let log_decay = -exp(ssm[h]) * dt;
    let row = t * xbc_width();
    let b0 = row + inner() + g * n;
    let c0 = row + inner() + params.n_groups * n + g * n;
    let out = t * hn * (2u * n + p);
    for (var i = 0u; i < n; i++) {
        qkv[out + h * n + i] = xbc[c0 + i];
        qkv[out + hn * n + h * n + i] = xbc[b0 + i];
        gk[(t * hn + h) * n + i] = log_decay;
    }
    for (var i = 0u; i < p; i++) {
        qkv[out + 2u * hn * n + h * p + i] = dt * xbc[row + h * p + i];
    }
}
#endif

#if SKIP
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

@compute @workgroup_size({{WG}})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let idx = flat_group(wid, nwg) * {{WG}}u + lid;
    if (idx >= step.n_tokens * inner()) {
        return;
    }
    let t = idx / inner();
    let c = idx % inner();
    y[idx] = y[idx] + ssm[2u * params.n_heads + c / params.head_dim] * xbc[t * xbc_width() + c];
}
#endif
