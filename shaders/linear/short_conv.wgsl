// Short causal depthwise convolution over time, x [T, C] -> y [T, C], weights [C, K] f32; BIAS adds a bias [C]
// (Mamba2), SILU applies SiLU.
// Inputs before the forward's first token come from the conv state [C, K-1] (oldest first), from float
// state_offset of its buffer.
// Variant UPDATE (run after the conv): the state becomes the last K-1 inputs of (old state ++ x).
#include "common/grid.wgsl"
#include "common/step.wgsl"

struct Params {
    channels: u32,
    kernel: u32,
    state_offset: u32,  // first float of this conv's history in `state`
}
@group(0) @binding(1) var<uniform> params: Params;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read_write> state: array<f32>;
#if UPDATE
#else
@group(0) @binding(4) var<storage, read> weight: array<f32>;
@group(0) @binding(5) var<storage, read_write> y: array<f32>;
#if BIAS
@group(0) @binding(6) var<storage, read> bias: array<f32>;
#endif
#endif

// Input at index i of (old state ++ x) for channel c.
fn input_at(i: u32, c: u32) -> f32 {
    let hist = params.kernel - 1u;
    if (i < hist) {
        return state[params.state_offset + c * hist + i];
    }
    return x[(i - hist) * params.channels + c];
}

@compute @workgroup_size({{WG}})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let idx = flat_group(wid, nwg) * {{WG}}u + lid;
    let hist = params.kernel - 1u;
#if UPDATE
    let c = idx;
    if (c >= params.channels) {
        return;
    }
    // Ascending j reads index n_tokens + j > j, which this loop has not overwritten yet.
    for (var j = 0u; j < hist; j++) {
        state[params.state_offset + c * hist + j] = input_at(step.n_tokens + j, c);
    }
#else
    let t = idx / params.channels;
    let c = idx % params.channels;
    if (t >= step.n_tokens) {
        return;
    }
    var acc = 0.0;
#if BIAS
    acc = bias[c];
#endif
    for (var i = 0u; i < params.kernel; i++) {
        acc += weight[c * params.kernel + i] * input_at(t + i, c);
    }
#if SILU
    y[idx] = acc / (1.0 + exp(-acc));
#else
    y[idx] = acc;
#endif
#endif
}
