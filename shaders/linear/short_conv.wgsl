// Short causal depthwise convolution over time, x [T, C] -> y [T, C], weights [C, K] f32; BIAS adds a bias [C]
// (Mamba2), SILU applies SiLU.
// Inputs before the forward's first token come from the conv state [C, K-1] (oldest first), from float
// state_offset of its buffer.
// Variant UPDATE (run after the conv): the state becomes the last K-1 inputs of (old state ++ x).
// Variant SEQUENTIAL: one invocation per channel computes the forward's tokens in order, then (ADVANCE) updates
// the state itself, all in one dispatch (decode's single token).
// Variant QUAD_BLOCK (channels a multiple of 4, a KERNEL known when compiled): each invocation computes 4 channels
// of TT consecutive tokens, loading x and y a 16-byte quad at a time, each input once for the KERNEL outputs that
// read it and each weight once for the TT tokens (CPU adapters pay per load, whatever its width).
#include "common/grid.wgsl"
#include "common/step.wgsl"

struct Params {
    channels: u32,
    kernel: u32,
    state_offset: u32,  // first float of this conv's history in `state`
}
@group(0) @binding(1) var<uniform> params: Params;
#if QUAD_BLOCK
alias Channels = vec4<f32>;
#else
alias Channels = f32;
#endif
@group(0) @binding(2) var<storage, read> x: array<Channels>;
@group(0) @binding(3) var<storage, read_write> state: array<f32>;
#if UPDATE
#else
@group(0) @binding(4) var<storage, read> weight: array<f32>;
@group(0) @binding(5) var<storage, read_write> y: array<Channels>;
#if BIAS
@group(0) @binding(6) var<storage, read> bias: array<Channels>;
#endif
#endif
#if QUAD_BLOCK
const TT: u32 = {{TT}}u;
const KW: u32 = {{KERNEL}}u;
const HIST: u32 = KW - 1u;

// Channels c .. c + 3 of input i of (old state ++ x), i clamped to the forward's last input.
fn input_quad(i: u32, c: u32) -> vec4<f32> {
    if (i < HIST) {
        let s = params.state_offset + c * HIST + i;
        return vec4<f32>(state[s], state[s + HIST], state[s + 2u * HIST], state[s + 3u * HIST]);
    }
    return x[(min(i - HIST, step.n_tokens - 1u) * params.channels + c) / 4u];
}

@compute @workgroup_size({{WG}})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let c = (wid.x * {{WG}}u + lid) * 4u;
    let t0 = wid.y * TT;
    if (c >= params.channels || t0 >= step.n_tokens) {
        return;
    }
    var w: array<vec4<f32>, KW>;
#unroll i KERNEL
    w[{{i}}] = vec4<f32>(weight[c * KW + {{i}}], weight[(c + 1u) * KW + {{i}}], weight[(c + 2u) * KW + {{i}}],
        weight[(c + 3u) * KW + {{i}}]);
#endunroll
    // Inputs t0 .. t0 + TT + KW - 2 of (old state ++ x): token t0 + t reads KW of them from t on.
    var window: array<vec4<f32>, TT + HIST>;
#unroll j WINDOW
    window[{{j}}] = input_quad(t0 + {{j}}, c);
#endunroll
#unroll t TT
    if (t0 + {{t}} < step.n_tokens) {
        var acc = vec4<f32>();
#if BIAS
        acc = bias[c / 4u];
#endif
#unroll i KERNEL
        acc += w[{{i}}] * window[{{t}} + {{i}}];
#endunroll
#if SILU
        acc = acc / (1.0 + exp(-acc));
#endif
        y[((t0 + {{t}}) * params.channels + c) / 4u] = acc;
    }
#endunroll
}
#else

// Input at index i of (old state ++ x) for channel c.
fn input_at(i: u32, c: u32) -> f32 {
    let hist = params.kernel - 1u;
    if (i < hist) {
        return state[params.state_offset + c * hist + i];
    }
    return x[(i - hist) * params.channels + c];
}

#if !UPDATE
fn conv_at(t: u32, c: u32) -> f32 {
    var acc = 0.0;
#if BIAS
    acc = bias[c];
#endif
    for (var i = 0u; i < params.kernel; i++) {
        acc += weight[c * params.kernel + i] * input_at(t + i, c);
    }
#if SILU
    return acc / (1.0 + exp(-acc));
#else
    return acc;
#endif
}
#endif

// Channel c's history becomes its last K-1 inputs (after every read of the old history).
fn advance_state(c: u32) {
    // Ascending j reads index n_tokens + j > j, which this loop has not overwritten yet.
    for (var j = 0u; j < params.kernel - 1u; j++) {
        state[params.state_offset + c * (params.kernel - 1u) + j] = input_at(step.n_tokens + j, c);
    }
}

@compute @workgroup_size({{WG}})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let idx = flat_group(wid, nwg) * {{WG}}u + lid;
#if UPDATE
    if (idx < params.channels) {
        advance_state(idx);
    }
#else
#if SEQUENTIAL
    if (idx >= params.channels) {
        return;
    }
    for (var t = 0u; t < step.n_tokens; t++) {
        y[t * params.channels + idx] = conv_at(t, idx);
    }
#if ADVANCE
    advance_state(idx);
#endif
#else
    let t = idx / params.channels;
    if (t < step.n_tokens) {
        y[idx] = conv_at(t, idx % params.channels);
    }
#endif
#endif
}
#endif
